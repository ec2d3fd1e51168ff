/* SPDX-License-Identifier: MIT */
/*
 * The inode table: which inode number stands for which path, how many
 * references the kernel holds (nlookup), and what each inode serves.
 *
 * A path has one current inode.  An inode is freed when the kernel has
 * forgotten it (nlookup 0) and nothing pins it; numbers are never reused.
 *
 * The token is published the way a rename replaces a file (fs/publish.c):
 * each new token gets a new inode for the name, bound to that token for
 * good; the inode it replaces is retired (nlink 0) and keeps serving the
 * token it was published with to whoever still holds it (an open fd, a
 * single-file bind mount), until that token is too close to expiry.  An
 * inode's token never changes, so no reader can see parts of two.
 *
 * Other files keep the content their last GETATTR rendered (a snapshot),
 * so the READs that follow serve exactly the bytes the kernel sized the
 * file for; a new content gets a new mtime, which makes the kernel drop
 * its pages (FUSE_CAP_AUTO_INVAL_DATA).
 *
 * Thread-safe; O(1) except where said.
 */
#ifndef ZENMLFS_INODE_H
#define ZENMLFS_INODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct content;
struct itab;
struct secret;

#define ITAB_ROOT 1

/* An empty table but for the root (ITAB_ROOT); NULL when out of memory. */
struct itab *itab_new(void);
void itab_free(struct itab *t);

/* The current inode of path (made if needed), with one more kernel
 * reference: for a LOOKUP/MKDIR reply.  0 or -ENOMEM. */
int itab_lookup(struct itab *t, const char *path, uint64_t *ino);
/* The kernel dropped n references; frees the inode when it can. */
void itab_forget(struct itab *t, uint64_t ino, uint64_t n);
/* The path of ino into buf: 0, -ESTALE (unknown), -ENAMETOOLONG. */
int itab_path(struct itab *t, uint64_t ino, char *buf, size_t size);
/* The current inode of path, 0 if none. */
uint64_t itab_ino_of(struct itab *t, const char *path);
/* An inode number for a directory entry: the current inode's, or a
 * stable number of its own when the kernel holds none. */
uint64_t itab_dirent_ino(struct itab *t, const char *path);
/* Is ino retired (its name has a newer inode)? */
bool itab_retired(struct itab *t, uint64_t ino);
/* How many inodes are in the table (tests, status). */
size_t itab_count(struct itab *t);

/* ---- the token ---- */

/*
 * Give path a new current inode bound to tok (a reference is taken),
 * pinned until the next publish.  The previous one is retired; its number
 * goes to *old (0 when there was none).  0 or -ENOMEM.
 */
int itab_publish(struct itab *t, const char *path, struct secret *tok,
		 int64_t exp, uint64_t *old);
/* The current inode of from becomes the current inode of to (a rename);
 * the one it replaces is retired, its number in *old (0: none). */
int itab_rename(struct itab *t, const char *from, const char *to,
		uint64_t *old);
/* The token ino was published with: a new reference, and its expiry and
 * publish time.  -ENOENT when ino is not a token inode. */
int itab_token(struct itab *t, uint64_t ino, struct secret **tok, int64_t *exp,
	       struct timespec *at);
/*
 * Token inodes whose token reaches expiry - margin at or before now and
 * whose pages were not yet dropped: their numbers into out (at most max),
 * marked dropped.  O(live token inodes).
 */
size_t itab_tokens_expiring(struct itab *t, time_t now, int margin,
			    uint64_t *out, size_t max);
/* Every live token inode (their pages must go: the token stopped being
 * servable).  O(live token inodes). */
size_t itab_tokens(struct itab *t, uint64_t *out, size_t max);
/* The earliest expiry - margin of a live token inode not yet dropped;
 * 0 when none. */
time_t itab_tokens_next(struct itab *t, int margin);

/* ---- snapshots ---- */

/*
 * Keep c (a reference is taken; NULL drops the snapshot) as what ino
 * serves; *mtime gets its mtime, new when the content changed.
 */
void itab_snap_set(struct itab *t, uint64_t ino, struct content *c,
		   struct timespec *mtime);
/*
 * A lookup rendered c for ino (the path's current inode, on which the
 * caller holds one new reference).  The content an inode has shown never
 * changes: when c differs from it, the path gets a new inode with c, the
 * caller's reference moves to it, and the old one keeps its content for
 * whoever holds it (an open file reads one rendering to its end).  *out
 * gets the inode the path now has, *mtime its mtime.  A secret (rendered
 * for every read) stays on ino.
 */
int itab_snap_bind(struct itab *t, uint64_t ino, struct content *c,
		   uint64_t *out, struct timespec *mtime);
/* What ino has shown (not a secret): a new reference and its mtime, or
 * NULL when it has shown nothing yet (or was written to since). */
struct content *itab_snap_shown(struct itab *t, uint64_t ino,
				struct timespec *mtime);
/* The snapshot of ino: a new reference, or NULL. */
struct content *itab_snap_get(struct itab *t, uint64_t ino);
/* Forget ino's snapshot and give it a new mtime (it was written to). */
void itab_snap_stale(struct itab *t, uint64_t ino);

#endif
