/* SPDX-License-Identifier: MIT */
/*
 * The token as the kernel sees it.  Each token the engine mints is
 * published like a file renamed over "token": a new inode bound to that
 * token for good (fs/inode.h), and the old name dropped from the kernel's
 * dentry cache so the next open looks it up again.  Whoever holds the old
 * inode (an open fd, a single-file bind mount) keeps reading the token it
 * had, whole, until that token is within TOKEN_MARGIN of its expiry; then
 * its pages are dropped and its reads fail with EKEYEXPIRED.  When no
 * token may be served (the credential was revoked, the current token
 * expired), the pages of every token inode are dropped, so reads come to
 * the daemon and fail with the reason.
 */
#ifndef ZENMLFS_PUBLISH_H
#define ZENMLFS_PUBLISH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "fs/fs.h"

struct content;

struct fuse_session;
struct secret;

/* The token's names in the root (the node table's rows, fs/tree.c), and
 * the names a new token waits under before it is renamed over them (never
 * listed). */
#define TOKEN_NAME "token"
#define TOKEN_JSON_NAME "token.json"
#define TOKEN_STAGED ".token-new"
#define TOKEN_JSON_STAGED ".token.json-new"

/* The publisher of fs (fs->pub); publish_free() after publish_stop(). */
int publish_new(struct fs *fs);
void publish_free(struct fs *fs);
/* The token's own notifier thread (fs/notify.h), once the session is
 * mounted; publish_stop() ends it (nothing more reaches the kernel). */
int publish_start(struct fs *fs, struct fuse_session *se);
void publish_stop(struct fs *fs);
/* Publish the engine's first token (before the kernel can ask). */
int publish_first(struct fs *fs);
/* The token engine's on_change (arg: the struct fs). */
void publish_changed(void *arg);
/* Wait until the kernel was told about everything published so far (a
 * writer of "refresh" then reads the new token at once): true, or false
 * after SYNC_WAIT_MS. */
bool publish_sync(struct fs *fs);
/* The mount is up at path, on device dev (which tells it is still ours):
 * new tokens are published by a rename through it (fs/self.h). */
void publish_mounted(struct fs *fs, const char *path, dev_t dev);
/* A RENAME request: 0 when it is our own publication (the table is
 * switched), -EPERM for anything else. */
int publish_renamed(struct fs *fs, const struct caller *who, uint64_t parent,
		    const char *name, uint64_t newparent, const char *newname);
/* The daemon is stopping: token reads fail with ENOTCONN from now on and
 * the pages of every token inode are dropped, so a single-file bind or a
 * held fd that outlives the daemon gets an error, not a token from the
 * page cache that nothing would ever drop.  Waits until the kernel was
 * told (false: not within SYNC_WAIT_MS).  Call while the FUSE loop still
 * answers: a drop waits for a READ of the same page in flight. */
bool publish_withdraw(struct fs *fs);

/* The token of token inode ino, if it may be served now: a new
 * reference.  -ENOENT when ino is no token inode. */
int publish_read(struct fs *fs, uint64_t ino, struct secret **tok);
/* Size, publish time and whether ino was replaced, for stat. */
int publish_stat(struct fs *fs, uint64_t ino, size_t *len, struct timespec *at,
		 bool *retired);
/* token.json for the token of inode ino. */
int publish_render_json(struct fs *fs, uint64_t ino, struct content **out);
#endif
