// SPDX-License-Identifier: GPL-2.0
/*
 * function: the replay's function instance with a cheap cold start, the same protocol as
 * function.mjs. Under TCG a node instance takes seconds of emulated CPU to start, which
 * drowns what a replay wants to measure (how fast memory comes back); a static C program
 * starts in milliseconds, as functions on a snapshot-restoring KVM host do.
 *
 * environment: PORT (1-65535), FOOTPRINT_MIB (default 64)
 *
 * Touches FOOTPRINT_MIB of private anonymous memory, listens on 127.0.0.1:PORT, prints
 * "function ready on PORT", then serves one connection at a time: "POST /" with a JSON body
 * {"durationMs": N, "memoryMiB": M} touches M MiB of the footprint (at most all of it) and
 * computes for N ms, then answers 200 {"ok":true,"computeMs":...}; anything else gets 400.
 */
#define _GNU_SOURCE /* strcasestr */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define REQUEST_MAX 8192

static char *footprint;
static unsigned long footprint_bytes;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static unsigned long env_number(const char *name, const char *meaning, unsigned long fallback,
				 unsigned long min, unsigned long max)
{
	const char *text = getenv(name);
	char *end;
	unsigned long value;

	if (!text)
		return fallback;
	errno = 0;
	value = strtoul(text, &end, 10);
	if (errno || *end || end == text || value < min || value > max) {
		fprintf(stderr, "function: %s must be %s, not '%s'\n", name, meaning, text);
		exit(2);
	}
	return value;
}

static void touch(unsigned long bytes)
{
	for (unsigned long offset = 0; offset < bytes && offset < footprint_bytes; offset += PAGE)
		footprint[offset] = (char)offset;
}

/* Busy work, not a sleep: a function's compute. */
static volatile unsigned int sink;

static void compute(double ms)
{
	double end = now_ms() + ms;
	unsigned int x = 1;

	while (now_ms() < end)
		for (int i = 0; i < 10000; i++)
			x = x * 1103515245u + 12345u;
	sink = x;
}

/* The number after "name": in a JSON body, or -1 when absent or malformed. */
static double json_number(const char *body, const char *name)
{
	char key[32];
	const char *at;
	char *end;
	double value;

	snprintf(key, sizeof(key), "\"%s\"", name);
	at = strstr(body, key);
	if (!at)
		return 0;
	at += strlen(key);
	while (*at == ' ' || *at == ':')
		at++;
	value = strtod(at, &end);
	return end == at ? -1 : value;
}

static void reply(int fd, int status, const char *body)
{
	char head[256];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, status == 200 ? "OK" : "Bad Request", strlen(body));

	if (send(fd, head, n, MSG_NOSIGNAL) < 0 || send(fd, body, strlen(body), MSG_NOSIGNAL) < 0)
		return; /* the client went away: nothing to tell it */
}

static void serve(int fd)
{
	char request[REQUEST_MAX + 1];
	size_t size = 0;
	char *body = NULL;
	long length = -1;
	char answer[128];
	double duration, memory, started;

	while (size < REQUEST_MAX) {
		ssize_t n = read(fd, request + size, REQUEST_MAX - size);

		if (n <= 0)
			break;
		size += n;
		request[size] = '\0';
		if (!body && (body = strstr(request, "\r\n\r\n"))) {
			const char *cl = strcasestr(request, "\r\nContent-Length:");

			body += 4;
			length = cl ? strtol(cl + 17, NULL, 10) : 0;
		}
		if (body && (long)(request + size - body) >= length)
			break;
	}
	request[size] = '\0';
	if (size == 0)
		return; /* a connection that sent nothing: the agent's readiness probe */
	if (!body || strncmp(request, "POST / ", 7)) {
		reply(fd, 400, "{\"ok\":false,\"error\":\"expected POST / with a JSON body\"}");
		return;
	}
	while (*body == ' ' || *body == '\n' || *body == '\r' || *body == '\t')
		body++;
	if (*body && *body != '{') {
		reply(fd, 400, "{\"ok\":false,\"error\":\"the body is not a JSON object\"}");
		return;
	}
	duration = json_number(body, "durationMs");
	memory = json_number(body, "memoryMiB");
	if (duration < 0 || duration > 600000) {
		reply(fd, 400, "{\"ok\":false,\"error\":\"durationMs: 0-600000\"}");
		return;
	}
	if (memory < 0) {
		reply(fd, 400, "{\"ok\":false,\"error\":\"memoryMiB: a number of MiB, at least 0\"}");
		return;
	}
	started = now_ms();
	touch((unsigned long)(memory * 1048576));
	compute(duration);
	snprintf(answer, sizeof(answer), "{\"ok\":true,\"computeMs\":%.3f}", now_ms() - started);
	reply(fd, 200, answer);
}

int main(void)
{
	unsigned long port = env_number("PORT", "a TCP port", 0, 1, 65535);
	unsigned long footprint_mib = env_number("FOOTPRINT_MIB", "a number of MiB", 64, 0, 1UL << 20);
	struct sockaddr_in address = { .sin_family = AF_INET };
	int one = 1, listener;

	signal(SIGPIPE, SIG_IGN);
	if (port == 0) {
		fprintf(stderr, "function: PORT must be a TCP port, not unset\n");
		return 2;
	}
	footprint_bytes = footprint_mib << 20;
	footprint = mmap(NULL, footprint_bytes ? footprint_bytes : PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (footprint == MAP_FAILED) {
		perror("function: mmap");
		return 1;
	}
	touch(footprint_bytes);

	listener = socket(AF_INET, SOCK_STREAM, 0);
	address.sin_port = htons(port);
	address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(listener, (struct sockaddr *)&address, sizeof(address)) || listen(listener, 64)) {
		perror("function: listen");
		return 1;
	}
	printf("function ready on %lu\n", port);
	fflush(stdout);
	for (;;) {
		int fd = accept(listener, NULL, NULL);

		if (fd < 0)
			continue;
		serve(fd);
		close(fd);
	}
}
