/*
 * What one thread waking another costs on this machine, as the daemon's
 * threads do it: the event loop wakes the writer once per chunk, and is
 * itself woken once per poll. Two threads of one process pass a byte back
 * and forth through pipes, first on two CPUs, then on one.
 *
 * Prints, per case: the round trip's wall time, and the CPU time each
 * thread spends per wake it takes (its sleep, its wakeup and the wake it
 * sends), in microseconds. Usage: wake [ROUND_TRIPS]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int ping[2], pong[2];
static long trips;
static int peer_cpu;
static double peer_cpu_us;

static double now_us(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *peer(void *arg)
{
	char c;
	double t0;

	(void)arg;
	if (pin(peer_cpu))
		exit(2);
	t0 = now_us(CLOCK_THREAD_CPUTIME_ID);
	for (long i = 0; i < trips; i++) {
		if (read(ping[0], &c, 1) != 1 || write(pong[1], &c, 1) != 1)
			exit(2);
	}
	peer_cpu_us = now_us(CLOCK_THREAD_CPUTIME_ID) - t0;
	return NULL;
}

static int run(const char *name, int cpu_a, int cpu_b)
{
	pthread_t t;
	char c = 0;
	double w0, c0, wall, own;

	if (pipe(ping) || pipe(pong))
		return 1;
	peer_cpu = cpu_b;
	if (pin(cpu_a) || pthread_create(&t, NULL, peer, NULL))
		return 1;
	w0 = now_us(CLOCK_MONOTONIC);
	c0 = now_us(CLOCK_THREAD_CPUTIME_ID);
	for (long i = 0; i < trips; i++) {
		if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1)
			return 1;
	}
	own = now_us(CLOCK_THREAD_CPUTIME_ID) - c0;
	wall = now_us(CLOCK_MONOTONIC) - w0;
	pthread_join(t, NULL);
	printf("%s: round trip %.1f us, CPU per wake %.1f us\n", name,
	       wall / trips, (own + peer_cpu_us) / (2.0 * trips));
	close(ping[0]);
	close(ping[1]);
	close(pong[0]);
	close(pong[1]);
	return 0;
}

int main(int argc, char **argv)
{
	cpu_set_t allowed;
	int cpus[2], n = 0;

	trips = argc > 1 ? atol(argv[1]) : 5000;
	if (trips <= 0) {
		fprintf(stderr, "wake: ROUND_TRIPS must be a positive number\n");
		return 1;
	}
	/* The CPUs this process may use, not 0 and 1: a cpuset may forbid them. */
	if (sched_getaffinity(0, sizeof(allowed), &allowed)) {
		perror("wake: sched_getaffinity");
		return 1;
	}
	for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
		if (CPU_ISSET(c, &allowed))
			cpus[n++] = c;
	if (n == 0) {
		fprintf(stderr, "wake: no CPU to run on\n");
		return 1;
	}
	if (n > 1 && run("two CPUs", cpus[0], cpus[1])) {
		fprintf(stderr, "wake: two CPUs failed\n");
		return 1;
	}
	if (run("one CPU", cpus[0], cpus[0])) {
		fprintf(stderr, "wake: one CPU failed\n");
		return 1;
	}
	return 0;
}
