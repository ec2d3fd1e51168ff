/* SPDX-License-Identifier: MIT */
/*
 * What every part of the tree shares: the mount's settings (struct fs,
 * made once by main and read-only after), a path matched against the node
 * table, and who is calling.
 */
#ifndef ZENMLFS_FS_H
#define ZENMLFS_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "backend/api.h"

struct token_engine;
struct store;
struct notifier;
struct defer;

/* The mount.  One instance, owned by main. */
struct fs {
	struct zen *zen;
	struct token_engine *te;
	struct store *store;
	/* metadata notifications (fs/notify.h); the token has its own */
	struct notifier *meta;
	/* requests that wait on the server (fs/defer.h): metadata's, and
	 * refresh writes' (the token's own) */
	struct defer *pool, *tpool;
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
