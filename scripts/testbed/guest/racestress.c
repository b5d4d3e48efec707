// SPDX-License-Identifier: GPL-2.0
/*
 * racestress: bind / fork / exec / fault / exit / reclaim races against HotMem, for the debug
 * kernel (KASAN, lockdep, DEBUG_VM), while the host resizes the virtio-mem device.
 *
 * usage: racestress [--cycles N] [--lanes L] [--execs K] [--threads T] [--fault-kib KIB]
 *                   [--exhaust-every E] [--seconds S] [--wait-signal]
 *
 * Each lane (a thread of this process) owns two partitions and runs cycles one after another;
 * the lanes run together. A cycle on partitions a and b:
 *  - forks an exec-looper that execve()s itself K times, forking a child every other image,
 *    while the lane issues HOTMEM_IOC_BIND to partition a on its pidfd in a tight loop, so that
 *    binds land during exec and fork. The looper marks each exec and fork on a pipe ('E' before
 *    execve, 'e' in the new image, 'F'/'f' around fork), which tells which binds overlapped
 *    one. Once a bind has returned 0 the lane writes 'B' to another pipe: every image (and every
 *    child) that saw 'B' must be bound to a, which it checks by the pfn of a page it faults
 *    (/proc/self/pagemap against the partition's blocks); an unbound one is a lost binding.
 *  - forks a faulter, binds it to b before it execve()s "--fault", which starts T threads that
 *    fault and free memory, some forking children that write to it (COW) and exit, and exits
 *    (exit_group) while they still fault. Every E-th cycle its threads fault until partition b
 *    is exhausted and the kernel kills it.
 * A reclaimer thread reads /dev/hotmem events and calls HOTMEM_IOC_RECLAIM on every partition
 * released (and on any it finds FREE), and onlines every offline memory block (plugged by the
 * host, or offlined by a reclaim) into the partition with the fewest blocks.
 *
 * When every cycle ran (or --seconds passed), it prints "RACESTRESS_WORKERS_DONE"; with
 * --wait-signal it then waits for SIGUSR1 (the host has stopped resizing). It then reclaims
 * every populated partition, each of which must be FREE and reclaim with 0 pages migrated,
 * prints "RACESTRESS_RESULT {json}" with the counts and /proc/vmstat deltas, and exits 0 if
 * every check held, 1 otherwise ("RACESTRESS_FAIL ..." lines say which).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/hotmem.h>

#define SYSFS_MEMORY	"/sys/devices/system/memory"
#define SYSFS_HOTMEM	"/sys/kernel/mm/hotmem"
#define MARK_FD		3	/* exec-looper and faulter: markers to the lane */
#define BOUND_FD	4	/* exec-looper: 'B' once a bind returned 0 */
/* Exit statuses of an exec-looper that found itself unbound although a bind returned 0 */
#define LOST_EXEC_RACE	3	/* the image that first saw 'B': its exec overlapped the bind */
#define LOST_AFTER_EXEC	4	/* an image whose execve() began after the bind returned */
#define LOST_AFTER_FORK	5	/* a child whose fork() began after the bind returned */
/* A worker whose execve() failed exits with EXEC_FAILED + errno */
#define EXEC_FAILED	100
#define MAX_LANES	8
#define MAX_PARTITIONS	(2 * MAX_LANES)
#define WORKER_DEADLINE_S 60

static const char *self_exe = "/proc/self/exe";
static int hotmem_fd = -1;

/* Counters, shared by the lanes and the reclaimer */
#define COUNTERS(X) \
	X(cycles) X(binds) X(binds_ok) X(binds_ebusy) X(binds_esrch) \
	X(binds_enxio) X(binds_timedout) X(binds_other) X(binds_raced_exec) \
	X(binds_raced_fork) X(faulter_binds_ok) X(faulter_binds_failed) X(forks) X(execs) \
	X(looper_forks) X(faulter_forks) X(faulters) X(faulter_threads) X(exhaust_runs) \
	X(exhaust_kills) X(exhaust_not_killed) X(lost_bindings) X(lost_bindings_exec_race) \
	X(worker_failures) \
	X(workers_killed_at_deadline) X(released_events) X(reclaimed_events) X(oom_events) \
	X(overflow_events) X(reclaims) X(reclaimed_blocks) X(reclaims_busy_bound) \
	X(reclaims_busy_page) X(reclaims_failed) X(reclaim_pages_migrated) X(onlines) \
	X(onlines_failed) X(final_reclaims) X(final_blocks) X(failures)
#define DECLARE(name) atomic_ulong name;
static struct { COUNTERS(DECLARE) } count;
#define INC(name) atomic_fetch_add(&count.name, 1)
#define ADD(name, n) atomic_fetch_add(&count.name, (n))

static atomic_bool stop_reclaimer;

/* A line on stdout and in the kernel log, where the host sees it next to any kernel report */
static void say(const char *fmt, ...)
{
	char line[900];
	va_list ap;
	int fd;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	printf("%s\n", line);
	fflush(stdout);
	fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		char record[1024];
		int len = snprintf(record, sizeof(record), "<5>racestress: %s\n", line);

		/* One write, one record */
		if (write(fd, record, len) < 0) {
		}
		close(fd);
	}
}

static void fail(const char *fmt, ...)
{
	char line[800];
	va_list ap;

	INC(failures);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	say("RACESTRESS_FAIL %s", line);
}

static unsigned long parse_ulong(const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end) {
		fprintf(stderr, "racestress: not a number: '%s'\n", s);
		exit(2);
	}
	return v;
}

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int write_file(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, value, strlen(value));
	n = n < 0 ? -errno : 0;
	close(fd);
	return n;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* xorshift, per caller */
static unsigned int rnd(unsigned int *state)
{
	unsigned int x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *state = x ? x : 1;
}

/* ---- Inside a worker: is this mm bound to @partition? ---- */

/* Faults a page and looks its pfn up among the partition's blocks: 1 in, 0 not, -1 unknown */
static int page_in_partition(int partition)
{
	char path[128], buf[4096], *tok, *save;
	unsigned long block_size, blocks[256], pfn;
	int nr = 0, fd, in = 0;
	uint64_t entry;
	long page = sysconf(_SC_PAGESIZE);
	volatile char *mem;

	mem = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -1;
	mem[0] = 1;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (pread(fd, &entry, sizeof(entry), (uintptr_t)mem / page * sizeof(entry)) !=
	    sizeof(entry) || !(entry & (1ULL << 63))) {
		close(fd);
		return -1;
	}
	close(fd);
	pfn = entry & ((1ULL << 55) - 1);
	if (read_file(SYSFS_MEMORY "/block_size_bytes", buf, sizeof(buf)))
		return -1;
	block_size = strtoul(buf, NULL, 16);
	snprintf(path, sizeof(path), SYSFS_HOTMEM "/partition%d/blocks", partition);
	if (read_file(path, buf, sizeof(buf)))
		return -1;
	for (tok = strtok_r(buf, " \n", &save); tok && nr < 256; tok = strtok_r(NULL, " \n", &save))
		blocks[nr++] = strtoul(tok, NULL, 10);
	for (int i = 0; i < nr; i++)
		in |= pfn * page / block_size == blocks[i];
	munmap((void *)mem, page);
	return in;
}

static void mark(char c)
{
	/* Non-blocking: a full pipe loses a marker, never stalls the worker */
	if (write(MARK_FD, &c, 1) < 0) {
	}
}

static bool saw_bind(void)
{
	char c;

	while (read(BOUND_FD, &c, 1) == 1)
		if (c == 'B')
			return true;
	return false;
}

static void check_bound(int partition, unsigned int left, const char *who, int status)
{
	int in = page_in_partition(partition);

	if (in == 0) {
		fprintf(stderr, "racestress: LOST binding: %s %d (%u execs left) not in partition %d after a bind returned 0\n",
			who, (int)getpid(), left, partition);
		_exit(status);
	}
}

/*
 * execve() of the next image failed: say why with the partition's state as this image sees
 * it, then exit with EXEC_FAILED + errno for the lane to count.
 */
static __attribute__((noreturn)) void exec_failed(int partition, unsigned int left)
{
	static const char *const names[] = { "state", "bound_mms", "present_bytes", "free_bytes",
					     "blocks" };
	char snapshot[600] = "", path[128], value[128];
	int err = errno;
	size_t len = 0;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), SYSFS_HOTMEM "/partition%d/%s", partition, names[i]);
		if (read_file(path, value, sizeof(value)))
			snprintf(value, sizeof(value), "?");
		value[strcspn(value, "\n")] = '\0';
		len += snprintf(snapshot + len, sizeof(snapshot) - len, " %s=%s", names[i], value);
		if (len >= sizeof(snapshot))
			break;
	}
	say("RACESTRESS_FAIL exec-looper %d (%u execs left, partition %d): execve: %s;%s",
	    (int)getpid(), left, partition, strerror(err), snapshot);
	/* Last: a fault in an exhausted partition kills us */
	say("RACESTRESS_NOTE exec-looper %d: a page it faults is in partition %d: %d",
	    (int)getpid(), partition, page_in_partition(partition));
	_exit(EXEC_FAILED + err);
}

/* --exec-loop PARTITION LEFT SEEN */
static int exec_loop(int partition, unsigned int left, bool seen)
{
	char arg_p[16], arg_left[16];
	int status;
	pid_t child;

	mark('e');
	if (seen)
		check_bound(partition, left, "exec-looper image execed after the bind",
			    LOST_AFTER_EXEC);
	else if (saw_bind()) {
		check_bound(partition, left, "exec-looper image that first saw the bind",
			    LOST_EXEC_RACE);
		seen = true;
	}
	if (left % 2 == 0) {
		mark('F');
		child = fork();
		if (child == 0) {
			char *mem = mmap(NULL, 256 << 10, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			if (mem != MAP_FAILED)
				memset(mem, 0x5a, 256 << 10);
			/* Only a fork begun after the bind returned must inherit it */
			if (seen)
				check_bound(partition, left, "exec-looper child forked after the bind",
					    LOST_AFTER_FORK);
			_exit(0);
		}
		mark('f');
		if (child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
		    WEXITSTATUS(status) == LOST_AFTER_FORK)
			_exit(LOST_AFTER_FORK);
	}
	if (left == 0)
		return 0;
	snprintf(arg_p, sizeof(arg_p), "%d", partition);
	snprintf(arg_left, sizeof(arg_left), "%u", left - 1);
	mark('E');
	execl(self_exe, "racestress", "--exec-loop", arg_p, arg_left, seen ? "1" : "0", NULL);
	exec_failed(partition, left);
}

/* ---- Inside a faulter ---- */

struct fault_arg {
	unsigned long bytes;
	bool exhaust;
	unsigned int seed;
	atomic_ulong *faulted;
};

static void *fault_thread(void *arg)
{
	struct fault_arg *fa = arg;
	long page = sysconf(_SC_PAGESIZE);

	for (unsigned int round = 0;; round++) {
		char *mem = mmap(NULL, fa->bytes, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (mem == MAP_FAILED)
			continue;
		for (unsigned long off = 0; off < fa->bytes; off += page) {
			mem[off] = (char)round | 1;
			atomic_fetch_add(fa->faulted, 1);
		}
		if (fa->exhaust)
			continue;	/* keep it, until the partition runs out */
		if (rnd(&fa->seed) % 2 == 0) {
			pid_t child;

			mark('F');
			child = fork();
			if (child == 0) {
				for (unsigned long off = 0; off < fa->bytes; off += 2 * page)
					mem[off] = 2;	/* COW */
				_exit(0);
			}
			if (child > 0)
				waitpid(child, NULL, 0);
		}
		munmap(mem, fa->bytes);
	}
	return NULL;
}

/* --fault THREADS KIB EXHAUST SEED: returns (exit_group) while the threads still fault */
static int fault(unsigned int threads, unsigned long kib, bool exhaust, unsigned int seed)
{
	static struct fault_arg args[64];
	static atomic_ulong faulted;
	unsigned long want = threads * (kib << 10) / sysconf(_SC_PAGESIZE) / 2;
	pthread_t t;

	if (threads > 64)
		threads = 64;
	for (unsigned int i = 0; i < threads; i++) {
		args[i] = (struct fault_arg){ kib << 10, exhaust, seed * 31 + i + 1, &faulted };
		if (pthread_create(&t, NULL, fault_thread, &args[i]))
			return 2;
	}
	if (exhaust)
		for (;;)
			pause();	/* until the partition is exhausted and we are killed */
	/* Exit once the threads faulted half of a round, with a fault or two in flight */
	while (atomic_load(&faulted) < want)
		usleep(1000);
	usleep(seed % 5000);
	exit(0);
}

/* ---- The coordinator ---- */

static int pidfd_open(pid_t pid)
{
	return syscall(SYS_pidfd_open, pid, 0);
}

static int partition_info(unsigned int partition, struct hotmem_partition_info *info)
{
	memset(info, 0, sizeof(*info));
	info->size = sizeof(*info);
	info->partition = partition;
	return ioctl(hotmem_fd, HOTMEM_IOC_PARTITION_INFO, info) ? -errno : 0;
}

static int bind_pidfd(int pidfd, unsigned int partition, bool wait)
{
	struct hotmem_bind bind = {
		.size = sizeof(bind),
		.pidfd = pidfd,
		.partition = partition,
		.flags = wait ? HOTMEM_BIND_WAIT : 0,
		.timeout_ns = 5000000000ULL,
	};

	return ioctl(hotmem_fd, HOTMEM_IOC_BIND, &bind) ? -errno : 0;
}

static int reclaim(unsigned int partition, struct hotmem_reclaim *r)
{
	memset(r, 0, sizeof(*r));
	r->size = sizeof(*r);
	r->partition = partition;
	return ioctl(hotmem_fd, HOTMEM_IOC_RECLAIM, r) ? -errno : 0;
}

struct markers {
	unsigned long execs_started, execs_done, forks_started, forks_done;
};

static void drain_markers(int fd, struct markers *m)
{
	char buf[256];
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			m->execs_started += buf[i] == 'E';
			m->execs_done += buf[i] == 'e';
			m->forks_started += buf[i] == 'F';
			m->forks_done += buf[i] == 'f';
		}
	}
}

/*
 * A worker past its deadline: print where each of its threads is (state and kernel
 * stack) and ask the kernel for every blocked task's stack (sysrq w, debug build), so
 * the log says why it is stuck.
 */
static void dump_stuck(pid_t pid)
{
	char path[320], buf[4096];
	struct dirent *d;
	DIR *tasks;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	tasks = opendir(path);
	while (tasks && (d = readdir(tasks))) {
		char *state;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)pid, d->d_name);
		if (read_file(path, buf, sizeof(buf)))
			continue;
		state = strrchr(buf, ')');
		say("stuck thread %s: state %c", d->d_name, state && state[1] ? state[2] : '?');
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stack", (int)pid, d->d_name);
		if (read_file(path, buf, sizeof(buf)))
			continue;
		for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
			say("  %s", line);
	}
	if (tasks)
		closedir(tasks);
	write_file("/proc/sysrq-trigger", "w");
}

/* waitpid with a deadline; SIGKILLs the worker when it passes */
static int reap(pid_t pid, uint64_t deadline_ms, const char *who, unsigned long cycle)
{
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		if (r < 0)
			return -1;
		if (now_ms() > deadline_ms) {
			INC(workers_killed_at_deadline);
			fail("cycle %lu: %s %d still running after %d s, killed", cycle, who, (int)pid,
			     WORKER_DEADLINE_S);
			dump_stuck(pid);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return status;
		}
		usleep(2000);
	}
}

static struct {
	unsigned long cycles;
	unsigned int lanes, execs, threads;
	unsigned long fault_kib;
	unsigned int exhaust_every;
	unsigned long seconds;
	bool wait_signal;
} opt = { 1000, 2, 6, 4, 1024, 100, 540, false };

static uint64_t deadline_ms;
static atomic_ulong next_cycle;

static pid_t spawn_looper(int partition, int mark_w, int bound_r)
{
	char arg_p[16], arg_k[16];
	pid_t pid;

	snprintf(arg_p, sizeof(arg_p), "%d", partition);
	snprintf(arg_k, sizeof(arg_k), "%u", opt.execs);
	pid = fork();
	if (pid == 0) {
		/* async-signal-safe only: the parent has threads */
		if (dup2(mark_w, MARK_FD) < 0 || dup2(bound_r, BOUND_FD) < 0)
			_exit(2);
		execl(self_exe, "racestress", "--exec-loop", arg_p, arg_k, "0", NULL);
		_exit(EXEC_FAILED + errno);
	}
	return pid;
}

static pid_t spawn_faulter(int mark_w, int go_r, bool exhaust, unsigned int seed)
{
	char arg_t[16], arg_k[24], arg_s[16];
	pid_t pid;
	char c;

	snprintf(arg_t, sizeof(arg_t), "%u", opt.threads);
	snprintf(arg_k, sizeof(arg_k), "%lu", opt.fault_kib);
	snprintf(arg_s, sizeof(arg_s), "%u", seed);
	pid = fork();
	if (pid == 0) {
		if (dup2(mark_w, MARK_FD) < 0)
			_exit(2);
		if (read(go_r, &c, 1) != 1)
			_exit(2);
		execl(self_exe, "racestress", "--fault", arg_t, arg_k, exhaust ? "1" : "0", arg_s,
		      NULL);
		_exit(EXEC_FAILED + errno);
	}
	return pid;
}

static void classify_bind(int ret)
{
	INC(binds);
	switch (ret) {
	case 0: INC(binds_ok); break;
	case -EBUSY: INC(binds_ebusy); break;
	case -ESRCH: INC(binds_esrch); break;
	case -ENXIO: INC(binds_enxio); break;
	case -ETIMEDOUT: INC(binds_timedout); break;
	default: INC(binds_other); break;
	}
}

static void run_cycle(unsigned int lane, unsigned long cycle, unsigned int *seed)
{
	unsigned int a = 2 * lane + cycle % 2, b = 2 * lane + 1 - cycle % 2;
	int mark_pipe[2], bound_pipe[2], fmark_pipe[2], go_pipe[2], pidfd, fpidfd, ret, status;
	bool exhaust = opt.exhaust_every && cycle % opt.exhaust_every == opt.exhaust_every - 1;
	struct markers m = {}, fm = {};
	bool bound_written = false;
	pid_t looper, faulter;
	uint64_t deadline;

	if (pipe2(mark_pipe, O_CLOEXEC | O_NONBLOCK) || pipe2(bound_pipe, O_CLOEXEC | O_NONBLOCK) ||
	    pipe2(fmark_pipe, O_CLOEXEC | O_NONBLOCK) || pipe2(go_pipe, O_CLOEXEC)) {
		fail("pipe: %s", strerror(errno));
		return;
	}
	deadline = now_ms() + WORKER_DEADLINE_S * 1000;

	/* The faulter: bound before it execs, the binding must survive that */
	faulter = spawn_faulter(fmark_pipe[1], go_pipe[0], exhaust, rnd(seed));
	INC(forks);
	INC(faulters);
	ADD(faulter_threads, opt.threads);
	if (exhaust)
		INC(exhaust_runs);
	fpidfd = faulter > 0 ? pidfd_open(faulter) : -1;
	ret = fpidfd >= 0 ? bind_pidfd(fpidfd, b, true) : -errno;
	classify_bind(ret);
	if (ret)
		INC(faulter_binds_failed);
	else
		INC(faulter_binds_ok);
	if (write(go_pipe[1], "g", 1) != 1)
		fail("cycle %lu: cannot start the faulter", cycle);

	/* The exec-looper, bound to a while it execs and forks */
	looper = spawn_looper(a, mark_pipe[1], bound_pipe[0]);
	INC(forks);
	pidfd = looper > 0 ? pidfd_open(looper) : -1;
	if (pidfd < 0) {
		fail("cycle %lu: fork/pidfd_open of the exec-looper: %s", cycle, strerror(errno));
	} else {
		for (unsigned long i = 0;; i++) {
			struct markers before;
			struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

			if (poll(&pfd, 1, 0) > 0)
				break;	/* exited */
			drain_markers(mark_pipe[0], &m);
			before = m;
			ret = bind_pidfd(pidfd, a, !bound_written);
			drain_markers(mark_pipe[0], &m);
			classify_bind(ret);
			/* An exec or fork in flight when the bind began, or begun while it ran */
			if (before.execs_started != before.execs_done ||
			    m.execs_started != before.execs_started)
				INC(binds_raced_exec);
			if (before.forks_started != before.forks_done ||
			    m.forks_started != before.forks_started)
				INC(binds_raced_fork);
			if (ret == 0 && !bound_written) {
				if (write(bound_pipe[1], "BBBBBBBBBBBBBBBB", 16) != 16)
					fail("cycle %lu: cannot write to the looper", cycle);
				bound_written = true;
			}
			if (ret == -ESRCH)
				break;
			/* Now and then let the looper run a whole exec between binds */
			if (rnd(seed) % 8 == 0)
				usleep(rnd(seed) % 2000);
			if (now_ms() > deadline)
				break;
		}
		status = reap(looper, deadline, "exec-looper", cycle);
		drain_markers(mark_pipe[0], &m);
		ADD(execs, m.execs_done);
		ADD(looper_forks, m.forks_done);
		ADD(forks, m.forks_done);
		if (WIFEXITED(status) && WEXITSTATUS(status) >= LOST_EXEC_RACE &&
		    WEXITSTATUS(status) <= LOST_AFTER_FORK) {
			static const char *const how[] = {
				"the image whose exec overlapped the bind",
				"an image execed after the bind returned",
				"a child forked after the bind returned",
			};

			INC(lost_bindings);
			if (WEXITSTATUS(status) == LOST_EXEC_RACE)
				INC(lost_bindings_exec_race);
			fail("cycle %lu: HOTMEM_IOC_BIND of the exec-looper to partition %u returned 0, but %s was not bound",
			     cycle, a, how[WEXITSTATUS(status) - LOST_EXEC_RACE]);
		} else if (WIFEXITED(status) && WEXITSTATUS(status) > EXEC_FAILED) {
			INC(worker_failures);
			fail("cycle %lu: an execve() of the exec-looper (partition %u) failed: %s",
			     cycle, a, strerror(WEXITSTATUS(status) - EXEC_FAILED));
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			INC(worker_failures);
			fail("cycle %lu: the exec-looper ended with status %#x", cycle, status);
		}
		close(pidfd);
	}

	if (faulter > 0) {
		status = reap(faulter, deadline + (exhaust ? 60000 : 0), "faulter", cycle);
		drain_markers(fmark_pipe[0], &fm);
		ADD(faulter_forks, fm.forks_started);
		ADD(forks, fm.forks_started);
		ADD(execs, 1);
		if (exhaust) {
			if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
				INC(exhaust_kills);
			else
				INC(exhaust_not_killed);
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			/* A few MiB never exhaust a partition of whole memory blocks */
			if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
				INC(worker_failures);
				fail("cycle %lu: the faulter (partition %u, not exhausting it) was killed",
				     cycle, b);
			} else if (WIFEXITED(status) && WEXITSTATUS(status) > EXEC_FAILED) {
				INC(worker_failures);
				fail("cycle %lu: the faulter's execve() (partition %u) failed: %s",
				     cycle, b, strerror(WEXITSTATUS(status) - EXEC_FAILED));
			} else {
				INC(worker_failures);
				fail("cycle %lu: the faulter ended with status %#x", cycle, status);
			}
		}
	}
	if (fpidfd >= 0)
		close(fpidfd);
	close(mark_pipe[0]);
	close(mark_pipe[1]);
	close(bound_pipe[0]);
	close(bound_pipe[1]);
	close(fmark_pipe[0]);
	close(fmark_pipe[1]);
	close(go_pipe[0]);
	close(go_pipe[1]);
	INC(cycles);
}

static void *lane_thread(void *arg)
{
	unsigned int lane = (unsigned int)(uintptr_t)arg, seed = 0x9e3779b9u * (lane + 1);

	for (;;) {
		unsigned long cycle = atomic_fetch_add(&next_cycle, 1);

		if (cycle >= opt.cycles || now_ms() > deadline_ms)
			break;
		run_cycle(lane, cycle, &seed);
		if (cycle % 50 == 49)
			say("RACESTRESS_PROGRESS cycle %lu, %lu binds (%lu raced an exec), %lu reclaims",
			    cycle + 1, atomic_load(&count.binds), atomic_load(&count.binds_raced_exec),
			    atomic_load(&count.reclaims));
	}
	return NULL;
}

/* ---- The reclaimer ---- */

static unsigned int nr_partitions(void)
{
	return 2 * opt.lanes;
}

static void try_reclaim(unsigned int p)
{
	struct hotmem_partition_info info;
	struct hotmem_reclaim r;
	int ret;

	if (partition_info(p, &info) || info.state != HOTMEM_PARTITION_FREE)
		return;
	ret = reclaim(p, &r);
	if (ret == 0) {
		INC(reclaims);
		ADD(reclaimed_blocks, r.nr_blocks);
		ADD(reclaim_pages_migrated, r.pages_migrated);
		if (r.pages_migrated)
			fail("reclaim of partition %u migrated %llu pages", p,
			     (unsigned long long)r.pages_migrated);
	} else if (ret == -EBUSY && !r.busy_pfn) {
		INC(reclaims_busy_bound);	/* bound again meanwhile */
	} else if (ret == -EBUSY) {
		/* A page in use in a partition with no mm bound when we looked */
		INC(reclaims_busy_page);
		if (partition_info(p, &info) == 0 && !info.bound_mms)
			printf("RACESTRESS_NOTE reclaim of partition %u: busy pfn %#llx, bound_mms 0\n",
			       p, (unsigned long long)r.busy_pfn);
	} else {
		INC(reclaims_failed);
		printf("RACESTRESS_NOTE reclaim of partition %u: %s\n", p, strerror(-ret));
	}
}

static void online_offline_blocks(void)
{
	struct hotmem_partition_info info;
	unsigned int blocks[MAX_PARTITIONS];
	struct dirent *de;
	DIR *dir;
	int id;

	for (unsigned int p = 0; p < nr_partitions(); p++)
		blocks[p] = partition_info(p, &info) ? 0 : info.nr_blocks;
	dir = opendir(SYSFS_MEMORY);
	if (!dir)
		return;
	while ((de = readdir(dir))) {
		char path[128], state[64], value[32];
		unsigned int best = 0;

		if (sscanf(de->d_name, "memory%d", &id) != 1)
			continue;
		snprintf(path, sizeof(path), SYSFS_MEMORY "/memory%d/state", id);
		if (read_file(path, state, sizeof(state)) || strncmp(state, "offline", 7))
			continue;
		for (unsigned int p = 1; p < nr_partitions(); p++)
			if (blocks[p] < blocks[best])
				best = p;
		snprintf(value, sizeof(value), "online_hotmem%u", best);
		/* virtio-mem may unplug the block under us: that fails, and is fine */
		if (write_file(path, value)) {
			INC(onlines_failed);
		} else {
			INC(onlines);
			blocks[best]++;
		}
	}
	closedir(dir);
}

static void *reclaimer_thread(void *arg)
{
	int events = open("/dev/hotmem", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	bool pending[MAX_PARTITIONS] = {};
	uint64_t last_sweep = 0, last_online = 0;

	(void)arg;
	if (events < 0) {
		fail("open /dev/hotmem for events: %s", strerror(errno));
		return NULL;
	}
	while (!atomic_load(&stop_reclaimer)) {
		struct pollfd pfd = { .fd = events, .events = POLLIN };
		struct hotmem_event ev[16];
		ssize_t n;

		if (poll(&pfd, 1, 20) > 0) {
			while ((n = read(events, ev, sizeof(ev))) > 0) {
				for (size_t i = 0; i < n / sizeof(ev[0]); i++) {
					switch (ev[i].type) {
					case HOTMEM_EVENT_RELEASED:
						INC(released_events);
						if (ev[i].partition < MAX_PARTITIONS)
							pending[ev[i].partition] = true;
						break;
					case HOTMEM_EVENT_RECLAIMED:
						INC(reclaimed_events);
						break;
					case HOTMEM_EVENT_OOM:
						INC(oom_events);
						break;
					case HOTMEM_EVENT_OVERFLOW:
						INC(overflow_events);
						for (unsigned int p = 0; p < MAX_PARTITIONS; p++)
							pending[p] = true;
						break;
					}
				}
			}
		}
		/* Released ones at once; every partition now and then, for what events missed */
		bool sweep = now_ms() - last_sweep > 500;

		for (unsigned int p = 0; p < nr_partitions(); p++) {
			if (pending[p] || sweep)
				try_reclaim(p);
			pending[p] = false;
		}
		if (sweep)
			last_sweep = now_ms();
		if (now_ms() - last_online > 100) {
			online_offline_blocks();
			last_online = now_ms();
		}
	}
	close(events);
	return NULL;
}

/* ---- Counters of /proc/vmstat ---- */

static const char *const vmstat_names[] = {
	"pgmigrate_success", "pgmigrate_fail", "compact_migrate_scanned", "compact_stall",
	"thp_migration_success", "hotmem_reclaim", "hotmem_reclaim_pages",
};
#define NR_VMSTAT (sizeof(vmstat_names) / sizeof(vmstat_names[0]))

static void read_vmstat(long long *values)
{
	static char buf[16384];

	for (size_t i = 0; i < NR_VMSTAT; i++)
		values[i] = -1;
	if (read_file("/proc/vmstat", buf, sizeof(buf)))
		return;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		char *sp = strchr(line, ' ');

		if (!sp)
			continue;
		*sp = '\0';
		for (size_t i = 0; i < NR_VMSTAT; i++)
			if (!strcmp(line, vmstat_names[i]))
				values[i] = atoll(sp + 1);
	}
}

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig)
{
	(void)sig;
	got_usr1 = 1;
}

/* Every populated partition must be FREE once its workers exited, and reclaim cleanly */
static const char *const state_names[] = { "empty", "free", "bound", "reclaiming" };

static void final_reclaim(unsigned int max_partitions)
{
	for (unsigned int p = 0; p < max_partitions; p++) {
		struct hotmem_partition_info info;
		uint64_t until = now_ms() + 10000;
		struct hotmem_reclaim r;
		int ret;

		ret = partition_info(p, &info);
		if (ret) {
			fail("HOTMEM_IOC_PARTITION_INFO %u: %s", p, strerror(-ret));
			continue;
		}
		if (info.state == HOTMEM_PARTITION_EMPTY)
			continue;
		while (info.state != HOTMEM_PARTITION_FREE && now_ms() < until) {
			usleep(10000);
			partition_info(p, &info);
		}
		if (info.state != HOTMEM_PARTITION_FREE) {
			fail("partition %u is %s, bound_mms %llu, 10 s after every worker exited", p,
			     info.state < 4 ? state_names[info.state] : "?",
			     (unsigned long long)info.bound_mms);
			continue;
		}
		ret = reclaim(p, &r);
		if (ret) {
			fail("final reclaim of partition %u (%u blocks): %s, busy pfn %#llx", p,
			     info.nr_blocks, strerror(-ret), (unsigned long long)r.busy_pfn);
			continue;
		}
		INC(final_reclaims);
		ADD(final_blocks, r.nr_blocks);
		ADD(reclaim_pages_migrated, r.pages_migrated);
		if (r.pages_migrated)
			fail("final reclaim of partition %u migrated %llu pages", p,
			     (unsigned long long)r.pages_migrated);
	}
}

int main(int argc, char **argv)
{
	long long vm_before[NR_VMSTAT], vm_after[NR_VMSTAT];
	pthread_t lanes[MAX_LANES], reclaimer;
	struct hotmem_version version = { .size = sizeof(version) };
	uint64_t start;

	if (argc == 5 && !strcmp(argv[1], "--exec-loop"))
		return exec_loop(parse_ulong(argv[2]), parse_ulong(argv[3]), parse_ulong(argv[4]));
	if (argc == 6 && !strcmp(argv[1], "--fault"))
		return fault(parse_ulong(argv[2]), parse_ulong(argv[3]), parse_ulong(argv[4]),
			     parse_ulong(argv[5]));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--wait-signal")) {
			opt.wait_signal = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "racestress: %s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--cycles"))
			opt.cycles = parse_ulong(v);
		else if (!strcmp(a, "--lanes"))
			opt.lanes = parse_ulong(v);
		else if (!strcmp(a, "--execs"))
			opt.execs = parse_ulong(v);
		else if (!strcmp(a, "--threads"))
			opt.threads = parse_ulong(v);
		else if (!strcmp(a, "--fault-kib"))
			opt.fault_kib = parse_ulong(v);
		else if (!strcmp(a, "--exhaust-every"))
			opt.exhaust_every = parse_ulong(v);
		else if (!strcmp(a, "--seconds"))
			opt.seconds = parse_ulong(v);
		else {
			fprintf(stderr, "racestress: unknown option %s\n", a);
			return 2;
		}
	}
	if (opt.lanes < 1 || opt.lanes > MAX_LANES) {
		fprintf(stderr, "racestress: --lanes must be 1..%d\n", MAX_LANES);
		return 2;
	}
	signal(SIGUSR1, on_usr1);
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	hotmem_fd = open("/dev/hotmem", O_RDWR | O_CLOEXEC);
	if (hotmem_fd < 0) {
		printf("RACESTRESS_FAIL open /dev/hotmem: %s\n", strerror(errno));
		return 1;
	}
	if (ioctl(hotmem_fd, HOTMEM_IOC_VERSION, &version) || version.abi_version != HOTMEM_ABI_VERSION) {
		printf("RACESTRESS_FAIL HOTMEM_IOC_VERSION: %s, kernel ABI %u, header ABI %u\n",
		       strerror(errno), version.abi_version, HOTMEM_ABI_VERSION);
		return 1;
	}
	say("RACESTRESS_START abi=%u max_partitions=%u cycles=%lu lanes=%u execs=%u threads=%u fault_kib=%lu exhaust_every=%u seconds=%lu",
	       version.abi_version, version.max_partitions, opt.cycles, opt.lanes, opt.execs,
	       opt.threads, opt.fault_kib, opt.exhaust_every, opt.seconds);
	read_vmstat(vm_before);
	start = now_ms();
	deadline_ms = start + opt.seconds * 1000;

	online_offline_blocks();
	if (pthread_create(&reclaimer, NULL, reclaimer_thread, NULL))
		return 1;
	for (unsigned int l = 0; l < opt.lanes; l++)
		if (pthread_create(&lanes[l], NULL, lane_thread, (void *)(uintptr_t)l))
			return 1;
	for (unsigned int l = 0; l < opt.lanes; l++)
		pthread_join(lanes[l], NULL);
	atomic_store(&stop_reclaimer, true);
	pthread_join(reclaimer, NULL);
	say("RACESTRESS_WORKERS_DONE cycles=%lu seconds=%.1f", atomic_load(&count.cycles),
	       (now_ms() - start) / 1000.0);
	if (atomic_load(&count.cycles) < opt.cycles)
		fail("only %lu of %lu cycles ran within %lu s", atomic_load(&count.cycles),
		     opt.cycles, opt.seconds);
	if (opt.wait_signal) {
		uint64_t wait_until = now_ms() + 300000;

		while (!got_usr1 && now_ms() < wait_until)
			usleep(10000);
		if (!got_usr1)
			fail("no SIGUSR1 within 300 s");
	}

	final_reclaim(version.max_partitions);
	read_vmstat(vm_after);

	printf("RACESTRESS_RESULT {");
#define PRINT(name) printf("\"%s\":%lu,", #name, atomic_load(&count.name));
	COUNTERS(PRINT)
	printf("\"vmstat\":{");
	for (size_t i = 0; i < NR_VMSTAT; i++)
		printf("%s\"%s\":%lld", i ? "," : "", vmstat_names[i],
		       vm_before[i] < 0 || vm_after[i] < 0 ? -1 : vm_after[i] - vm_before[i]);
	printf("},\"seconds\":%.1f}\n", (now_ms() - start) / 1000.0);
	say("RACESTRESS_END failures=%lu", atomic_load(&count.failures));
	return atomic_load(&count.failures) ? 1 : 0;
}
