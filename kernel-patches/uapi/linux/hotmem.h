/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * HotMem: hot-plugged memory partitions bound to process lifetimes.
 *
 * This header is the whole contract between the kernel and userspace.
 * Every ioctl argument starts with its own size, so a struct may grow at
 * its end without a new ioctl number: the kernel accepts an older (shorter)
 * struct and a newer (longer) one whose extra bytes are zero, and writes
 * back at most the size userspace passed.
 */
#ifndef _UAPI_LINUX_HOTMEM_H
#define _UAPI_LINUX_HOTMEM_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define HOTMEM_ABI_VERSION	2

/* Partition states, as reported by HOTMEM_IOC_PARTITION_INFO and sysfs. */
enum hotmem_partition_state {
	HOTMEM_PARTITION_EMPTY = 0,	/* no memory block onlined into it */
	HOTMEM_PARTITION_FREE = 1,	/* populated, no mm bound */
	HOTMEM_PARTITION_BOUND = 2,	/* at least one mm bound */
	HOTMEM_PARTITION_RECLAIMING = 3, /* its blocks are being offlined */
};

/* Per-partition behaviour when it runs out of free pages. */
#define HOTMEM_PARTITION_SPILL		(1U << 0) /* fall back to ordinary zones */
#define HOTMEM_PARTITION_AUTO_RECLAIM	(1U << 1) /* reclaim once released */

/* HOTMEM_IOC_VERSION */
struct hotmem_version {
	__u32 size;		/* in: sizeof(struct hotmem_version) */
	__u32 abi_version;	/* out: HOTMEM_ABI_VERSION */
	__u32 max_partitions;	/* out: partitions per node */
	__u32 nr_partitions;	/* out: partitions in use (EMPTY excluded) */
};

/* HOTMEM_IOC_PARTITION_INFO */
struct hotmem_partition_info {
	__u32 size;		/* in */
	__u32 partition;	/* in: partition id */
	__u32 state;		/* out: enum hotmem_partition_state */
	__u32 flags;		/* out: HOTMEM_PARTITION_* */
	__u32 nr_blocks;	/* out: memory blocks onlined into it */
	__u32 node;		/* out: NUMA node */
	__u64 present_bytes;	/* out */
	__u64 free_bytes;	/* out */
	__u64 bound_mms;	/* out */
	__u64 spilled_pages;	/* out: pages served by ordinary zones */
	__u64 oom_kills;	/* out: processes killed on exhaustion */
};

/* HOTMEM_IOC_BIND flags */
#define HOTMEM_BIND_WAIT	(1U << 0) /* sleep until the partition is populated */

/* HOTMEM_IOC_BIND: bind the mm of the process behind @pidfd */
struct hotmem_bind {
	__u32 size;		/* in */
	__s32 pidfd;		/* in: pidfd_open() of the target */
	__u32 partition;	/* in */
	__u32 flags;		/* in: HOTMEM_BIND_* */
	__u64 timeout_ns;	/* in: with HOTMEM_BIND_WAIT; 0 waits forever */
};

/* HOTMEM_IOC_SET_FLAGS: change HOTMEM_PARTITION_* of a partition */
struct hotmem_partition_flags {
	__u32 size;		/* in */
	__u32 partition;	/* in */
	__u32 flags;		/* in: new HOTMEM_PARTITION_* set */
	__u32 __reserved;	/* must be 0 */
};

/* HOTMEM_IOC_RECLAIM: offline every block of a FREE partition */
struct hotmem_reclaim {
	__u32 size;		/* in */
	__u32 partition;	/* in */
	__u32 flags;		/* in: must be 0 */
	__u32 nr_blocks;	/* out: blocks offlined */
	__u64 bytes;		/* out: bytes offlined */
	__u64 duration_ns;	/* out: time spent offlining */
	__u64 pages_migrated;	/* out: always 0 on success */
	__u64 busy_pfn;		/* out: on -EBUSY, first pfn still in use */
};

/* Records returned by read() on /dev/hotmem; poll() reports POLLIN. */
enum hotmem_event_type {
	HOTMEM_EVENT_RELEASED = 1,	/* last mm unbound; partition FREE */
	HOTMEM_EVENT_RECLAIMED = 2,	/* blocks offlined; data = bytes */
	HOTMEM_EVENT_OOM = 3,		/* exhausted; data = pid killed */
	HOTMEM_EVENT_OVERFLOW = 4,	/* data = events dropped */
};

struct hotmem_event {
	__u32 size;		/* sizeof(struct hotmem_event) */
	__u32 type;		/* enum hotmem_event_type */
	__u32 partition;
	__u32 __reserved;
	__u64 seq;		/* increments by one per event queued */
	__u64 timestamp_ns;	/* CLOCK_BOOTTIME */
	__u64 data;
};

#define HOTMEM_IOC_MAGIC	0xB9

/*
 * The size encoded in each number is that of the struct as first defined.
 * The kernel goes by the size field of the struct instead, so a grown
 * struct keeps its ioctl number.
 */
#define HOTMEM_IOC_VERSION		_IOWR(HOTMEM_IOC_MAGIC, 0, struct hotmem_version)
#define HOTMEM_IOC_PARTITION_INFO	_IOWR(HOTMEM_IOC_MAGIC, 1, struct hotmem_partition_info)
#define HOTMEM_IOC_BIND			_IOW(HOTMEM_IOC_MAGIC, 2, struct hotmem_bind)
#define HOTMEM_IOC_SET_FLAGS		_IOW(HOTMEM_IOC_MAGIC, 3, struct hotmem_partition_flags)
#define HOTMEM_IOC_RECLAIM		_IOWR(HOTMEM_IOC_MAGIC, 4, struct hotmem_reclaim)

#endif /* _UAPI_LINUX_HOTMEM_H */
