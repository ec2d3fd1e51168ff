/* SPDX-License-Identifier: MIT */
/*
 * The ZenML API as the tree uses it: typed calls for the server, the
 * current user, devices, service accounts and API keys, and the compact
 * records they return.  This is the only place that spells a route, a
 * request body or a reply field; fs/ sees kinds, fields and records.
 *
 * A record (struct zrec) holds each field of one server object as the
 * text its attribute file shows (without the final newline): strings as
 * they are, booleans "1"/"0", times RFC 3339 UTC, integers in decimal.
 * Records and lists are immutable and reference-counted, so a reader can
 * hold one without a lock.
 *
 * Calls return 0 or -errno (docs/design.md, Errors) and fill the caller's
 * struct zen_err on failure.  A reply of the wrong shape is -EIO.
 */
#ifndef ZENMLFS_API_H
#define ZENMLFS_API_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/zenml.h"

struct secret;

/* The kinds of server object; what each is, is zkind_flags(), not its
 * place in this list. */
enum zkind {
	ZK_SERVER, /* GET /info */
	ZK_USER, /* the current user */
	ZK_DEVICE, /* listed by id */
	ZK_ACCOUNT, /* service accounts, listed by name */
	ZK_KEY, /* API keys of a service account, listed by name */
	ZK_NKINDS,
};

/*
 * What a kind is (a kind has exactly one of the first two):
 * ZKF_SINGLETON: one object, at its route (the server, the current user);
 * ZKF_LISTED: many objects, in a listing, each named by a path component;
 * ZKF_CHILD: listed under an object of another kind (a key under its
 * service account), so calls take that object's UUID.
 */
#define ZKF_SINGLETON 0x1
#define ZKF_LISTED 0x2
#define ZKF_CHILD 0x4
/* The flags of kind k; 0 for anything else (ZK_NKINDS: no object). */
unsigned zkind_flags(enum zkind k);

enum ftype {
	FT_STR,
	FT_BOOL, /* "1" / "0" */
	FT_TIME, /* RFC 3339 UTC */
	FT_INT,
};

#define ZF_FILE 0x1 /* an attribute file, and a key of info.json */
#define ZF_WORKSPACE 0x2 /* only a workspace's reply has it */
#define ZF_PRO 0x4 /* only the Pro management API's reply has it */

struct zfield {
	const char *name; /* the attribute file's name */
	const char *json; /* where in a reply: "body.status" (NULL: local) */
	enum ftype type;
	unsigned flags;
};

/* The fields of a kind, in file order. */
const struct zfield *zkind_fields(enum zkind k, size_t *n);
/* The index of a field by name, or -1. */
int zkind_field(enum zkind k, const char *name);
/*
 * Does the server z talks to serve kind k (field -1), and field of it?  A
 * workspace serves every kind; the Pro management API only the current
 * user (no server info, devices or service accounts), with its own
 * fields.  The tree shows only what is served.
 */
bool api_serves(struct zen *z, enum zkind k, int field);
/* "device", "service account", "API key", ... for messages. */
const char *zkind_name(enum zkind k);

struct zrec;
struct zrec *zrec_ref(struct zrec *r);
void zrec_unref(struct zrec *r); /* r may be NULL */
enum zkind zrec_kind(const struct zrec *r);
/* Field i's text, or NULL when the server has no value for it. */
const char *zrec_get(const struct zrec *r, int i);
/* By field name; NULL as above, or when the kind has no such field. */
const char *zrec_field(const struct zrec *r, const char *name);
/* The name it is listed by (a device's id, an account's name). */
const char *zrec_name(const struct zrec *r);
/* The object's UUID. */
const char *zrec_id(const struct zrec *r);
/* Bytes held, for accounting. */
size_t zrec_size(const struct zrec *r);
/* Did the reply leave out the object's metadata (not hydrated)?  Then
 * its fields under "metadata." are unknown, not empty. */
bool zrec_partial(const struct zrec *r);

/* A list of records of one kind with an index by name. */
struct zlist;
struct zlist *zlist_ref(struct zlist *l);
void zlist_unref(struct zlist *l); /* l may be NULL */
size_t zlist_len(const struct zlist *l);
const struct zrec *zlist_at(const struct zlist *l, size_t i);
/* The position of the record listed as name, or -1.  O(1). */
long zlist_find(const struct zlist *l, const char *name);
/* A new list: l with rec in place of its namesake, or appended. */
struct zlist *zlist_with(const struct zlist *l, struct zrec *rec);
/* A new list: l without the record listed as name. */
struct zlist *zlist_without(const struct zlist *l, const char *name);
size_t zlist_size(const struct zlist *l);

/* Parse one object of kind k (a reply or a list item); NULL when it is not
 * an object or has no usable name.  Exposed for the unit tests. */
struct zrec *zrec_parse(enum zkind k, const void *json_obj, const char *url);
/* Build a list from a JSON array of items (unit tests; api_list). */
struct zlist *zlist_parse(enum zkind k, const void *json_items);

/* GET /info (no auth): the server's record. */
int api_server(struct zen *z, struct zrec **out, struct zen_err *e);
/* GET /current-user (the management API: /users/me) with the session: who
 * the daemon is.  Also the
 * credential check: a revoked key, account or device fails here. */
int api_whoami(struct zen *z, struct zrec **out, struct zen_err *e);
/* GET /current-user with bearer instead of the session (no re-login): is
 * that session good?  (SIGHUP: a saved device session read again.) */
int api_whoami_as(struct zen *z, const struct secret *bearer, struct zrec **out,
		  struct zen_err *e);

/* Every page of the list of kind k (devices, accounts; keys of the account
 * with UUID parent). */
int api_list(struct zen *z, enum zkind k, const char *parent,
	     struct zlist **out, struct zen_err *e);
/* One object by its name or UUID (keys: of the account with UUID parent). */
int api_get(struct zen *z, enum zkind k, const char *parent,
	    const char *name_or_id, struct zrec **out, struct zen_err *e);
/*
 * Create an account (parent NULL) or an API key of the account with UUID
 * parent.  For a key, *value gets the new ZENKEY_ value (guarded memory).
 * *out: the new object.
 */
int api_create(struct zen *z, enum zkind k, const char *parent,
	       const char *name, struct zrec **out, struct secret **value,
	       struct zen_err *e);
/* (De)activate an account or a key (by UUID); *out: the object after. */
int api_set_active(struct zen *z, enum zkind k, const char *parent,
		   const char *id, bool on, struct zrec **out,
		   struct zen_err *e);
/* Lock or unlock a device; *out: the device after. */
int api_lock_device(struct zen *z, const char *id, bool lock, struct zrec **out,
		    struct zen_err *e);
/* Rotate a key, the old one valid for minutes more; *value: the new one. */
int api_rotate_key(struct zen *z, const char *parent, const char *id,
		   unsigned long minutes, struct zrec **out,
		   struct secret **value, struct zen_err *e);
/* Delete a device, an account or a key (by UUID). */
int api_delete(struct zen *z, enum zkind k, const char *parent, const char *id,
	       struct zen_err *e);

/* A new generic API token of lifetime seconds (guarded memory).  Checked
 * to be printable ASCII; its claims are the token engine's to judge.  The
 * management API mints none: its token is a new exchange of the key
 * (zen_exchange()), of the lifetime the server chooses. */
int api_token(struct zen *z, unsigned lifetime, struct secret **out,
	      struct zen_err *e);
/* Does api_token() take the lifetime asked for?  The management API's
 * tokens last what it chooses (expires_in). */
bool api_token_lifetime_asked(struct zen *z);

#endif
