/* SPDX-License-Identifier: MIT */
/*
 * FUSE low-level operations over the tree, and the inode table.
 */
#ifndef ZENMLFS_OPS_H
#define ZENMLFS_OPS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

struct fs;

#define INO_TOKEN 2
#define INO_TOKEN_JSON 3

extern const struct fuse_lowlevel_ops zen_ops;

/* Set up the inode table; fs lives as long as the session. */
int ops_init(struct fs *fs);
void ops_release(void);

/* How many inode numbers are in use (1 .. count). */
fuse_ino_t ops_inode_count(void);
/* The inode number of a path the kernel knows, or 0. */
fuse_ino_t ops_ino_of(const char *path);
/* Mark every cached content of path and below stale (new mtime on the next
 * getattr).  path NULL: all. */
void ops_stale(const char *path);

#endif
