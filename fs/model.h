/* SPDX-License-Identifier: MIT */
/*
 * The server's objects as the tree shows them: each model names an object
 * (server info, current user, a device, a service account, an API key),
 * how to fetch it (through the metadata cache) and its attribute files.
 * Also the handlers of the device and service-account nodes.
 */
#ifndef ZENMLFS_MODEL_H
#define ZENMLFS_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "fs/tree.h"

enum atype {
	AT_STR, /* string as is */
	AT_BOOL, /* 1 / 0 */
	AT_TIME, /* RFC 3339 UTC */
	AT_INT,
	AT_URL, /* the URL the daemon talks to (not from the object) */
};

struct attr {
	const char *name;
	const char *path; /* "body.status": keys joined with '.' */
	enum atype type;
};

struct model {
	const struct attr *attrs; /* ends with { NULL } */
	/* The object for the match: a new reference in *out. */
	int (*fetch)(struct fs *fs, const struct match *m, json_t **out);
};

extern const struct model model_server, model_whoami, model_device, model_sa,
	model_key;

/* One attribute as file text (without the final newline). */
int model_attr_text(const struct model *md, json_t *obj, const char *name,
		    struct fs *fs, char *buf, size_t size);
/* All attributes as one JSON object (info.json); NULL when out of memory. */
json_t *model_info_json(const struct model *md, json_t *obj, struct fs *fs);

/* A cached GET: the reply of path, at most meta_ttl old. */
int model_get(struct fs *fs, const char *path, json_t **out);
/* A cached list: every item of path, at most meta_ttl old. */
int model_list(struct fs *fs, const char *path, json_t **items);
/* The value at a dotted path in obj, or NULL. */
json_t *model_value(json_t *obj, const char *path);

int names_add(struct names *n, const char *name, bool is_dir);

/* devices.c */
int devices_list(struct fs *fs, const struct match *m, struct names *out);
int device_exists(struct fs *fs, const struct match *m);
int device_rmdir(struct fs *fs, const struct match *m,
		 const struct caller *who);
int device_lock_render(struct fs *fs, const struct match *m,
		       struct content **out);
int device_lock_write(struct fs *fs, const struct match *m, const char *buf,
		      size_t len, const struct caller *who);

/* accounts.c */
int sa_list(struct fs *fs, const struct match *m, struct names *out);
int sa_exists(struct fs *fs, const struct match *m);
int sa_mkdir(struct fs *fs, const struct match *m, const struct caller *who);
int sa_rmdir(struct fs *fs, const struct match *m, const struct caller *who);
int sa_active_render(struct fs *fs, const struct match *m,
		     struct content **out);
int sa_active_write(struct fs *fs, const struct match *m, const char *buf,
		    size_t len, const struct caller *who);
int key_list(struct fs *fs, const struct match *m, struct names *out);
int key_exists(struct fs *fs, const struct match *m);
int key_mkdir(struct fs *fs, const struct match *m, const struct caller *who);
int key_rmdir(struct fs *fs, const struct match *m, const struct caller *who);
int key_active_render(struct fs *fs, const struct match *m,
		      struct content **out);
int key_active_write(struct fs *fs, const struct match *m, const char *buf,
		     size_t len, const struct caller *who);
int key_rotate_write(struct fs *fs, const struct match *m, const char *buf,
		     size_t len, const struct caller *who);
int key_secret_render(struct fs *fs, const struct match *m,
		      struct content **out);
/* Wipe new key values older than key_window; called once a second. */
void keys_expire(struct fs *fs);
void keys_release(void);

/* A '1\n' / '0\n' content. */
int content_bool(bool on, struct content **out);

#endif
