/* SPDX-License-Identifier: MIT */
/*
 * What the tree's control files and directories do: refresh the token,
 * lock a device, (de)activate an account or key, rotate a key, show a new
 * key's value, create and delete objects.  Each handler gets the objects
 * its path names already found (struct objs), checks nothing the table
 * already did (caller's rights, the value's syntax), logs the action with
 * the caller, calls the server through backend/api.h, and hands back the
 * object as the server now has it (tree.c puts it in the cache).
 */
#ifndef ZENMLFS_CONTROL_H
#define ZENMLFS_CONTROL_H

#include "fs/fs.h"

struct content;

/* A control value, parsed (tree.c): a boolean or a number. */
struct ctl_value {
	bool on;
	unsigned long long n;
};

typedef int ctl_write_fn(struct fs *fs, const struct match *m,
			 const struct objs *o, const struct ctl_value *v,
			 const struct caller *who, struct zrec **after);
typedef int ctl_render_fn(struct fs *fs, const struct match *m,
			  const struct objs *o, struct content **out);
typedef int ctl_mkdir_fn(struct fs *fs, const struct match *m,
			 const struct objs *parent, const struct caller *who,
			 struct zrec **created);
typedef int ctl_rmdir_fn(struct fs *fs, const struct match *m,
			 const struct objs *o, const struct caller *who);

ctl_write_fn ctl_refresh, ctl_lock, ctl_active, ctl_rotate;
ctl_render_fn render_status, render_metrics, render_lock, render_active,
	render_key_value;
ctl_mkdir_fn mkdir_account, mkdir_key;
ctl_rmdir_fn rmdir_object;

/* Is the new key file of m there (a value within key_window)? */
bool key_value_exists(struct fs *fs, const struct match *m,
		      const struct objs *o);

#endif
