// SPDX-License-Identifier: MIT
#define _GNU_SOURCE /* close_range */
#include "fs/self.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend/log.h"

#include "backend/banned.h" /* always the last include */

#define HELPER_FD 3
/* How long a caller waits for the helper's reply.  A rename of a new token
 * waits little: the publisher then switches the names itself (readers see
 * the same, watchers get no event).  The readiness read may wait longer.
 * A reply that comes later is dropped with its socket; the helper goes on
 * serving the next request. */
#define RENAME_TIMEOUT_MS 2000
#define READ_TIMEOUT_MS 10000
#define STAT_TIMEOUT_MS 10000
#define READ_MAX (64 * 1024)

/* How long the helper waits, once the daemon's end of its socket closed
 * without OP_QUIT, for the daemon to be gone (it then holds fusermount3's
 * socket no more). */
#define DEATH_WAIT_MS 10000

enum self_op { OP_STAT, OP_READ, OP_RENAME, OP_HOLD, OP_QUIT };

struct self_req {
	uint32_t op;
	uint64_t dev;
	char a[PATH_MAX];
	char b[PATH_MAX];
	char c[PATH_MAX];
};

struct self_rep {
	int32_t err; /* 0 or an errno */
	uint64_t dev;
	int64_t len;
};

/*
 * Each request carries a socket of its own for its reply, so no lock is
 * held while a caller waits: lock only orders the sends and protects fd;
 * a caller that gives up closes its end and a late reply goes nowhere.
 * cancel (an eventfd) wakes every waiter at a stop.
 */
struct self {
	pthread_mutex_t lock;
	int fd; /* our end of the helper's socket; -1: none */
	int cancel_fd;
	pid_t helper_pid; /* atomic access */
};

struct self *self_new(void)
{
	struct self *sf = calloc(1, sizeof(*sf));

	if (!sf)
		return NULL;
	pthread_mutex_init(&sf->lock, NULL);
	sf->fd = -1;
	sf->cancel_fd = -1;
	return sf;
}

void self_free(struct self *sf)
{
	if (!sf)
		return;
	self_stop(sf);
	pthread_mutex_destroy(&sf->lock);
	free(sf);
}

int self_start(struct self *sf)
{
	int sv[2], ret;
	pid_t pid;

	sf->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sf->cancel_fd < 0)
		return -errno;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return -errno;
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		close(sv[0]);
		close(sv[1]);
		return ret;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls from here to exec. */
		char *argv[] = { "zenmlfs", SELF_HELPER_ARG, NULL };
		char *envp[] = { NULL };
		int nul = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (nul < 0 || dup2(sv[1], HELPER_FD) < 0)
			_exit(127);
		dup2(nul, STDIN_FILENO);
		dup2(nul, STDOUT_FILENO);
		dup2(nul, STDERR_FILENO);
		close_range(HELPER_FD + 1, ~0U, 0);
		execve("/proc/self/exe", argv, envp);
		_exit(127);
	}
	close(sv[1]);
	pthread_mutex_lock(&sf->lock);
	sf->fd = sv[0];
	pthread_mutex_unlock(&sf->lock);
	__atomic_store_n(&sf->helper_pid, pid, __ATOMIC_RELEASE);
	return 0;
}

void self_cancel(struct self *sf)
{
	if (sf->cancel_fd >= 0)
		eventfd_write(sf->cancel_fd, 1);
}

void self_stop(struct self *sf)
{
	pid_t pid = __atomic_exchange_n(&sf->helper_pid, 0, __ATOMIC_ACQ_REL);
	struct timespec pause = { 0, 10 * 1000 * 1000 };
	struct self_req rq = { .op = OP_QUIT };

	self_cancel(sf);
	pthread_mutex_lock(&sf->lock);
	if (sf->fd >= 0) {
		/* a stop, not a death: it exits at once */
		send(sf->fd, &rq, sizeof(rq), MSG_NOSIGNAL | MSG_DONTWAIT);
		close(sf->fd);
	}
	sf->fd = -1;
	pthread_mutex_unlock(&sf->lock);
	if (pid > 0) {
		/* it exits at once unless it waits on a mount still up */
		for (int i = 0; i < 200; i++) {
			if (waitpid(pid, NULL, WNOHANG) != 0)
				goto reaped;
			nanosleep(&pause, NULL);
		}
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
reaped:
	if (sf->cancel_fd >= 0)
		close(sf->cancel_fd);
	sf->cancel_fd = -1;
}

bool self_is(struct self *sf, pid_t pid)
{
	pid_t h = __atomic_load_n(&sf->helper_pid, __ATOMIC_ACQUIRE);

	return h > 0 && pid == h;
}

/* Send rq with the descriptors pass[0..npass). */
static ssize_t send_req(int sock, struct self_req *rq, const int *pass,
			int npass)
{
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = rq, .iov_len = sizeof(*rq) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	memset(&u, 0, sizeof(u));
	msg.msg_control = u.buf;
	msg.msg_controllen = CMSG_SPACE(npass * sizeof(int));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(npass * sizeof(int));
	memcpy(CMSG_DATA(c), pass, npass * sizeof(int));
	return sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* The helper is gone (it crashed, or was killed): reap it, and every
 * later call fails at once. */
static void helper_died(struct self *sf)
{
	pid_t pid = __atomic_exchange_n(&sf->helper_pid, 0, __ATOMIC_ACQ_REL);

	close(sf->fd);
	sf->fd = -1;
	if (pid > 0)
		waitpid(pid, NULL, 0); /* its socket closed: it is exiting */
	log_warn("the mount helper is gone: folder watchers get no event "
		 "until the daemon restarts");
}

/* One request, one reply (on a socket of its own), waiting at most
 * timeout_ms or until self_cancel(). */
static int call(struct self *sf, struct self_req *rq, struct self_rep *rep,
		int pass, int timeout_ms)
{
	struct pollfd pfd[2] = { { .events = POLLIN },
				 { .fd = sf->cancel_fd, .events = POLLIN } };
	int rp[2], fds[2], ret;
	ssize_t n;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, rp))
		return -errno;
	fds[0] = rp[1];
	fds[1] = pass;
	pthread_mutex_lock(&sf->lock);
	if (sf->fd < 0) {
		ret = -ENOTCONN;
	} else {
		n = send_req(sf->fd, rq, fds, pass >= 0 ? 2 : 1);
		if (n == (ssize_t)sizeof(*rq))
			ret = 0;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			ret = -EBUSY; /* requests queued, unanswered */
		else
			ret = -EPIPE;
		if (ret == -EPIPE)
			helper_died(sf);
	}
	pthread_mutex_unlock(&sf->lock);
	close(rp[1]);
	if (ret)
		goto out;
	pfd[0].fd = rp[0];
	do
		ret = poll(pfd, 2, timeout_ms);
	while (ret < 0 && errno == EINTR);
	if (ret == 0) {
		ret = -ETIMEDOUT;
	} else if (ret < 0) {
		ret = -errno;
	} else if (!(pfd[0].revents & POLLIN)) {
		ret = pfd[1].revents ? -ECANCELED : -EPIPE;
	} else {
		n = recv(rp[0], rep, sizeof(*rep), 0);
		ret = n != (ssize_t)sizeof(*rep) ? -EPIPE :
		      rep->err			 ? -rep->err :
						   0;
	}
out:
	close(rp[0]);
	return ret;
}

static int set_path(char *dst, const char *src)
{
	size_t n = strlen(src);

	if (n >= PATH_MAX)
		return -ENAMETOOLONG;
	memcpy(dst, src, n + 1);
	return 0;
}

int self_stat_dev(struct self *sf, const char *path, dev_t *dev)
{
	struct self_req rq = { .op = OP_STAT };
	struct self_rep rep;
	int ret;

	ret = set_path(rq.a, path);
	if (ret)
		return ret;
	ret = call(sf, &rq, &rep, -1, STAT_TIMEOUT_MS);
	if (!ret)
		*dev = (dev_t)rep.dev;
	return ret;
}

long self_read(struct self *sf, const char *path)
{
	struct self_req rq = { .op = OP_READ };
	struct self_rep rep;
	int ret;

	ret = set_path(rq.a, path);
	if (ret)
		return ret;
	ret = call(sf, &rq, &rep, -1, READ_TIMEOUT_MS);
	return ret ? ret : (long)rep.len;
}

int self_rename(struct self *sf, const char *dir, dev_t dev, const char *from,
		const char *to)
{
	struct self_req rq = { .op = OP_RENAME, .dev = dev };
	struct self_rep rep;
	int ret;

	ret = set_path(rq.a, dir);
	if (!ret)
		ret = set_path(rq.b, from);
	if (!ret)
		ret = set_path(rq.c, to);
	return ret ? ret : call(sf, &rq, &rep, -1, RENAME_TIMEOUT_MS);
}

int self_hold(struct self *sf, int sock)
{
	struct self_req rq = { .op = OP_HOLD };
	struct self_rep rep;

	return call(sf, &rq, &rep, sock, STAT_TIMEOUT_MS);
}

/* ---- the helper ------------------------------------------------------ */

/* Receive one request, its reply socket in *reply (-1: none), and the
 * descriptor OP_HOLD carries (into *held, once). */
static ssize_t recv_req(struct self_req *rq, int *reply, int *held)
{
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = rq, .iov_len = sizeof(*rq) };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = u.buf,
		.msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *c;
	int got[2], ngot;
	ssize_t n;

	*reply = -1;
	n = recvmsg(HELPER_FD, &msg, MSG_CMSG_CLOEXEC);
	if (n <= 0)
		return n;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		ngot = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		if (ngot > 2)
			ngot = 2;
		memcpy(got, CMSG_DATA(c), ngot * sizeof(int));
		for (int i = 0; i < ngot; i++) {
			if (i == 0 && *reply < 0)
				*reply = got[i];
			else if (n == (ssize_t)sizeof(*rq) &&
				 rq->op == OP_HOLD && *held < 0)
				*held = got[i];
			else
				close(got[i]);
		}
	}
	return n;
}

/* The daemon's end closed without OP_QUIT: it is dying.  Once its last
 * thread is gone (this process is then re-parented) its /dev/fuse
 * descriptor is closed and the connection aborted; only then does the
 * held socket close, so fusermount3 finds ENOTCONN and unmounts. */
static void outlive(pid_t daemon, int held)
{
	struct timespec pause = { 0, 2 * 1000 * 1000 };

	if (held < 0)
		return;
	for (int i = 0; i < DEATH_WAIT_MS / 2 && getppid() == daemon; i++)
		nanosleep(&pause, NULL);
}

static void serve(const struct self_req *rq, struct self_rep *rep, int held)
{
	static char buf[READ_MAX];
	struct stat st;
	ssize_t n;
	int f;

	switch (rq->op) {
	case OP_STAT:
		if (stat(rq->a, &st))
			rep->err = errno;
		else
			rep->dev = st.st_dev;
		break;
	case OP_READ:
		f = open(rq->a, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		if (f < 0) {
			rep->err = errno;
			break;
		}
		n = read(f, buf, sizeof(buf));
		if (n < 0)
			rep->err = errno;
		else
			rep->len = n;
		close(f);
		explicit_bzero(buf, sizeof(buf));
		break;
	case OP_HOLD:
		if (held < 0)
			rep->err = EBADF;
		break;
	case OP_RENAME:
		/* only while the directory is still the mount it was */
		if (stat(rq->a, &st))
			rep->err = errno;
		else if ((uint64_t)st.st_dev != rq->dev)
			rep->err = ESTALE;
		else if (rename(rq->b, rq->c))
			rep->err = errno;
		break;
	default:
		rep->err = EINVAL;
	}
}

int self_helper_main(void)
{
	static struct self_req rq;
	pid_t daemon = getppid();
	struct self_rep rep;
	int reply, held = -1; /* OP_HOLD's descriptor */
	ssize_t n;

	/* No core, no ptrace.  It ends with the daemon: a stop says
	 * OP_QUIT; a death closes the daemon's end of the socket (recv()
	 * then says 0), even one before this line.  A request waiting on
	 * the mount when the daemon dies fails once the connection is
	 * aborted.  No PR_SET_PDEATHSIG: it would end this process as soon
	 * as the daemon's main thread is gone, maybe before its /dev/fuse
	 * descriptor, and release the held socket too early. */
	prctl(PR_SET_DUMPABLE, 0);
	prctl(PR_SET_NAME, "zenmlfs-helper");
	for (;;) {
		n = recv_req(&rq, &reply, &held);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			outlive(daemon, held);
			return 0;
		}
		if (n == (ssize_t)sizeof(rq) && rq.op == OP_QUIT)
			return 0;
		memset(&rep, 0, sizeof(rep));
		if (n != (ssize_t)sizeof(rq)) {
			rep.err = EINVAL;
		} else {
			rq.a[PATH_MAX - 1] = rq.b[PATH_MAX - 1] =
				rq.c[PATH_MAX - 1] = '\0';
			serve(&rq, &rep, held);
		}
		/* the caller may have given up: its socket is closed */
		if (reply >= 0) {
			send(reply, &rep, sizeof(rep),
			     MSG_NOSIGNAL | MSG_DONTWAIT);
			close(reply);
		}
	}
}
