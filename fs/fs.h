/* SPDX-License-Identifier: MIT */
/*
 * What every part of the tree shares: the mount (struct fs: its settings,
 * made once by main and read-only after, and the objects it owns), a path
 * matched against the node table, and who is calling.
 */
#ifndef ZENMLFS_FS_H
#define ZENMLFS_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "backend/api.h"
#include "backend/util.h"

struct token_engine;
struct store;
struct notifier;
struct defer;
struct itab;
struct publisher;
struct self;
struct newkeys;
struct hk;
struct channel;
struct open_dirs;

/*
 * The mount: everything fs/ keeps is here or in an object it owns.  One
 * instance, owned by main.  The server's side (zen, te, store) is made and
 * freed by main; the rest by fs_create() and fs_destroy() (fs/mount.h),
 * which joins every thread before it frees what the thread uses.
 */
struct fs {
	struct zen *zen;
	struct token_engine *te;
	struct store *store;
	/* metadata notifications (fs/notify.h); the token has its own */
	struct notifier *meta;
	/* requests that wait on the server (fs/defer.h): metadata's, and
	 * refresh writes' (the token's own) */
	struct defer *pool, *tpool;
	struct itab *itab; /* the inode table (fs/inode.h) */
	struct publisher *pub; /* the token as published (fs/publish.h) */
	struct self *self; /* the helper process (fs/self.h) */
	struct newkeys *newkeys; /* new key values (fs/newkeys.h) */
	struct hk *hk; /* the housekeeping thread (fs/housekeeping.h) */
	struct channel *chan; /* the /dev/fuse channel (fs/channel.h) */
	struct open_dirs *dirs; /* the directories open (fs/ops.h) */
	/* called once the kernel's INIT is answered (ops_on_init()) */
	void (*on_init)(void *arg);
	void *on_init_arg;
	uid_t uid, owner; /* files' owner (-o uid); the user who mounted */
	gid_t gid;
	mode_t token_mode; /* token, token.json */
	mode_t tree_mode; /* whoami/, devices/, service-accounts/ */
	unsigned meta_ttl, key_window;
	time_t mount_time;
	pid_t pid; /* the daemon's own */
	const char *mountpoint; /* absolute */
};

#define TREE_MAX_PARAMS 3
#define TREE_PARAM_MAX 256

struct node;

/* A path resolved against the table (fs/tree.c). */
struct match {
	const struct node *node;
	int nparams;
	char params[TREE_MAX_PARAMS][TREE_PARAM_MAX]; /* the '*' components */
	const char *leaf; /* the last component ("" for the root) */
	int field; /* '@' rows: the attribute's field index */
};

/* The server objects a match names, found: rec[i] is the object of
 * params[i] (a singleton's in rec[0]); n of them. */
struct objs {
	int n;
	struct zrec *rec[TREE_MAX_PARAMS];
	/* until when (CLOCK_MONOTONIC ms) all of them are fresh; 0: not */
	long long fresh_until;
};

/* Who is calling (from the FUSE request). */
struct caller {
	uid_t uid;
	gid_t gid;
	pid_t pid;
};

#endif
