// SPDX-License-Identifier: GPL-2.0
/*
 * notax: what HotMem costs a process that does not use it, measured in the guest.
 *
 * usage: notax fault 4k|thp MIB REPS
 *        notax fork HOLD_MIB FORKS REPS
 *        notax plug BLOCKS
 *
 * fault: maps MIB MiB of private anonymous memory (2 MiB aligned), madvise()s it
 * MADV_NOHUGEPAGE (4k) or MADV_HUGEPAGE (thp), writes one byte per 4 KiB page, so that every
 * page (or every 2 MiB huge page) is faulted in, and unmaps it. Prints, per repetition,
 *   fault 4k|thp BYTES NS THP_FAULTS
 * with NS the time of the writes and THP_FAULTS how far /proc/vmstat's thp_fault_alloc moved
 * meanwhile (the huge pages the kernel actually gave; 0 expected for 4k).
 * fork: writes every page of HOLD_MIB MiB of private anonymous memory, then, per repetition,
 * forks FORKS children one after the other, each _exit()ing at once, the parent reaping each
 * before the next fork; prints
 *   fork HOLD_BYTES FORKS NS
 * Each runs one more repetition first and prints nothing for it: under TCG the first run of a
 * code path is translated first, and a warm-up keeps that out of the figures.
 * plug: listens for the kernel's uevents, prints "listening" once it does, then onlines movable
 * each memory block the kernel adds (a plug the host asks of virtio-mem meanwhile), as the
 * test bed's stock onlining does, until BLOCKS are online; prints
 *   plug BLOCKS NS
 * with NS the guest's time from the first block's "add" uevent to the last block online: the
 * guest's own work of the plug (adding all blocks but the first, onlining all), without the
 * host's part, which a guest clock counting instructions (QEMU's -icount) leaves out too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define HUGE (2UL << 20)

static unsigned long parse_positive(const char *what, const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v == 0) {
		fprintf(stderr, "notax: %s must be a positive integer, got '%s'\n", what, s);
		exit(2);
	}
	return v;
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A /proc/vmstat counter, or -1 when the kernel has none by that name. */
static long long vmstat(const char *name)
{
	char key[64];
	long long value;
	long long found = -1;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return -1;
	while (fscanf(f, "%63s %lld", key, &value) == 2)
		if (!strcmp(key, name)) {
			found = value;
			break;
		}
	fclose(f);
	return found;
}

/* MIB MiB, aligned to 2 MiB so that a huge page can back every 2 MiB of it. */
static char *map_aligned(unsigned long len)
{
	char *raw = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	char *mem;

	if (raw == MAP_FAILED) {
		fprintf(stderr, "notax: mmap %lu bytes: %s\n", len, strerror(errno));
		exit(1);
	}
	mem = (char *)(((unsigned long)raw + HUGE - 1) & ~(HUGE - 1));
	if (mem > raw)
		munmap(raw, mem - raw);
	munmap(mem + len, raw + HUGE - mem);
	return mem;
}

static void touch(char *mem, unsigned long len)
{
	for (unsigned long off = 0; off < len; off += PAGE)
		mem[off] = (char)(off / PAGE) | 1;
}

static int fault(const char *kind, unsigned long mib, unsigned long reps)
{
	int huge = !strcmp(kind, "thp");
	unsigned long len = mib << 20;

	if (!huge && strcmp(kind, "4k")) {
		fprintf(stderr, "notax: fault takes 4k or thp, not '%s'\n", kind);
		return 2;
	}
	for (unsigned long rep = 0; rep <= reps; rep++) {
		char *mem = map_aligned(len);
		long long thp, start, ns;

		if (madvise(mem, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)) {
			fprintf(stderr, "notax: madvise: %s\n", strerror(errno));
			return 1;
		}
		thp = vmstat("thp_fault_alloc");
		start = now_ns();
		touch(mem, len);
		ns = now_ns() - start;
		thp = vmstat("thp_fault_alloc") - thp;
		munmap(mem, len);
		if (rep > 0)
			printf("fault %s %lu %lld %lld\n", kind, len, ns, thp);
	}
	return 0;
}

static int forks(unsigned long hold_mib, unsigned long count, unsigned long reps)
{
	unsigned long len = hold_mib << 20;
	char *mem = map_aligned(len);

	touch(mem, len);
	for (unsigned long rep = 0; rep <= reps; rep++) {
		long long start = now_ns();

		for (unsigned long i = 0; i < count; i++) {
			int status;
			pid_t pid = fork();

			if (pid < 0) {
				fprintf(stderr, "notax: fork: %s\n", strerror(errno));
				return 1;
			}
			if (pid == 0)
				_exit(0);
			if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
			    WEXITSTATUS(status)) {
				fprintf(stderr, "notax: child %d did not exit 0\n", (int)pid);
				return 1;
			}
		}
		if (rep > 0)
			printf("fork %lu %lu %lld\n", len, count, now_ns() - start);
	}
	munmap(mem, len);
	return 0;
}

/* Onlines a memory block movable; 0 or an errno. */
static int online_movable(const char *block)
{
	static const char state[] = "online_movable";
	char path[128];
	int fd, err = 0;

	snprintf(path, sizeof(path), "/sys%s/state", block);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return errno;
	if (write(fd, state, sizeof(state) - 1) != sizeof(state) - 1)
		err = errno;
	close(fd);
	return err;
}

static int plug(unsigned long blocks)
{
	static const char prefix[] = "add@/devices/system/memory/memory";
	struct sockaddr_nl addr = { .nl_family = AF_NETLINK, .nl_groups = 1 };
	/* A uevent is its "ACTION@DEVPATH" header and its variables, NUL-separated, under 8 KiB. */
	static char msg[8192];
	unsigned long online = 0;
	long long first = 0;
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);

	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		fprintf(stderr, "notax: uevent socket: %s\n", strerror(errno));
		return 1;
	}
	printf("listening\n");
	fflush(stdout);
	while (online < blocks) {
		ssize_t len = recv(fd, msg, sizeof(msg) - 1, 0);
		int err;

		if (len < 0) {
			fprintf(stderr, "notax: uevent recv: %s\n", strerror(errno));
			return 1;
		}
		msg[len] = '\0';
		if (strncmp(msg, prefix, sizeof(prefix) - 1))
			continue;
		if (!first)
			first = now_ns();
		err = online_movable(strchr(msg, '@') + 1);
		if (err) {
			fprintf(stderr, "notax: online %s: %s\n", msg, strerror(err));
			return 1;
		}
		online++;
	}
	printf("plug %lu %lld\n", blocks, now_ns() - first);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "fault"))
		return fault(argv[2], parse_positive("MIB", argv[3]),
			     parse_positive("REPS", argv[4]));
	if (argc == 5 && !strcmp(argv[1], "fork"))
		return forks(parse_positive("HOLD_MIB", argv[2]),
			     parse_positive("FORKS", argv[3]), parse_positive("REPS", argv[4]));
	if (argc == 3 && !strcmp(argv[1], "plug"))
		return plug(parse_positive("BLOCKS", argv[2]));
	fprintf(stderr, "usage: notax fault 4k|thp MIB REPS\n"
			"       notax fork HOLD_MIB FORKS REPS\n"
			"       notax plug BLOCKS\n");
	return 2;
}
