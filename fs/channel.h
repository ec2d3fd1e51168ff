/* SPDX-License-Identifier: MIT */
/*
 * Where libfuse needs help.
 *
 * The /dev/fuse channel, read and written by us rather than by libfuse,
 * for one reason: libfuse before 3.17 (3.14 is Debian 12's) never puts
 * FUSE_PARALLEL_DIROPS in its INIT reply, whatever the file system wants
 * (fixed upstream by "Pass FUSE_PARALLEL_DIROPS to kernel", first released
 * in libfuse 3.17.1).  Without it the kernel serialises every LOOKUP in a
 * directory, so one lookup waiting on a hanging server holds up every
 * other.  The INIT reply gets the flag when the kernel offered it and
 * op_init asked for it; every other message passes through untouched.
 * Built against libfuse 3.17 or later, or running on it, the channel is
 * libfuse's own (CHANNEL_FIX_INIT, channel_setup()).
 */
#ifndef ZENMLFS_CHANNEL_H
#define ZENMLFS_CHANNEL_H

#include <stdbool.h>

struct channel;
struct fuse_session;

/*
 * With auto_unmount, libfuse keeps a socket to fusermount3, which unmounts
 * when the socket closes, but only if opening the mount point then fails
 * with ENOTCONN.  A daemon killed while that socket closes before its
 * /dev/fuse descriptor (threads exit in any order) makes fusermount3's
 * open wait on the dying connection and fail with ECONNABORTED instead:
 * the dead mount stays.  channel_fds_snapshot() before
 * fuse_session_mount() and channel_unmount_socket() after it find that
 * socket (libfuse 3.14 keeps it and never says which it is), so that the
 * helper can hold a copy until the daemon is gone (fs/self.h).  Not gated
 * on a version: fusermount3 of libfuse 3.18 still unmounts on ENOTCONN
 * only, and no release says which descriptor is that socket.
 */
#define CHANNEL_FDS_MAX 1024
struct channel_fds {
	unsigned char open[CHANNEL_FDS_MAX / 8];
};
void channel_fds_snapshot(struct channel_fds *s);
/* The socket fuse_session_mount() opened besides dev (its /dev/fuse
 * descriptor), or -1 (no auto_unmount). */
int channel_unmount_socket(int dev, const struct channel_fds *before);

/* The libfuse that puts FUSE_PARALLEL_DIROPS in its INIT reply itself. */
#define CHANNEL_INIT_FIXED FUSE_MAKE_VERSION(3, 17)

/* What the channel of one mount remembers (fs->chan). */
struct channel *channel_new(void);
void channel_free(struct channel *ch);
/* After fuse_session_mount(): take over the channel's reads and writes,
 * when the libfuse built with and run on is older than
 * CHANNEL_INIT_FIXED (else nothing to do).  The session's userdata is
 * the struct fs that holds the channel. */
int channel_setup(struct fuse_session *se);
/* From op_init: ask for parallel lookups in the INIT reply. */
void channel_want_parallel_dirops(struct channel *ch, bool on);

#endif
