/* SPDX-License-Identifier: MIT */
/*
 * Kernel cache invalidation, always from this module's own thread (a FUSE
 * notification sent from inside a request handler can deadlock), and the
 * token as the kernel sees it: which token is published, and how a new
 * one replaces it without a reader ever seeing parts of two.
 */
#ifndef ZENMLFS_NOTIFY_H
#define ZENMLFS_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

struct fuse_session;
struct fs;
struct secret;

int notify_start(struct fuse_session *se, struct fs *fs);
void notify_stop(void);

/* Queue an invalidation of path's inode (data and attributes). */
void notify_path(const char *path);
/* The token engine's on_change callback. */
void notify_token_changed(void *arg);
/* Wait (up to 2 s) until every token change so far has reached the
 * kernel: a writer of "refresh" then reads the new token at once.  Never
 * call it from the notify thread. */
void notify_token_sync(void);

/*
 * The token for a READ: the published one (a new reference).  Errors as
 * token_engine_get().
 */
int notify_token_get(struct fs *fs, struct secret **tok);
/* Length of the published token, for getattr (never 0). */
size_t notify_token_len(void);
/* Bumped each time the published token changes (for mtime). */
uint64_t notify_token_gen(void);

#endif
