// SPDX-License-Identifier: GPL-2.0
/*
 * movepages: ask the kernel to move another process's pages to one node, and say where they
 * are before and after.
 *
 * usage: movepages PID ADDR MIB NODE
 *
 * Calls move_pages(2) on PID's MIB MiB at ADDR (hex, as in /proc/PID/maps) with every page not
 * already on NODE, then prints one JSON line:
 *   {"pages":N,"notMoved":R,"before":{...},"after":{...},"blocks":{...}}
 * "before" and "after" count the pages by the node move_pages(2) reports for each (a negative
 * key is the errno it gave instead), "notMoved" is its return value, and "blocks" counts the
 * pages after the move by the memory block their PFN is in (from /proc/PID/pagemap; needs
 * CAP_SYS_ADMIN to see PFNs), "absent" for a page not present.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MPOL_MF_MOVE (1 << 1)
#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)
/* Room for every node or errno key and every memory block of a test-bed guest */
#define MAX_KEYS 512

struct histogram {
	long key[MAX_KEYS];
	unsigned long count[MAX_KEYS];
	int n;
};

static void die(const char *what)
{
	fprintf(stderr, "movepages: %s: %s\n", what, strerror(errno));
	exit(1);
}

static unsigned long parse(const char *what, const char *s, int base)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, base);
	if (errno || *end || !*s) {
		fprintf(stderr, "movepages: bad %s '%s'\n", what, s);
		exit(2);
	}
	return v;
}

static void count(struct histogram *h, long key)
{
	int i;

	for (i = 0; i < h->n && h->key[i] != key; i++)
		;
	if (i == h->n) {
		if (h->n == MAX_KEYS) {
			fprintf(stderr, "movepages: more than %d distinct keys\n", MAX_KEYS);
			exit(1);
		}
		h->key[h->n] = key;
		h->count[h->n++] = 0;
	}
	h->count[i]++;
}

static void print(const char *name, const struct histogram *h, const char *absent)
{
	printf("\"%s\":{", name);
	for (int i = 0; i < h->n; i++) {
		if (h->key[i] < 0 && absent)
			printf("%s\"%s\":%lu", i ? "," : "", absent, h->count[i]);
		else
			printf("%s\"%ld\":%lu", i ? "," : "", h->key[i], h->count[i]);
	}
	printf("}");
}

/* Where each page is now: its node, or the negative errno move_pages(2) gives for it */
static void locate(pid_t pid, unsigned long nr, void **pages, int *status, struct histogram *h)
{
	if (syscall(SYS_move_pages, pid, nr, pages, NULL, status, 0))
		die("move_pages (query)");
	for (unsigned long i = 0; i < nr; i++)
		count(h, status[i]);
}

int main(int argc, char **argv)
{
	static struct histogram before, after, blocks;
	unsigned long addr, nr, todo = 0, block_size, page = (unsigned long)sysconf(_SC_PAGESIZE);
	void **pages, **moving;
	int *status, *nodes, node, fd;
	char path[64], buf[32];
	uint64_t *entries;
	long not_moved;
	pid_t pid;

	if (argc != 5) {
		fprintf(stderr, "usage: movepages PID ADDR MIB NODE\n");
		return 2;
	}
	pid = (pid_t)parse("PID", argv[1], 10);
	addr = parse("ADDR", argv[2], 16);
	nr = (parse("MIB", argv[3], 10) << 20) / page;
	node = (int)parse("NODE", argv[4], 10);

	fd = open("/sys/devices/system/memory/block_size_bytes", O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0)
		die("block_size_bytes");
	close(fd);
	buf[strcspn(buf, "\n")] = 0;
	block_size = parse("block_size_bytes", buf, 16);

	pages = calloc(nr, sizeof(*pages));
	moving = calloc(nr, sizeof(*moving));
	status = calloc(nr, sizeof(*status));
	nodes = calloc(nr, sizeof(*nodes));
	entries = calloc(nr, sizeof(*entries));
	if (!pages || !moving || !status || !nodes || !entries)
		die("calloc");
	for (unsigned long i = 0; i < nr; i++)
		pages[i] = (void *)(addr + i * page);

	locate(pid, nr, pages, status, &before);
	for (unsigned long i = 0; i < nr; i++) {
		if (status[i] >= 0 && status[i] != node) {
			moving[todo] = pages[i];
			nodes[todo++] = node;
		}
	}
	/* One call: migrate_pages() tries every folio and returns how many it could not move */
	not_moved = todo ? syscall(SYS_move_pages, pid, todo, moving, nodes, status, MPOL_MF_MOVE) : 0;
	if (not_moved < 0)
		die("move_pages");
	locate(pid, nr, pages, status, &after);

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	fd = open(path, O_RDONLY);
	if (fd < 0 || pread(fd, entries, nr * sizeof(*entries), (off_t)(addr / page * sizeof(*entries))) !=
			      (ssize_t)(nr * sizeof(*entries)))
		die(path);
	close(fd);
	for (unsigned long i = 0; i < nr; i++)
		count(&blocks, entries[i] & PM_PRESENT ?
				       (long)((entries[i] & PM_PFN_MASK) * page / block_size) : -1);

	printf("{\"pages\":%lu,\"notMoved\":%ld,", nr, not_moved);
	print("before", &before, NULL);
	printf(",");
	print("after", &after, NULL);
	printf(",");
	print("blocks", &blocks, "absent");
	printf("}\n");
	return 0;
}
