/* SPDX-License-Identifier: MIT */
/*
 * The FUSE low-level callbacks over the tree.  The session's userdata is
 * the struct fs.
 */
#ifndef ZENMLFS_OPS_H
#define ZENMLFS_OPS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <sys/types.h>

#include "backend/api.h"

struct defer;
struct fs;
struct open_dirs;

extern const struct fuse_lowlevel_ops zen_ops;

/* A pool that runs requests which wait on the server (fs/defer.h): the
 * metadata's, or (token) the one for refresh writes. */
struct defer *ops_pool_new(bool token);
/* The mount's open directories (fs->dirs): the free frees those the
 * kernel never released. */
struct open_dirs *ops_dirs_new(void);
void ops_dirs_free(struct open_dirs *od);
/* Called once the kernel's INIT is answered (arg: ops_on_init's arg). */
void ops_on_init(struct fs *fs, void (*fn)(void *arg), void *arg);

/* The store's store_gone_fn (backend/store.h): an object the kernel may
 * still hold an entry for is gone; the entry is dropped. */
void ops_object_gone(void *arg, enum zkind kind, const char *parent,
		     const char *name);

#endif
