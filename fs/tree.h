/* SPDX-License-Identifier: MIT */
/*
 * The tree: which path is which node, its mode, how a file renders and
 * what a write, mkdir or rmdir does.  One table (tree.c) describes every
 * node; the FUSE glue (ops.c) knows nothing of ZenML, only this interface.
 *
 * The table says what is the token (NF_TOKEN, NF_TOKEN_JSON: served from
 * the inode they were published on, fs/publish.h), what is secret, which
 * server object a path names (its kind), and which handler a control file
 * or directory runs (fs/control.h).  Every other file is an attribute of
 * an object and renders from its record (backend/api.h).  What a change
 * through the tree updates is derived from the match: the object it names.
 */
#ifndef ZENMLFS_TREE_H
#define ZENMLFS_TREE_H

#include "fs/fs.h"

struct content;

/* Node flags. */
#define NF_TOKEN 0x1 /* the token: fs/publish.h */
#define NF_TOKEN_JSON 0x2 /* token.json: fs/publish.h */
#define NF_SECRET 0x4 /* content is secret: guarded memory, owner only */
#define NF_CTRL 0x8 /* control file: write handler, truncate ignored */
#define NF_STATIC 0x10 /* existence never changes: long entry timeout */
#define NF_TRANSIENT 0x20 /* exists only while it has content (key) */
#define NF_HIDDEN 0x40 /* never listed (a token waiting to be renamed) */

/* Resolve a path: 0, or -ENOENT when no node has that shape.  Whether the
 * named object exists is checked by tree_exists(). */
int tree_match(const char *path, struct match *m);
/* The concrete path of a match (the pattern with its '*' filled in). */
void tree_path(const struct match *m, char *buf, size_t size);

/*
 * A path of kind k's objects, from the node table: leaf NULL, the
 * directory that lists them ("/devices"); "", an object's directory; else
 * the file leaf in it ("key").  params fill the '*' components, outermost
 * first (a key's file: its account's name, then its own).  0; -ENOENT
 * when no row has that shape (k is not listed, or has no such file);
 * -EINVAL when nparams is not the number of '*' in it; -ENAMETOOLONG.
 */
int tree_kind_path(enum zkind k, const char *leaf, const char *const *params,
		   int nparams, char *buf, size_t size);

/* The path of every file in the directory of the one object m names (m:
 * that directory or a file in it, one '*' component): fn(path, arg). */
void tree_object_files(const struct match *m,
		       void (*fn)(const char *path, void *arg), void *arg);

/* A node's type and mode for stat (S_IFDIR or S_IFREG | perms), owner. */
mode_t tree_mode(const struct fs *fs, const struct match *m);
uid_t tree_owner(const struct fs *fs, const struct match *m);
unsigned tree_flags(const struct match *m);
/* Does m name a server object (or a file of one)?  Not the token's files,
 * refresh, status. */
bool tree_names_object(const struct match *m);

/* Does the object exist?  May ask the server (through the store).
 * *fresh_until (may be NULL): until when (CLOCK_MONOTONIC ms) that answer
 * is fresh (backend/store.h); 0 when it must not be cached at all. */
int tree_exists(struct fs *fs, const struct match *m, long long *fresh_until);

/* Render a regular file.  *out set on success.  -EACCES for a write-only
 * file.  *fresh_until (may be NULL): as for tree_exists(). */
int tree_render(struct fs *fs, const struct match *m, struct content **out,
		long long *fresh_until);

/*
 * A directory's entries, taken once when it is opened: the fixed names
 * and, for a directory of server objects, the listing (a reference: it
 * stays what it was when opened while the directory is read).
 */
struct dir_fixed {
	const char *name; /* static: a row's or a field's */
	bool is_dir;
};
struct dir_snap {
	size_t nfixed, cap;
	struct dir_fixed *fixed; /* nfixed of them; tree_closedir() frees */
	struct zlist *list; /* NULL for a directory of fixed names */
};
/* *out is set up on success and must then be closed; on failure it holds
 * nothing. */
int tree_opendir(struct fs *fs, const struct match *m, struct dir_snap *out);
size_t tree_dir_len(const struct dir_snap *d);
/* Entry i: its name, and whether it is a directory. */
const char *tree_dir_entry(const struct dir_snap *d, size_t i, bool *is_dir);
void tree_closedir(struct dir_snap *d);

/* Control actions, each checked for the caller's rights, logged, and done
 * on the server before returning.  off: where the write lands. */
int tree_write(struct fs *fs, const struct match *m, const char *buf,
	       size_t len, off_t off, const struct caller *who);
int tree_truncate(struct fs *fs, const struct match *m,
		  const struct caller *who);
int tree_mkdir(struct fs *fs, const struct match *m, const struct caller *who);
int tree_rmdir(struct fs *fs, const struct match *m, const struct caller *who);

#endif
