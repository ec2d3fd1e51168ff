/* SPDX-License-Identifier: MIT */
/*
 * The metadata cache: lists and single objects from the server, as
 * compact records (backend/api.h), each at most meta_ttl old, fetched once
 * however many readers ask at the same moment.  Thread-safe; no lock is
 * held across a network call.
 *
 * Freshness: a list or an object is used for meta_ttl seconds after it was
 * fetched, whatever the access pattern; then the next look fetches it
 * again: a listing (ls) the whole list, a lookup of one name the object
 * alone (an O(1) find in a fresh listing, else one GET), never a list.
 *
 * A write through the tree puts the server's reply in place of the cached
 * object (store_update, store_remove): no list is dropped or fetched again.
 * A listing or an object whose fetch was in flight across such a write
 * lands with the write in it: what the server answered may predate it, so
 * an object made through the tree is never dropped, nor one removed put
 * back, by an older answer.
 *
 * A 404 is cached too: a name the server has no object for is absent for
 * meta_ttl (per kind, parent and name), so asking again sends nothing.  A
 * write through the tree that makes the name, or a listing fetched after
 * the 404 that has it, wins at once.  At most 4096 names are remembered
 * absent at a time (past that a 404 is not remembered); the sweep lets the
 * expired ones go.
 */
#ifndef ZENMLFS_STORE_H
#define ZENMLFS_STORE_H

#include <stddef.h>

#include "backend/api.h"

struct store *store_new(struct zen *z, unsigned ttl);
void store_free(struct store *s);

/*
 * The list of kind k (keys: of the account with UUID parent; else parent
 * is NULL): a new reference in *out.
 */
int store_list(struct store *s, enum zkind k, const char *parent,
	       struct zlist **out, struct zen_err *e);

/*
 * The object of kind k listed as name (server and current user: name
 * ignored): from a fresh listing (O(1)), a fresh object, or one GET of
 * that object alone, never a whole list.  -ENOENT when there is none.
 * *fresh_until (may be NULL): until when (CLOCK_MONOTONIC ms) the answer
 * is fresh, that is, younger than meta_ttl.  Nothing cached from it may
 * be trusted longer.
 */
int store_find(struct store *s, enum zkind k, const char *parent,
	       const char *name, struct zrec **out, long long *fresh_until,
	       struct zen_err *e);

/*
 * The object of kind k listed as name, for its name and UUID alone (a
 * path going through it to a child): from the identity map, which keeps
 * the last record seen of each object asked for here past meta_ttl,
 * without a request; else as store_find(), and remembered.  A name's
 * UUID rarely changes, so an expired account's key is one GET of the key,
 * with no list and no GET of the account.  *checked: the record was
 * confirmed within meta_ttl; when it was not and a child is not found
 * under it, the caller asks store_find() for the object itself (a 404
 * drops it from the map, a reply that names another UUID replaces it).
 */
int store_ident(struct store *s, enum zkind k, const char *parent,
		const char *name, struct zrec **out, bool *checked,
		struct zen_err *e);

/*
 * The object listed as name is gone, or no longer cached: a new listing
 * no longer has it (it was in the one before, or fetched alone), the
 * server answered 404 for a name the store knew (listed, or its record
 * cached, however old; a name never seen is not told), or store_sweep()
 * let it go (whoever keeps
 * something about it, such as the kernel's entry, may drop it too).  fn is
 * called without the store's lock held, from whichever thread learned it;
 * it must not call the store.
 */
typedef void store_gone_fn(void *arg, enum zkind k, const char *parent,
			   const char *name);
void store_on_gone(struct store *s, store_gone_fn *fn, void *arg);

/* rec is what the server now says (a create or update reply): it takes
 * the place of what is cached.  A reply that leaves fields out
 * (zrec_partial) is not cached: the next look fetches the object. */
void store_update(struct store *s, enum zkind k, const char *parent,
		  struct zrec *rec);
/* The object listed as name is gone. */
void store_remove(struct store *s, enum zkind k, const char *parent,
		  const char *name);

/* Drop what is expired and not in use; returns the bytes let go. */
size_t store_sweep(struct store *s);
/* The earliest time (CLOCK_MONOTONIC ms) from now on that anything
 * cached expires (a sweep may then let it go), 0: none. */
long long store_next_expiry(struct store *s);
/* Bytes held now. */
size_t store_bytes(struct store *s);

#endif
