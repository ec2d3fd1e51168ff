/* SPDX-License-Identifier: MIT */
/*
 * Notifications to the kernel's caches, always sent from a notifier's own
 * thread: a FUSE notification sent from inside a request handler can
 * deadlock (the kernel may hold a lock the notification needs until the
 * request is answered).  Callers queue them and, when they must know the
 * kernel got them, wait for their sequence number.
 *
 * The daemon runs two notifiers that never wait on each other: the
 * token's (fs/publish.c: publication, the drop of a token near expiry)
 * and the metadata's (fs/ops.c: entries of objects gone, files of objects
 * changed).  A metadata notification can wait in the kernel for as long
 * as a lookup in the same directory waits on the server; the token's
 * never queue behind one.  The metadata notifier also merges a
 * notification with an identical one still queued, so a burst of them
 * cannot grow the queue past the names and inodes involved.
 */
#ifndef ZENMLFS_NOTIFY_H
#define ZENMLFS_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

struct fuse_session;
struct notifier;

typedef void notify_fn(struct fuse_session *se, void *arg);

/* merge: fold a notification into an identical one still queued.  NULL
 * when out of memory. */
struct notifier *notifier_new(const char *name, bool merge);
int notifier_start(struct notifier *q, struct fuse_session *se);
/* Stop the thread (after the one notification it may be sending) and
 * drop what is still queued; waiters return.  q may be NULL. */
void notifier_stop(struct notifier *q);
void notifier_free(struct notifier *q);

/* Drop the dentry name in directory parent if it points to child, and
 * mark child deleted (nlink 0): a new lookup finds the name's new inode.
 * Returns the sequence number of the notification (0: not queued). */
uint64_t notify_delete(struct notifier *q, uint64_t parent, uint64_t child,
		       const char *name);
/* Drop the kernel's entry name in directory parent (its subtree too),
 * whatever inode it points to: the object is gone. */
uint64_t notify_entry(struct notifier *q, uint64_t parent, const char *name);
/* Drop the kernel's pages and attributes of ino. */
uint64_t notify_inval(struct notifier *q, uint64_t ino);
/* Run fn(arg) in the thread, in order with the notifications: for work
 * that makes the kernel call the daemon back (a rename through the
 * mount), which a request handler must never do. */
uint64_t notify_call(struct notifier *q, notify_fn *fn, void *arg);
/* The sequence number of the last notification queued (0: none). */
uint64_t notify_last(struct notifier *q);
/* Wait (at most timeout_ms) until every notification up to seq was sent.
 * Returns at once before the thread starts or once it stops; true when
 * they were sent.  Never from the thread itself. */
bool notify_wait(struct notifier *q, uint64_t seq, int timeout_ms);
/* Run fn(arg) in the thread at CLOCK_MONOTONIC time at_ms (mono_ms()),
 * ahead of anything queued; a later call replaces the timer, at_ms 0
 * cancels it. */
void notify_timer(struct notifier *q, notify_fn *fn, void *arg,
		  long long at_ms);

#endif
