// SPDX-License-Identifier: GPL-2.0
/*
 * memhog: stand in for a function instance's private memory.
 *
 * usage: memhog MIB [CHUNK_KIB]
 *
 * Maps MIB MiB of private anonymous memory and writes every page, CHUNK_KIB (default 2048)
 * at a time with a sched_yield() between chunks, so that several memhogs started together
 * interleave their pages across memory blocks the way concurrent instances do. Prints
 * "memhog ready <pid> <MIB>" once every page is resident, then waits for a signal.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned long parse_positive(const char *what, const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v == 0) {
		fprintf(stderr, "memhog: %s must be a positive integer, got '%s'\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	unsigned long mib, chunk, len, off, page = (unsigned long)sysconf(_SC_PAGESIZE);
	char *mem;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: memhog MIB [CHUNK_KIB]\n");
		return 2;
	}
	mib = parse_positive("MIB", argv[1]);
	chunk = argc == 3 ? parse_positive("CHUNK_KIB", argv[2]) << 10 : 2UL << 20;
	len = mib << 20;

	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "memhog: mmap %lu MiB: %s\n", mib, strerror(errno));
		return 1;
	}
	for (off = 0; off < len; off += page) {
		mem[off] = (char)(off / page) | 1;
		if ((off + page) % chunk == 0)
			sched_yield();
	}
	printf("memhog ready %d %lu\n", (int)getpid(), mib);
	fflush(stdout);
	for (;;)
		pause();
}
