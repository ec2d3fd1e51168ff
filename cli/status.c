// SPDX-License-Identifier: MIT
#define _GNU_SOURCE /* pipe2 */
/*
 * "zenmlfs status [MOUNTPOINT]": prints the mount's status file and exits
 * with what its state says, so it serves as a Kubernetes exec probe or in
 * a script.
 *
 * Everything that touches the mount runs in a child process the command
 * stops waiting for after 2 s: a hung daemon makes it exit 3, not hang.
 * A thread would not do: a request the daemon has read but never answers
 * is waited for uninterruptibly, and a process cannot exit while one of
 * its threads waits so.  The child is reaped before the command exits,
 * unless it is stuck on the mount: then it stays blocked (until the daemon
 * answers or its connection is aborted), holding none of the caller's
 * descriptors, and init reaps it.
 */
#include "cli/status.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/util.h"
#include "cli/service.h"

#include "backend/banned.h" /* always the last include */

#define ANSWER_WAIT_S 2

/* What the child found, sent whole through a pipe. */
struct probe {
	int code;
	char status[4096];
	char why[PATH_MAX + 128];
};

int status_only_mount(char *buf, size_t size, char *why, size_t whysz)
{
	char line[4096], mp[PATH_MAX], type[64];
	int n = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f) {
		snprintf(why, whysz, "cannot read the mount table");
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		char *dash = strstr(line, " - ");

		if (!dash || sscanf(line, "%*d %*d %*s %*s %4095s", mp) != 1 ||
		    sscanf(dash + 3, "%63s", type) != 1 ||
		    strcmp(type, "fuse.zenmlfs"))
			continue;
		if (n++ == 0) {
			service_unescape(mp);
			snprintf(buf, size, "%s", mp);
		}
	}
	fclose(f);
	if (n == 1)
		return 0;
	snprintf(why, whysz,
		 n ? "there are %d zenmlfs mounts: name one" :
		     "no zenmlfs mount found",
		 n);
	return -ENOENT;
}

static int state_code(const char *status)
{
	const char *s = strstr(status, "state: ");

	if (!s || (s != status && s[-1] != '\n'))
		return STATUS_UNKNOWN;
	s += 7;
	if (!strncmp(s, "ok\n", 3))
		return STATUS_OK;
	if (!strncmp(s, "degraded\n", 9))
		return STATUS_DEGRADED;
	return STATUS_DOWN;
}

/* Read path's status into *p. */
static void probe(const char *path, struct probe *p)
{
	char abs[PATH_MAX], file[PATH_MAX + 16];
	struct mnt_info mi;
	ssize_t n, len = 0;
	int fd;

	p->code = STATUS_UNKNOWN;
	if (!realpath(path, abs)) {
		snprintf(p->why, sizeof(p->why), "'%s': %s", path,
			 strerror(errno));
		return;
	}
	if (service_mount_at(abs, &mi) || strcmp(mi.fstype, "fuse.zenmlfs")) {
		snprintf(p->why, sizeof(p->why), "'%s' is not a zenmlfs mount",
			 abs);
		return;
	}
	snprintf(file, sizeof(file), "%s/status", abs);
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(p->why, sizeof(p->why), "'%s': %s", file,
			 strerror(errno));
		return;
	}
	while (len < (ssize_t)sizeof(p->status) - 1) {
		n = read(fd, p->status + len, sizeof(p->status) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	close(fd); /* a FLUSH: the daemon must answer that too */
	p->status[len] = '\0';
	p->code = state_code(p->status);
	if (p->code == STATUS_UNKNOWN)
		snprintf(p->why, sizeof(p->why), "'%s' has no state line",
			 file);
}

/* The child: probe, answer through fd, exit. */
static void __attribute__((noreturn)) child_main(const char *path, int fd)
{
	static struct probe p;
	const char *at = (const char *)&p;
	size_t left = sizeof(p);
	ssize_t n;
	int null;

	/* The caller may wait for the end of our standard streams (a
	 * shell's $(...), a probe's pipes): we may outlive the command. */
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	probe(path, &p);
	while (left) {
		n = write(fd, at, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		at += n;
		left -= (size_t)n;
	}
	_exit(0);
}

/*
 * Wait up to ms for the child to end, and reap it: a child left behind
 * goes to init, and in a container init may be the daemon, which reaps
 * nobody.  A child stuck on the mount stays (until the daemon answers).
 */
static void reap(pid_t pid, int ms)
{
	long long until = mono_ms() + ms;

	while (waitpid(pid, NULL, WNOHANG) == 0 && mono_ms() < until)
		poll(NULL, 0, 5);
}

/*
 * The child's answer into *p, waiting until deadline (mono_ms()).  0, or
 * -ETIMEDOUT, or -EIO when the child ended without a whole answer.
 */
static int answer(int fd, struct probe *p, long long deadline)
{
	char *at = (char *)p;
	size_t left = sizeof(*p);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	long long wait;
	ssize_t n;
	int ret;

	while (left) {
		wait = deadline - mono_ms();
		if (wait <= 0)
			return -ETIMEDOUT;
		ret = poll(&pfd, 1, (int)wait);
		if (ret < 0 && errno != EINTR)
			return -errno;
		if (ret <= 0)
			continue;
		n = read(fd, at, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n ? -errno : -EIO;
		at += n;
		left -= (size_t)n;
	}
	return 0;
}

/* The mount point to ask: argv[1], or the only zenmlfs mount (into
 * only).  -1 to go on, else the exit code. */
static int status_args(int argc, char **argv, char *only, size_t size,
		       const char **path)
{
	char why[256];

	if (argc > 1 &&
	    (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: zenmlfs status [MOUNTPOINT]\n"
		       "Prints the mount's status; exits 0 (ok), 1 "
		       "(degraded), 2 (expired or\nunauthenticated), 3 (not a "
		       "zenmlfs mount, or no answer within %d s).\n",
		       ANSWER_WAIT_S);
		return STATUS_OK;
	}
	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr,
			"zenmlfs: status: %s '%s'\n"
			"Try 'zenmlfs status --help'.\n",
			argc > 2 ? "too many arguments:" : "unknown option",
			argv[argc > 2 ? 2 : 1]);
		return STATUS_UNKNOWN;
	}
	if (argc == 2) {
		*path = argv[1];
	} else if (status_only_mount(only, size, why, sizeof(why))) {
		fprintf(stderr, "zenmlfs: status: %s\n", why);
		return STATUS_UNKNOWN;
	} else {
		*path = only;
	}
	return -1;
}

/* Ask path in a child process (it may hang on a dead mount): 0 with *p,
 * else the exit code, said on stderr. */
static int probe_in_child(const char *path, struct probe *p)
{
	int fds[2], ret;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC)) {
		fprintf(stderr, "zenmlfs: status: cannot make a pipe: %s\n",
			strerror(errno));
		return STATUS_UNKNOWN;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "zenmlfs: status: cannot fork: %s\n",
			strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return STATUS_UNKNOWN;
	}
	if (pid == 0) {
		close(fds[0]);
		child_main(path, fds[1]);
	}
	close(fds[1]);
	ret = answer(fds[0], p, mono_ms() + ANSWER_WAIT_S * 1000LL);
	close(fds[0]);
	if (!ret) {
		reap(pid, 1000);
		return 0;
	}
	/* Gone at once if its request is still queued; else it stays until
	 * the daemon answers, and init reaps it. */
	kill(pid, SIGKILL);
	reap(pid, 200);
	if (ret == -ETIMEDOUT)
		fprintf(stderr,
			"zenmlfs: status: '%s' does not answer within %d s\n",
			path, ANSWER_WAIT_S);
	else
		fprintf(stderr, "zenmlfs: status: cannot probe '%s'\n", path);
	return STATUS_UNKNOWN;
}

int status_main(int argc, char **argv)
{
	static struct probe p;
	char only[PATH_MAX];
	const char *path = NULL;
	int ret;

	ret = status_args(argc, argv, only, sizeof(only), &path);
	if (ret >= 0)
		return ret;
	ret = probe_in_child(path, &p);
	if (ret)
		return ret;
	p.status[sizeof(p.status) - 1] = '\0';
	p.why[sizeof(p.why) - 1] = '\0';
	if (p.status[0])
		fputs(p.status, stdout);
	if (p.why[0])
		fprintf(stderr, "zenmlfs: status: %s\n", p.why);
	return p.code;
}
