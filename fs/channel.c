// SPDX-License-Identifier: MIT
#include "fs/channel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fs/fs.h"

#include "backend/banned.h" /* always the last include */

struct channel {
	uint64_t init_unique; /* the INIT request's, once read */
	bool want_parallel;
};

struct channel *channel_new(void)
{
	return calloc(1, sizeof(struct channel));
}

void channel_free(struct channel *ch)
{
	free(ch);
}

/* The libfuse built with needs the INIT reply fixed (see channel.h). */
#define CHANNEL_FIX_INIT (FUSE_VERSION < CHANNEL_INIT_FIXED)

#if CHANNEL_FIX_INIT
/* The session's userdata is the struct fs (fs/ops.h). */
static struct channel *channel_of(void *userdata)
{
	return ((struct fs *)userdata)->chan;
}

static ssize_t ch_read(int fd, void *buf, size_t len, void *userdata)
{
	struct channel *ch = channel_of(userdata);
	const struct fuse_in_header *in = buf;
	ssize_t n = read(fd, buf, len);

	if (n >= (ssize_t)sizeof(*in) && in->opcode == FUSE_INIT)
		__atomic_store_n(&ch->init_unique, in->unique,
				 __ATOMIC_RELEASE);
	return n;
}

static ssize_t ch_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct channel *ch = channel_of(userdata);
	struct fuse_out_header *out = iov[0].iov_base;
	uint64_t init = __atomic_load_n(&ch->init_unique, __ATOMIC_ACQUIRE);

	if (init && count >= 2 && iov[0].iov_len == sizeof(*out) &&
	    out->unique == init && out->error == 0 &&
	    iov[1].iov_len >=
		    offsetof(struct fuse_init_out, flags) + sizeof(uint32_t) &&
	    __atomic_load_n(&ch->want_parallel, __ATOMIC_ACQUIRE))
		((struct fuse_init_out *)iov[1].iov_base)->flags |=
			FUSE_PARALLEL_DIROPS;
	return writev(fd, iov, count);
}
#endif

void channel_want_parallel_dirops(struct channel *ch, bool on)
{
	__atomic_store_n(&ch->want_parallel, on, __ATOMIC_RELEASE);
}

int channel_setup(struct fuse_session *se)
{
#if CHANNEL_FIX_INIT
	static const struct fuse_custom_io io = {
		.read = ch_read,
		.writev = ch_writev,
	};

	/* a newer libfuse than the headers said: it does it itself */
	if (fuse_version() >= CHANNEL_INIT_FIXED)
		return 0;
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
#else
	(void)se;
	return 0;
#endif
}

void channel_fds_snapshot(struct channel_fds *s)
{
	struct dirent *e;
	DIR *d;

	memset(s, 0, sizeof(*s));
	d = opendir("/proc/self/fd");
	if (!d)
		return;
	for (e = readdir(d); e; e = readdir(d)) {
		char *end;
		long n = strtol(e->d_name, &end, 10);

		if (*end == '\0' && n >= 0 && n < CHANNEL_FDS_MAX)
			s->open[n / 8] |= (unsigned char)(1u << (n % 8));
	}
	closedir(d);
}

static bool was_open(const struct channel_fds *s, int fd)
{
	return fd >= CHANNEL_FDS_MAX || (s->open[fd / 8] & (1u << (fd % 8)));
}

int channel_unmount_socket(int dev, const struct channel_fds *before)
{
	int found = -1;

	/* new since the snapshot, not /dev/fuse, a stream socket kept
	 * across exec (libfuse opens it without close-on-exec) */
	for (int fd = 0; fd < CHANNEL_FDS_MAX; fd++) {
		int type = 0;
		socklen_t len = sizeof(type);
		struct stat st;

		if (fd == dev || was_open(before, fd) || fstat(fd, &st) ||
		    !S_ISSOCK(st.st_mode) || fcntl(fd, F_GETFD) != 0 ||
		    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) ||
		    type != SOCK_STREAM)
			continue;
		if (found >= 0)
			return -1; /* not sure which: hold none */
		found = fd;
	}
	return found;
}
