/* SPDX-License-Identifier: MIT */
/*
 * The tree: which path is which node, how a file renders and what a write,
 * mkdir or rmdir does.  One table (tree.c) describes every node; the FUSE
 * glue (ops.c) knows nothing of ZenML, only this interface.
 *
 * Rendering may call the server (metadata, through the cache) except for
 * nodes flagged NF_TOKEN, which ops.c serves from the token engine.
 */
#ifndef ZENMLFS_TREE_H
#define ZENMLFS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

struct zen;
struct token_engine;
struct cache;
struct secret;

/* Global state shared by the tree and the FUSE glue; set up by main. */
struct fs {
	struct zen *zen;
	struct token_engine *te;
	struct cache *cache;
	uid_t uid, owner; /* files' owner; the user who mounted */
	gid_t gid;
	mode_t token_mode;
	unsigned meta_ttl, key_window;
	time_t mount_time;
	/* Called by the tree when an inode's content changed outside a
	 * request for it (a key wiped, a list changed): path, may be NULL
	 * for "everything under the root".  Must not block. */
	void (*invalidate)(const char *path);
	/* Wait until a new token has reached the kernel's caches. */
	void (*sync_token)(void);
};

/* Node flags. */
#define NF_TOKEN 0x1 /* the token itself: served by ops.c from the engine */
#define NF_SECRET 0x2 /* content is secret: guarded memory */
#define NF_CTRL 0x4 /* control file: write handler, truncate ignored */
#define NF_STATIC 0x8 /* existence never changes: long entry timeout */

#define TREE_MAX_PARAMS 3
#define TREE_PARAM_MAX 256

struct node;

/* A path resolved against the table. */
struct match {
	const struct node *node;
	int nparams;
	char params[TREE_MAX_PARAMS][TREE_PARAM_MAX]; /* the '*' components */
	const char *leaf; /* the last component ("" for the root) */
};

/* Rendered file content, reference-counted so a reply can use it without
 * holding a lock. */
struct content {
	int refs;
	bool secret;
	size_t len;
	char *data;
};

struct content *content_new(size_t len, bool secret);
struct content *content_ref(struct content *c);
void content_unref(struct content *c);

/* A list of directory entry names. */
struct names {
	size_t n, cap;
	char **v;
	bool *is_dir;
};
void names_release(struct names *n);

/* Who is calling (from the FUSE request). */
struct caller {
	uid_t uid;
	gid_t gid;
	pid_t pid;
};

/* Resolve a path: 0, or -ENOENT when no node has that shape.  Whether the
 * named object exists is checked by tree_stat(). */
int tree_match(const char *path, struct match *m);

/* A node's type and mode for stat: S_IFDIR or S_IFREG | perms. */
mode_t tree_mode(struct fs *fs, const struct match *m);
unsigned tree_flags(const struct match *m);

/* Does the object exist?  For directories with a '*' component this may
 * ask the server (through the cache).  0 or -errno. */
int tree_exists(struct fs *fs, const struct match *m);

/* Render a regular file.  *out set on success. */
int tree_render(struct fs *fs, const struct match *m, struct content **out);

/* The children of a directory. */
int tree_list(struct fs *fs, const struct match *m, struct names *out);

/* Control actions, each checked for the caller's rights, logged, and done
 * on the server before returning. */
int tree_write(struct fs *fs, const struct match *m, const char *buf,
	       size_t len, const struct caller *who);
int tree_truncate(struct fs *fs, const struct match *m,
		  const struct caller *who);
int tree_mkdir(struct fs *fs, const struct match *m, const struct caller *who);
int tree_rmdir(struct fs *fs, const struct match *m, const struct caller *who);

#endif
