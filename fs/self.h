/* SPDX-License-Identifier: MIT */
/*
 * The daemon's own trips through its mount, made by a helper process.
 *
 * Two things go through the mount itself: the readiness check reads the
 * token back once the kernel's INIT is answered, and each new token is
 * renamed over the old one (the kernel then tells inotify watchers of the
 * folder).  They are never made by a thread of the daemon: a FUSE request
 * the kernel has handed to the daemon is waited for uninterruptibly, so a
 * daemon killed (SIGKILL, OOM) while one of its own threads waits on its
 * own mount never exits (the thread waits for a reply only the dying
 * process could send, and its /dev/fuse descriptor, which would abort the
 * connection, stays open).  The helper is a separate process, made by
 * exec'ing the daemon's own binary (no secret of the daemon's memory comes
 * along): when the daemon dies its connection is aborted, the helper's
 * request fails, and the helper exits.
 *
 * Requests from the helper are told from a user's by its pid: it may
 * rename the staged token names in the root, and its reads do not count
 * as use of the token.
 */
#ifndef ZENMLFS_SELF_H
#define ZENMLFS_SELF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The hidden first argument that makes the binary the helper. */
#define SELF_HELPER_ARG "--self-helper"

struct self;

/* The helper's handle, not started (calls fail with -ENOTCONN); freeing
 * it stops the helper. */
struct self *self_new(void);
void self_free(struct self *sf);
/* Start the helper.  Call with no FUSE session open.  -errno when it
 * cannot be started: the callers then do without it. */
int self_start(struct self *sf);
/* Every call waiting for the helper returns -ECANCELED now, and every
 * later one at once (a stop). */
void self_cancel(struct self *sf);
/* Stop it (after the mount is gone) and reap it. */
void self_stop(struct self *sf);
/* Is the request's pid the helper? */
bool self_is(struct self *sf, pid_t pid);

/* The device of the file system at path (its root), through the helper. */
int self_stat_dev(struct self *sf, const char *path, dev_t *dev);
/*
 * Each call waits for the helper's reply at most a few seconds (a rename
 * 2 s, the others 10 s: -ETIMEDOUT); the helper goes on with the next
 * request either way.  A helper that died is reaped, and later calls fail
 * with -ENOTCONN.
 */
/* Read path (up to 64 KiB, the bytes are dropped): its length or -errno. */
long self_read(struct self *sf, const char *path);
/* rename(from, to) when dir is still on device dev; -ESTALE when not. */
int self_rename(struct self *sf, const char *dir, dev_t dev, const char *from,
		const char *to);

/*
 * Give the helper a copy of fusermount3's auto_unmount socket
 * (fs/channel.h): if the daemon dies, the helper closes it only once the
 * daemon is entirely gone, its connection aborted, so that fusermount3
 * then unmounts.
 */
int self_hold(struct self *sf, int sock);

/* The helper's main(): argv[1] is SELF_HELPER_ARG, fd 3 its socket. */
int self_helper_main(void);

#endif
