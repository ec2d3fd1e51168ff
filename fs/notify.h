/* SPDX-License-Identifier: MIT */
/*
 * Notifications to the kernel's caches, always sent from this module's own
 * thread: a FUSE notification sent from inside a request handler can
 * deadlock (the kernel may hold a lock the notification needs until the
 * request is answered).  Callers queue them and, when they must know the
 * kernel got them, wait for their sequence number.
 */
#ifndef ZENMLFS_NOTIFY_H
#define ZENMLFS_NOTIFY_H

#include <stdint.h>

struct fuse_session;

int notify_start(struct fuse_session *se);
void notify_stop(void);

/* Drop the dentry name in directory parent if it points to child, and
 * mark child deleted (nlink 0): a new lookup finds the name's new inode.
 * Returns the sequence number of the notification. */
uint64_t notify_delete(uint64_t parent, uint64_t child, const char *name);
/* Drop the kernel's entry name in directory parent (its subtree too),
 * whatever inode it points to: the object is gone. */
uint64_t notify_entry(uint64_t parent, const char *name);
/* The sequence number of the last notification queued by this thread
 * (0: none yet). */
uint64_t notify_last_queued(void);
/* Drop the kernel's pages and attributes of ino. */
uint64_t notify_inval(uint64_t ino);
/* Run fn(arg) in the thread, in order with the notifications: for work
 * that makes the kernel call the daemon back (a rename through the
 * mount), which a request handler must never do. */
uint64_t notify_call(void (*fn)(struct fuse_session *se, void *arg), void *arg);
/* Wait (at most timeout_ms) until every notification up to seq was sent.
 * Returns at once before the thread starts.  Never from the thread. */
void notify_wait(uint64_t seq, int timeout_ms);

#endif
