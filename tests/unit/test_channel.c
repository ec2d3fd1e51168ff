// SPDX-License-Identifier: MIT
/*
 * Finding fusermount3's auto_unmount socket among the descriptors
 * fuse_session_mount() opened (fs/channel.c).  No mount: the descriptors
 * are made here the way libfuse makes them.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fs/channel.h"

#include "tests/unit/check.h"

int main(void)
{
	struct channel_fds before;
	int dev, sv[2], cloexec[2], pipefd[2], dgram[2], two[2];

	/* older descriptors, sockets among them, never count */
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, cloexec) == 0);
	channel_fds_snapshot(&before);

	/* "the mount": /dev/fuse (close-on-exec) and the socket kept open */
	dev = open("/dev/null", O_RDWR | O_CLOEXEC);
	CHECK(dev >= 0);
	CHECK(channel_unmount_socket(dev, &before) == -1); /* none yet */
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	/* libfuse keeps one end; the other went to fusermount3 */
	close(sv[0]);
	CHECK(channel_unmount_socket(dev, &before) == sv[1]);

	/* descriptors that are not it: close-on-exec, not a stream, a pipe */
	CHECK(pipe(pipefd) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, dgram) == 0);
	CHECK(fcntl(dgram[0], F_SETFD, FD_CLOEXEC) == 0);
	close(dgram[1]);
	CHECK(channel_unmount_socket(dev, &before) == sv[1]);

	/* two candidates: hold none rather than the wrong one */
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, two) == 0);
	close(two[1]);
	CHECK(channel_unmount_socket(dev, &before) == -1);
	close(two[0]);
	CHECK(channel_unmount_socket(dev, &before) == sv[1]);
	return CHECK_DONE();
}
