// SPDX-License-Identifier: MIT
/*
 * "zenmlfs status [MOUNTPOINT]": prints the mount's status file and exits
 * with what its state says, so it serves as a Kubernetes exec probe or in
 * a script.  Everything that touches the mount runs in a thread the
 * command stops waiting for after 2 s: a hung daemon makes it exit 3, not
 * hang.
 */
#include "fs/statuscmd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/service.h"

#define ANSWER_WAIT_S 2

struct probe {
	const char *path;
	char status[4096];
	char why[PATH_MAX + 128];
	int code;
	bool done;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

/* The only zenmlfs mount in this namespace, into buf. */
static int only_mount(char *buf, size_t size, char *why, size_t whysz)
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

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	char abs[PATH_MAX], file[PATH_MAX + 16];
	struct mnt_info mi;
	ssize_t n, len = 0;
	int fd, code = STATUS_UNKNOWN;

	if (!realpath(p->path, abs)) {
		snprintf(p->why, sizeof(p->why), "'%s': %s", p->path,
			 strerror(errno));
		goto out;
	}
	if (service_mount_at(abs, &mi) || strcmp(mi.fstype, "fuse.zenmlfs")) {
		snprintf(p->why, sizeof(p->why), "'%s' is not a zenmlfs mount",
			 abs);
		goto out;
	}
	snprintf(file, sizeof(file), "%s/status", abs);
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(p->why, sizeof(p->why), "'%s': %s", file,
			 strerror(errno));
		goto out;
	}
	while ((n = read(fd, p->status + len, sizeof(p->status) - 1 - len)) > 0)
		len += n;
	close(fd);
	p->status[len] = '\0';
	code = state_code(p->status);
	if (code == STATUS_UNKNOWN)
		snprintf(p->why, sizeof(p->why), "'%s' has no state line",
			 file);
out:
	pthread_mutex_lock(&p->lock);
	p->code = code;
	p->done = true;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int status_main(int argc, char **argv)
{
	static struct probe p = { .lock = PTHREAD_MUTEX_INITIALIZER,
				  .cond = PTHREAD_COND_INITIALIZER };
	char only[PATH_MAX], why[256];
	struct timespec until;
	pthread_t t;
	bool done;

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
		p.path = argv[1];
	} else if (only_mount(only, sizeof(only), why, sizeof(why))) {
		fprintf(stderr, "zenmlfs: status: %s\n", why);
		return STATUS_UNKNOWN;
	} else {
		p.path = only;
	}
	if (pthread_create(&t, NULL, probe_main, &p)) {
		fprintf(stderr, "zenmlfs: status: cannot start a thread\n");
		return STATUS_UNKNOWN;
	}
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ANSWER_WAIT_S;
	pthread_mutex_lock(&p.lock);
	while (!p.done && !pthread_cond_timedwait(&p.cond, &p.lock, &until))
		;
	done = p.done;
	pthread_mutex_unlock(&p.lock);
	if (!done) {
		fprintf(stderr,
			"zenmlfs: status: '%s' does not answer within %d s\n",
			p.path, ANSWER_WAIT_S);
		fflush(stderr);
		_exit(STATUS_UNKNOWN); /* the thread may be stuck in the mount */
	}
	pthread_join(t, NULL);
	if (p.status[0])
		fputs(p.status, stdout);
	if (p.why[0])
		fprintf(stderr, "zenmlfs: status: %s\n", p.why);
	return p.code;
}
