/* Paced UDP flood for the benchmarks: flood ADDR PORT RATE SECONDS [PAYLOAD]
 * Sends small datagrams at RATE packets/s for SECONDS (busy-paced in 1 ms slots, sendmmsg
 * batches) and prints how many were sent. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: flood ADDR PORT RATE SECONDS [PAYLOAD]\n");
		return 2;
	}
	long rate = atol(argv[3]);
	double seconds = atof(argv[4]);
	int payload = argc > 5 ? atoi(argv[5]) : 16;
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	inet_pton(AF_INET, argv[1], &dst.sin_addr);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
		perror("socket");
		return 1;
	}
	enum { BATCH = 64 };
	static char buf[2048];
	struct iovec iov = { buf, payload };
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	long sent = 0;
	double start = now(), end = start + seconds;
	for (;;) {
		double t = now();
		if (t >= end)
			break;
		long due = (long)((t - start) * rate);
		while (sent < due) {
			int n = due - sent < BATCH ? due - sent : BATCH;
			int r = sendmmsg(fd, msgs, n, 0);
			if (r <= 0)
				break;
			sent += r;
		}
		if (sent >= due) {
			struct timespec pause = { 0, 200000 };
			nanosleep(&pause, NULL);
		}
	}
	printf("%ld %.3f\n", sent, now() - start);
	return 0;
}
