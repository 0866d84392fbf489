/* execveat(dirfd of /bin, "true", ...): the kernel-matrix VMs have no other
 * program that calls execveat. Static, so it needs nothing in the initramfs. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char *args[] = { "true", argc > 1 ? argv[1] : "", NULL };
	char *envp[] = { NULL };
	int dir = open("/bin", O_PATH | O_DIRECTORY);

	if (dir < 0)
		return 1;
	syscall(SYS_execveat, dir, "true", args, envp, 0);
	perror("execveat");
	return 1;
}
