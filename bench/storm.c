/*
 * Exec storm: WORKERS processes each fork+exec+wait COUNT times the static
 * no-op, with an argv of NARGS arguments of ARGLEN bytes after a marker.
 * Prints: "<execs> <seconds> <execs per second> <failed>".
 *
 * usage: storm WORKERS COUNT NARGS ARGLEN PROGRAM MARKER
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int worker(long count, char *prog, char **argv)
{
	char *envp[] = { NULL };
	int failed = 0;

	for (long i = 0; i < count; i++) {
		pid_t pid = fork();
		int st;

		if (pid < 0)
			return 1;
		if (pid == 0) {
			execve(prog, argv, envp);
			_exit(127);
		}
		if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			failed++;
	}
	return failed ? 2 : 0;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: storm WORKERS COUNT NARGS ARGLEN PROGRAM MARKER\n");
		return 2;
	}
	long workers = atol(argv[1]), count = atol(argv[2]);
	long nargs = atol(argv[3]), arglen = atol(argv[4]);
	char *prog = argv[5];
	char **eargv = calloc(nargs + 3, sizeof(char *));
	char *arg = malloc(arglen + 1);
	int failed = 0;

	memset(arg, 'a', arglen);
	arg[arglen] = 0;
	eargv[0] = prog;
	eargv[1] = argv[6];
	for (long i = 0; i < nargs; i++)
		eargv[2 + i] = arg;

	double t0 = now();
	for (long w = 0; w < workers; w++) {
		if (fork() == 0)
			_exit(worker(count, prog, eargv));
	}
	for (long w = 0; w < workers; w++) {
		int st;

		if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			failed++;
	}
	double dt = now() - t0;
	long total = workers * count;

	printf("%ld %.6f %.1f %d\n", total, dt, total / dt, failed);
	return failed ? 1 : 0;
}
