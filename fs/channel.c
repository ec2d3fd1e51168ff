// SPDX-License-Identifier: MIT
#define FUSE_USE_VERSION 314
#include "fs/channel.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <unistd.h>

static uint64_t init_unique; /* the INIT request's, once read */
static bool want_parallel;

static ssize_t ch_read(int fd, void *buf, size_t len, void *userdata)
{
	const struct fuse_in_header *in = buf;
	ssize_t n = read(fd, buf, len);

	if (n >= (ssize_t)sizeof(*in) && in->opcode == FUSE_INIT)
		__atomic_store_n(&init_unique, in->unique, __ATOMIC_RELEASE);
	return n;
}

static ssize_t ch_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fuse_out_header *out = iov[0].iov_base;
	uint64_t init = __atomic_load_n(&init_unique, __ATOMIC_ACQUIRE);

	if (init && count >= 2 && iov[0].iov_len == sizeof(*out) &&
	    out->unique == init && out->error == 0 &&
	    iov[1].iov_len >=
		    offsetof(struct fuse_init_out, flags) + sizeof(uint32_t) &&
	    __atomic_load_n(&want_parallel, __ATOMIC_ACQUIRE))
		((struct fuse_init_out *)iov[1].iov_base)->flags |=
			FUSE_PARALLEL_DIROPS;
	return writev(fd, iov, count);
}

void channel_want_parallel_dirops(bool on)
{
	__atomic_store_n(&want_parallel, on, __ATOMIC_RELEASE);
}

int channel_setup(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {
		.read = ch_read,
		.writev = ch_writev,
	};

	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}
