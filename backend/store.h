/* SPDX-License-Identifier: MIT */
/*
 * The metadata cache: lists and single objects from the server, as
 * compact records (backend/api.h), each at most meta_ttl old, fetched once
 * however many readers ask at the same moment.  Thread-safe; no lock is
 * held across a network call.
 *
 * Freshness: a list or an object is used for meta_ttl seconds after it was
 * fetched.  A walk over a listing (ls -l, cat *\/id, find) is served from
 * the listing it started with: opening the directory starts a walk, and
 * each lookup of an entry other than the one looked up just before keeps
 * it going for WALK_GAP_MS more (so a second pass, as cat makes after the
 * shell's glob, is part of it), and at least WALK_GAP_MS past the
 * listing's meta_ttl (until then the kernel keeps the entries it was
 * given, and no lookup reaches the daemon); the listing then serves
 * lookups even when
 * older than meta_ttl, up to WALK_MAX_S after it was fetched.  A reader
 * polling one file does not extend it, so what it sees is at most
 * meta_ttl + WALK_GAP_MS old; readers moving between names see at most
 * WALK_MAX_S.
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

#define WALK_GAP_MS 1000
#define WALK_MAX_S 60

struct store *store_new(struct zen *z, unsigned ttl);
void store_free(struct store *s);

/*
 * The list of kind k (keys: of the account with UUID parent; else parent
 * is NULL): a new reference in *out.  opening: a directory is being opened
 * (a fresh listing, and a walk starts).
 */
int store_list(struct store *s, enum zkind k, const char *parent, bool opening,
	       struct zlist **out, struct zen_err *e);

/*
 * The object of kind k listed as name (server and current user: name
 * ignored): from a usable listing (O(1)), a fresh object, or one GET of
 * that object alone, never a whole list (or of a child it has, see
 * store_hint).  -ENOENT when there is none.  whole: every field is wanted
 * (a record learned from a child lacks the metadata: zrec_partial).
 * *fresh_until (may be NULL): until when (CLOCK_MONOTONIC ms) the answer
 * is fresh, that is, younger than meta_ttl; 0 when it is only usable (a
 * walk's listing).  Nothing cached from it may be trusted longer.
 */
int store_find(struct store *s, enum zkind k, const char *parent,
	       const char *name, bool whole, struct zrec **out,
	       long long *fresh_until, struct zen_err *e);

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

/*
 * A lookup went from the object (k, name), whose UUID is id, to its child
 * (ck, cname) (an account's key).  The next time the object's record has
 * expired and the object is wanted but not whole, the child is fetched
 * instead: its reply names the object it belongs to (an API key's names
 * its account), and when that is still name with UUID id, it stands for
 * the object's own GET.  Else (a 404, another owner, any error the
 * server answers) the object is fetched alone after it; a server that does
 * not answer fails the object's lookup with it, with no second request to
 * wait out.  The
 * last few hints are kept, for minutes.
 */
void store_hint(struct store *s, enum zkind k, const char *name, const char *id,
		enum zkind ck, const char *cname);

/* rec is what the server now says (a create or update reply). */
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
