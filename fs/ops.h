/* SPDX-License-Identifier: MIT */
/*
 * FUSE low-level operations over the tree, and the inode table.
 */
#ifndef ZENMLFS_OPS_H
#define ZENMLFS_OPS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

struct fs;
struct content;

extern const struct fuse_lowlevel_ops zen_ops;

/* Set up the inode table; fs lives as long as the session. */
int ops_init(struct fs *fs);
void ops_release(void);

/*
 * Give path a new inode for later lookups; the old one keeps serving keep
 * (or its last content when keep is NULL) for a short grace period, so a
 * reader that holds it never sees parts of two contents.  keep: a new
 * reference is taken.
 */
int ops_retire(const char *path, struct content *keep);
/* Retired inodes whose grace ended: they follow the current content from
 * now on, and the kernel must drop what it cached for them. */
size_t ops_thaw(fuse_ino_t *out, size_t max);
/* The live (not frozen) inodes of path: the current one and any retired
 * one still held by the kernel, e.g. by a bind mount. */
size_t ops_inos_of(const char *path, fuse_ino_t *out, size_t max);

/* The live inodes at path or below (NULL or "/": all), in a malloc'd
 * array the caller frees; returns how many. */
size_t ops_inos_under(const char *path, fuse_ino_t **out);
/* The inode number of a path the kernel knows, or 0. */
fuse_ino_t ops_ino_of(const char *path);
/* Mark every cached content of path and below stale (new mtime on the next
 * getattr).  path NULL: all. */
void ops_stale(const char *path);

#endif
