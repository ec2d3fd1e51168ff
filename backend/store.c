// SPDX-License-Identifier: MIT
#include "backend/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/flight.h"
#include "backend/log.h"
#include "backend/util.h"
#include "backend/zenml.h"

#include "backend/banned.h" /* always the last include */

/*
 * The identity map: the last record seen of each object a path went
 * through to a child (an account whose keys were looked up), kept past
 * meta_ttl, for its name and UUID alone (see store_ident).  At most
 * IDENT_MAX at a time: past that the map starts again empty.
 */
#define IDENT_MAX 16384

/*
 * A 404 is a fact too: an object the server said it has no such name (or
 * that an rmdir through the tree removed) is remembered as absent for
 * meta_ttl, so asking again for a missing name sends nothing.  At most
 * NEG_MAX such names are remembered at once (the sweep lets the expired
 * ones go); past that a 404 is not remembered, and the next lookup asks
 * again.
 */
#define NEG_MAX 4096

/* A write through the tree made while its kind's listing was being
 * fetched: merged into what that fetch brings, which may predate it. */
struct wlog {
	char *name;
	struct zrec *rec; /* what the server said after; NULL: removed */
};

/* One list, or one object, of the server. */
struct entry {
	struct entry *next; /* hash chain */
	char *key; /* "kind:parent" (lists) or "kind:parent:name" */
	bool is_list;
	struct zlist *list;
	struct zrec *rec;
	long long fetched; /* CLOCK_MONOTONIC ms; 0: nothing yet */
	/* an object: the server has none of that name (since fetched) */
	bool absent;
	/* an object: bumped by each write through the tree, so that a
	 * fetch in flight across one yields to it (the write is newer) */
	unsigned long wgen;
	/* a listing: the writes made while it was being fetched */
	struct wlog *log;
	size_t nlog;
	/* a write could not be logged, or its reply did not say it all:
	 * the fetch in flight serves its callers but is not kept fresh */
	bool log_lost;
	/* a fetch in flight, how many wait for it, and the last one's
	 * error for them */
	struct flight f;
	int waiters;
	struct zen_err err;
};

/* A hash table of entries by key. */
struct table {
	struct entry **tab;
	size_t cap, n;
};

struct store {
	struct zen *zen;
	long long ttl_ms;
	/* lock protects everything below and every entry; done wakes the
	 * callers waiting for a fetch in flight. */
	pthread_mutex_t lock;
	pthread_cond_t done;
	struct table t; /* lists and objects */
	/* the identity map: entries with a record only, fetched: when it
	 * was last confirmed; not in bytes (at most IDENT_MAX records,
	 * most of them shared with a listing) */
	struct table ids;
	size_t bytes;
	size_t nneg; /* objects known absent (at most NEG_MAX) */
	store_gone_fn *gone_fn;
	void *gone_arg;
};

struct store *store_new(struct zen *z, unsigned ttl)
{
	struct store *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->t.cap = s->ids.cap = 64;
	s->t.tab = calloc(s->t.cap, sizeof(*s->t.tab));
	s->ids.tab = calloc(s->ids.cap, sizeof(*s->ids.tab));
	if (!s->t.tab || !s->ids.tab) {
		free(s->t.tab);
		free(s->ids.tab);
		free(s);
		return NULL;
	}
	s->zen = z;
	s->ttl_ms = ttl * 1000LL;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->done, NULL);
	return s;
}

void store_on_gone(struct store *s, store_gone_fn *fn, void *arg)
{
	pthread_mutex_lock(&s->lock);
	s->gone_fn = fn;
	s->gone_arg = arg;
	pthread_mutex_unlock(&s->lock);
}

/* Objects learned gone, collected under the lock, told after it. */
struct gone_one {
	enum zkind k;
	char *parent; /* NULL: none */
	char *name;
};

struct gone {
	size_t n, cap;
	struct gone_one *v;
};

static void gone_add(struct gone *g, enum zkind k, const char *parent,
		     const char *name)
{
	struct gone_one *v, *o;

	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 8;

		v = realloc(g->v, cap * sizeof(*v));
		if (!v)
			return; /* the kernel's entry then times out alone */
		g->v = v;
		g->cap = cap;
	}
	o = &g->v[g->n];
	o->k = k;
	o->name = strdup(name);
	o->parent = parent && *parent ? strdup(parent) : NULL;
	if (!o->name || (parent && *parent && !o->parent)) {
		free(o->name);
		free(o->parent);
		return;
	}
	g->n++;
}

/* Tell, and free.  Caller does not hold lock. */
static void gone_tell(struct store *s, struct gone *g)
{
	store_gone_fn *fn;
	void *arg;

	if (!g->n)
		return;
	pthread_mutex_lock(&s->lock);
	fn = s->gone_fn;
	arg = s->gone_arg;
	pthread_mutex_unlock(&s->lock);
	for (size_t i = 0; i < g->n; i++) {
		if (fn)
			fn(arg, g->v[i].k, g->v[i].parent, g->v[i].name);
		free(g->v[i].name);
		free(g->v[i].parent);
	}
	free(g->v);
	memset(g, 0, sizeof(*g));
}

static size_t entry_bytes(const struct entry *e)
{
	return (e->list ? zlist_size(e->list) : 0) +
	       (e->rec ? zrec_size(e->rec) : 0);
}

static void log_clear(struct entry *e)
{
	for (size_t i = 0; i < e->nlog; i++) {
		free(e->log[i].name);
		zrec_unref(e->log[i].rec);
	}
	free(e->log);
	e->log = NULL;
	e->nlog = 0;
}

static void entry_free(struct entry *e)
{
	log_clear(e);
	zlist_unref(e->list);
	zrec_unref(e->rec);
	free(e->key);
	free(e);
}

static void table_clear(struct table *t)
{
	for (size_t i = 0; i < t->cap; i++)
		while (t->tab[i]) {
			struct entry *e = t->tab[i];

			t->tab[i] = e->next;
			entry_free(e);
		}
	t->n = 0;
}

void store_free(struct store *s)
{
	if (!s)
		return;
	table_clear(&s->t);
	table_clear(&s->ids);
	free(s->t.tab);
	free(s->ids.tab);
	pthread_cond_destroy(&s->done);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static void make_key(char *buf, size_t size, enum zkind k, const char *parent,
		     const char *name)
{
	snprintf(buf, size, "%d:%s%s%s", (int)k, parent ? parent : "",
		 name ? ":" : "", name ? name : "");
}

/* Caller holds lock. */
static struct entry *find(const struct table *t, const char *key)
{
	struct entry *e = t->tab[hash_str(key) & (t->cap - 1)];

	while (e && strcmp(e->key, key))
		e = e->next;
	return e;
}

/* Caller holds lock. */
static void grow(struct table *t)
{
	size_t cap = t->cap * 2;
	struct entry **tab = calloc(cap, sizeof(*tab));

	if (!tab)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < t->cap; i++)
		while (t->tab[i]) {
			struct entry *e = t->tab[i];
			size_t j = hash_str(e->key) & (cap - 1);

			t->tab[i] = e->next;
			e->next = tab[j];
			tab[j] = e;
		}
	free(t->tab);
	t->tab = tab;
	t->cap = cap;
}

/* Caller holds lock. */
static struct entry *get(struct table *t, const char *key, bool is_list)
{
	struct entry *e = find(t, key);
	size_t i;

	if (e)
		return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->key = strdup(key);
	if (!e->key) {
		free(e);
		return NULL;
	}
	e->is_list = is_list;
	if (t->n >= t->cap)
		grow(t);
	i = hash_str(key) & (t->cap - 1);
	e->next = t->tab[i];
	t->tab[i] = e;
	t->n++;
	return e;
}

static bool fresh(const struct store *s, const struct entry *e, long long now)
{
	return e->fetched && now - e->fetched < s->ttl_ms;
}

/*
 * Mark object e absent since now (on) or not (off).  Past NEG_MAX absent
 * objects a new one is not remembered.  Returns whether e is absent now.
 * Caller holds lock.
 */
static bool set_absent(struct store *s, struct entry *e, bool on, long long now)
{
	if (on && !e->absent && s->nneg >= NEG_MAX)
		on = false;
	if (on != e->absent)
		s->nneg += on ? 1 : (size_t)-1;
	e->absent = on;
	if (on)
		e->fetched = now;
	return on;
}

/* Did the store know the object listed as name to exist: in the listing
 * (however old) or its own record?  Only such an object is "gone" when
 * the server no longer has it.  Caller holds lock. */
static bool known(struct store *s, const struct entry *o, enum zkind k,
		  const char *parent, const char *name)
{
	const struct entry *l;
	char key[128];

	if (o->rec)
		return true;
	make_key(key, sizeof(key), k, parent, NULL);
	l = find(&s->t, key);
	return l && l->list && zlist_find(l->list, name) >= 0;
}

/*
 * The fetch of e (backend/flight.h): true with the result of the one in
 * flight, waited for, in *ret (-ZEN_WOULD_WAIT for a caller that may not
 * wait); false when the caller is to fetch, then to call fetched().
 * Caller holds lock.
 */
static bool join(struct store *s, struct entry *e, int *ret,
		 struct zen_err *err)
{
	bool joined;

	if (!zen_may_wait()) {
		*ret = -ZEN_WOULD_WAIT;
		return true;
	}
	e->waiters++;
	joined = flight_join(&e->f, &s->lock, &s->done, NULL, ret);
	e->waiters--;
	if (joined && *ret && err)
		*err = e->err;
	return joined;
}

/* The fetch of e ended with ret: wake its waiters.  Caller holds lock. */
static void fetched(struct store *s, struct entry *e, int ret,
		    const struct zen_err *err)
{
	if (ret && err)
		e->err = *err;
	flight_land(&e->f, &s->done, ret);
}

/*
 * What a new listing no longer has: the names of the one it replaces, and
 * of objects of the same kind fetched alone.  Caller holds lock.
 */
static void gone_from_listing(struct store *s, enum zkind k, const char *parent,
			      const struct zlist *old, const struct zlist *new,
			      struct gone *g)
{
	char prefix[128];
	size_t plen;

	for (size_t i = 0, n = old ? zlist_len(old) : 0; i < n; i++) {
		const char *name = zrec_name(zlist_at(old, i));

		if (zlist_find(new, name) < 0)
			gone_add(g, k, parent, name);
	}
	make_key(prefix, sizeof(prefix), k, parent, "");
	plen = strlen(prefix);
	for (size_t i = 0; i < s->t.cap; i++)
		for (struct entry *e = s->t.tab[i]; e; e = e->next) {
			const char *name = e->key + plen;

			if (e->is_list || !e->rec ||
			    strncmp(e->key, prefix, plen))
				continue;
			if (zlist_find(new, name) < 0 &&
			    !(old && zlist_find(old, name) >= 0))
				gone_add(g, k, parent, name);
		}
}

/*
 * *l edited by a write through the tree: rec in place of its namesake (or
 * added), or, rec NULL, without the entry listed as name.  -ENOMEM: *l is
 * as it was (the caller must not keep it as the server's).
 */
static int list_apply(struct zlist **l, struct zrec *rec, const char *name)
{
	struct zlist *nl;

	if (!rec && zlist_find(*l, name) < 0)
		return 0;
	nl = rec ? zlist_with(*l, rec) : zlist_without(*l, name);
	if (!nl)
		return -ENOMEM;
	zlist_unref(*l);
	*l = nl;
	return 0;
}

/*
 * The listing l just fetched for e, with the writes made through the tree
 * while it was in flight put in: the server may have answered before
 * them, and a write's reply is newer than the listing's copy.  -ENOMEM:
 * one could not be put in.  The log is emptied.  Caller holds lock.
 */
static int merge_writes(struct entry *e, struct zlist **l)
{
	int ret = 0;

	for (size_t i = 0; i < e->nlog && !ret; i++)
		ret = list_apply(l, e->log[i].rec, e->log[i].name);
	log_clear(e);
	return ret;
}

/* A write through the tree: remember it on the listing being fetched, if
 * any (see merge_writes).  Caller holds lock. */
static void log_write(struct store *s, enum zkind k, const char *parent,
		      const char *name, struct zrec *rec)
{
	struct wlog *v;
	struct entry *e;
	char key[128];

	make_key(key, sizeof(key), k, parent, NULL);
	e = find(&s->t, key);
	if (!e || !e->f.busy)
		return;
	/* A reply that leaves fields out: what the fetch brings is not the
	 * server's whole answer after the write either. */
	if (rec && zrec_partial(rec))
		e->log_lost = true;
	v = realloc(e->log, (e->nlog + 1) * sizeof(*v));
	if (v) {
		e->log = v;
		v[e->nlog].name = strdup(name);
	}
	if (!v || !v[e->nlog].name) {
		/* Out of memory: the listing in flight is not kept. */
		e->log_lost = true;
		return;
	}
	v[e->nlog].rec = zrec_ref(rec);
	e->nlog++;
}

/*
 * The listing l (a new reference) fetched for e lands: the writes made
 * meanwhile put in, and what it no longer has is gone.  It serves this
 * fetch's callers, but is not fresh when a write could not be put in or
 * left fields out.  Caller holds lock.
 */
static void list_landed(struct store *s, struct entry *e, enum zkind k,
			const char *parent, struct zlist *l, struct gone *g)
{
	bool keep = !e->log_lost;

	if (merge_writes(e, &l))
		keep = false;
	if (s->gone_fn)
		gone_from_listing(s, k, parent, e->list, l, g);
	s->bytes -= entry_bytes(e);
	zlist_unref(e->list);
	e->list = l;
	e->fetched = keep ? mono_ms() : 0;
	s->bytes += entry_bytes(e);
}

int store_list(struct store *s, enum zkind k, const char *parent,
	       struct zlist **out, struct zen_err *err)
{
	struct zen_err le = { 0 };
	struct gone g = { 0 };
	struct zlist *l = NULL;
	char key[128];
	struct entry *e;
	int ret;

	make_key(key, sizeof(key), k, parent, NULL);
	pthread_mutex_lock(&s->lock);
	e = get(&s->t, key, true);
	if (!e) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	if (fresh(s, e, mono_ms()) && e->list) {
		ret = 0;
		goto take;
	}
	if (join(s, e, &ret, err)) {
		if (ret || !e->list)
			goto out;
		goto take;
	}
	pthread_mutex_unlock(&s->lock);

	ret = api_list(s->zen, k, parent, &l, &le);

	pthread_mutex_lock(&s->lock);
	if (!ret)
		list_landed(s, e, k, parent, l, &g);
	else if (err)
		*err = le;
	log_clear(e);
	e->log_lost = false;
	fetched(s, e, ret, &le);
	if (ret)
		goto out;
take:
	*out = zlist_ref(e->list);
out:
	pthread_mutex_unlock(&s->lock);
	gone_tell(s, &g);
	return ret;
}

/* ---- the identity map ------------------------------------------------- */

/* Drop the identity of (k, parent, name).  Caller holds lock. */
static void ident_drop(struct store *s, enum zkind k, const char *parent,
		       const char *name)
{
	struct entry **pp, *e;
	char key[640];

	make_key(key, sizeof(key), k, parent, name);
	pp = &s->ids.tab[hash_str(key) & (s->ids.cap - 1)];
	while (*pp && strcmp((*pp)->key, key))
		pp = &(*pp)->next;
	e = *pp;
	if (!e)
		return;
	*pp = e->next;
	s->ids.n--;
	entry_free(e);
}

/*
 * rec is what the server said of (k, parent, name) at at (CLOCK_MONOTONIC
 * ms): it replaces the identity the map holds (add: or is added).  Caller
 * holds lock.
 */
static void ident_put(struct store *s, enum zkind k, const char *parent,
		      const char *name, struct zrec *rec, bool add,
		      long long at)
{
	struct entry *e;
	char key[640];

	make_key(key, sizeof(key), k, parent, name);
	e = find(&s->ids, key);
	if (!e && !add)
		return;
	if (!e && s->ids.n >= IDENT_MAX)
		table_clear(&s->ids);
	e = e ? e : get(&s->ids, key, false);
	if (!e)
		return; /* not remembered: the next one finds it again */
	zrec_unref(e->rec);
	e->rec = zrec_ref(rec);
	e->fetched = at;
}

/* ---- objects ---------------------------------------------------------- */

static int fetch_one(struct store *s, enum zkind k, const char *parent,
		     const char *name, struct zrec **out, struct zen_err *e)
{
	switch (k) {
	case ZK_SERVER:
		return api_server(s->zen, out, e);
	case ZK_USER:
		return api_whoami(s->zen, out, e);
	default:
		return api_get(s->zen, k, parent, name, out, e);
	}
}

/*
 * A write through the tree changed o while a fetch of it was in flight
 * (o->wgen is no longer wgen): what the write left is newer than the
 * answer.  0: its record; -ENOENT: it removed the object; -EAGAIN: it
 * left nothing whole (a reply that did not say it all), ask again.  le is
 * set to match.  Caller holds lock.
 */
static int written_meanwhile(const struct entry *o, enum zkind k,
			     const char *name, struct zen_err *le)
{
	memset(le, 0, sizeof(*le));
	if (o->rec)
		return 0;
	if (o->absent) {
		zen_err_set(le, "no %s '%s'", zkind_name(k), name);
		return -ENOENT;
	}
	return -EAGAIN;
}

/*
 * Fetch the object of o alone (the caller's flight, see join()), and put what
 * the server said in o: a 404 is remembered (absent), and is news to
 * whoever keeps something about the object (store_on_gone) only when the
 * store knew it to exist.  -EAGAIN: a write through the tree came first
 * and left nothing usable, ask again.  Called with lock held; returns
 * with it held (not across the fetch).
 */
static int fetch_into(struct store *s, struct entry *o, enum zkind k,
		      const char *parent, const char *name, struct zen_err *le,
		      struct gone *g)
{
	unsigned long wgen = o->wgen;
	struct zrec *r = NULL;
	bool knew;
	int ret;

	pthread_mutex_unlock(&s->lock);
	ret = fetch_one(s, k, parent, name, &r, le);
	pthread_mutex_lock(&s->lock);
	if (o->wgen != wgen) {
		zrec_unref(r);
		ret = written_meanwhile(o, k, name, le);
		fetched(s, o, ret, le);
		return ret;
	}
	knew = known(s, o, k, parent, name);
	s->bytes -= entry_bytes(o);
	zrec_unref(o->rec);
	o->rec = ret ? NULL : r;
	o->fetched = ret ? 0 : mono_ms();
	set_absent(s, o, ret == -ENOENT && zkind_flags(k) & ZKF_LISTED,
		   mono_ms());
	s->bytes += entry_bytes(o);
	if (!ret)
		ident_put(s, k, parent, name, r, false, o->fetched);
	else if (ret == -ENOENT)
		ident_drop(s, k, parent, name);
	if (ret == -ENOENT && knew && s->gone_fn)
		gone_add(g, k, parent, name);
	fetched(s, o, ret, le);
	return ret;
}

/*
 * The newest fresh fact the store has about the object (k, parent,
 * name): its own (a GET, a write, a 404) or the listing's (O(1) by name).
 * true: *r is the record (NULL: absent) and *at when it was fetched.
 * *o: the object's entry, NULL when there is none.  Caller holds lock.
 */
static bool cached(struct store *s, enum zkind k, const char *parent,
		   const char *name, struct entry **o, struct zrec **r,
		   long long *at)
{
	long long now = mono_ms();
	struct entry *l;
	char key[640];
	long i;

	make_key(key, sizeof(key), k, parent, NULL);
	l = zkind_flags(k) & ZKF_LISTED ? find(&s->t, key) : NULL;
	if (l && !(l->list && fresh(s, l, now)))
		l = NULL;
	make_key(key, sizeof(key), k, parent, name);
	*o = find(&s->t, key);
	if (*o && fresh(s, *o, now) && (!l || (*o)->fetched >= l->fetched)) {
		*r = (*o)->rec;
		*at = (*o)->fetched;
		return true;
	}
	if (!l)
		return false;
	i = zlist_find(l->list, name);
	*r = i >= 0 ? (struct zrec *)zlist_at(l->list, (size_t)i) : NULL;
	*at = l->fetched;
	return true;
}

int store_find(struct store *s, enum zkind k, const char *parent,
	       const char *name, struct zrec **out, long long *fresh_until,
	       struct zen_err *err)
{
	struct gone g = { 0 };
	struct zen_err le = { 0 };
	struct zrec *r = NULL;
	long long at = 0;
	struct entry *o;
	char key[640];
	int ret;

	if (fresh_until)
		*fresh_until = 0;
	if (zkind_flags(k) & ZKF_SINGLETON)
		name = "";
	pthread_mutex_lock(&s->lock);
again:
	if (cached(s, k, parent, name, &o, &r, &at))
		goto take;
	make_key(key, sizeof(key), k, parent, name);
	o = o ? o : get(&s->t, key, false);
	if (!o) {
		ret = -ENOMEM;
		goto out;
	}
	if (join(s, o, &ret, err)) {
		if (ret == -EAGAIN)
			goto again;
		if (ret)
			goto out;
		r = o->rec; /* NULL: removed since */
		at = o->fetched;
		goto take;
	}
	ret = fetch_into(s, o, k, parent, name, &le, &g);
	if (ret == -EAGAIN)
		goto again; /* a write came first, and left nothing whole */
	if (ret) {
		if (err)
			*err = le;
		goto out;
	}
	r = o->rec;
	at = o->fetched;
take:
	ret = r ? 0 : -ENOENT;
	if (r) {
		*out = zrec_ref(r);
		if (fresh_until)
			*fresh_until = at + s->ttl_ms;
	} else {
		zen_err_set(err, "no %s '%s'", zkind_name(k), name);
	}
out:
	pthread_mutex_unlock(&s->lock);
	gone_tell(s, &g);
	return ret;
}

int store_ident(struct store *s, enum zkind k, const char *parent,
		const char *name, struct zrec **out, bool *checked,
		struct zen_err *err)
{
	struct zrec *r = NULL;
	long long at;
	struct entry *e;
	char key[640];
	int ret;

	pthread_mutex_lock(&s->lock);
	/* A fresh fact is better than the map, and confirms it. */
	if (cached(s, k, parent, name, &e, &r, &at)) {
		if (r)
			ident_put(s, k, parent, name, r, true, at);
		else
			ident_drop(s, k, parent, name);
		if (r)
			*out = zrec_ref(r);
		pthread_mutex_unlock(&s->lock);
		if (!r) {
			zen_err_set(err, "no %s '%s'", zkind_name(k), name);
			return -ENOENT;
		}
		*checked = true;
		return 0;
	}
	make_key(key, sizeof(key), k, parent, name);
	e = find(&s->ids, key);
	if (e) {
		*out = zrec_ref(e->rec);
		*checked = fresh(s, e, mono_ms());
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);
	ret = store_find(s, k, parent, name, out, &at, err);
	if (ret)
		return ret;
	pthread_mutex_lock(&s->lock);
	ident_put(s, k, parent, name, *out, true, at - s->ttl_ms);
	pthread_mutex_unlock(&s->lock);
	*checked = true;
	return 0;
}

/* The cached listing of k under parent, edited (list_apply); when not
 * keep (out of memory, or a reply that did not say it all), it is no
 * longer fresh: the next look fetches it again.  Caller holds lock. */
static void edit_listing(struct store *s, enum zkind k, const char *parent,
			 struct zrec *rec, const char *name)
{
	struct entry *e;
	char key[640];

	make_key(key, sizeof(key), k, parent, NULL);
	e = find(&s->t, key);
	if (!e || !e->list)
		return;
	s->bytes -= entry_bytes(e);
	if (list_apply(&e->list, rec, name) || (rec && zrec_partial(rec)))
		e->fetched = 0;
	s->bytes += entry_bytes(e);
}

/* The object entry of k/parent/name now holds rec (NULL: nothing, until
 * fetched again; absent: it is gone), written through the tree: a fetch
 * of it in flight yields.  Caller holds lock. */
static void set_object(struct store *s, enum zkind k, const char *parent,
		       const char *name, struct zrec *rec, bool absent)
{
	long long now = mono_ms();
	struct entry *e;
	char key[640];

	make_key(key, sizeof(key), k, parent, name);
	e = rec || (absent && s->nneg < NEG_MAX) ? get(&s->t, key, false) :
						   find(&s->t, key);
	if (!e)
		return;
	s->bytes -= entry_bytes(e);
	zrec_unref(e->rec);
	e->rec = zrec_ref(rec);
	e->fetched = rec ? now : 0;
	set_absent(s, e, absent, now);
	e->wgen++;
	s->bytes += entry_bytes(e);
}

void store_update(struct store *s, enum zkind k, const char *parent,
		  struct zrec *rec)
{
	const char *name = zrec_name(rec);

	pthread_mutex_lock(&s->lock);
	log_write(s, k, parent, name, rec);
	edit_listing(s, k, parent, rec, name);
	/* A reply that leaves fields out (a key's rotation) is not the
	 * object: the next look fetches it. */
	set_object(s, k, parent, name, zrec_partial(rec) ? NULL : rec, false);
	ident_put(s, k, parent, name, rec, false, mono_ms());
	pthread_mutex_unlock(&s->lock);
}

void store_remove(struct store *s, enum zkind k, const char *parent,
		  const char *name)
{
	pthread_mutex_lock(&s->lock);
	log_write(s, k, parent, name, NULL);
	edit_listing(s, k, parent, NULL, name);
	set_object(s, k, parent, name, NULL, true);
	ident_drop(s, k, parent, name);
	pthread_mutex_unlock(&s->lock);
}

/* What the kernel may forget with e: every name of a listing, or the one
 * object.  Caller holds lock. */
static void gone_swept(const struct entry *e, struct gone *g)
{
	char parent[128], *end;
	const char *p, *name;
	enum zkind k;
	size_t n;

	k = (enum zkind)strtol(e->key, &end, 10);
	p = *end == ':' ? end + 1 : end;
	name = strchr(p, ':');
	n = name ? (size_t)(name - p) : strlen(p);
	if (n >= sizeof(parent))
		return;
	memcpy(parent, p, n);
	parent[n] = '\0';
	if (e->list)
		for (size_t i = 0; i < zlist_len(e->list); i++)
			gone_add(g, k, parent, zrec_name(zlist_at(e->list, i)));
	else if (e->rec && name)
		gone_add(g, k, parent, name + 1);
}

size_t store_sweep(struct store *s)
{
	long long now = mono_ms();
	struct gone g = { 0 };
	size_t freed = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->t.cap; i++) {
		struct entry **pp = &s->t.tab[i];

		while (*pp) {
			struct entry *e = *pp;

			if (e->f.busy || e->waiters || fresh(s, e, now)) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			if (e->absent)
				s->nneg--;
			if (s->gone_fn)
				gone_swept(e, &g);
			freed += entry_bytes(e);
			s->bytes -= entry_bytes(e);
			s->t.n--;
			entry_free(e);
		}
	}
	pthread_mutex_unlock(&s->lock);
	gone_tell(s, &g);
	return freed;
}

long long store_next_expiry(struct store *s)
{
	long long next = 0, now = mono_ms(), t;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->t.cap; i++)
		for (struct entry *e = s->t.tab[i]; e; e = e->next) {
			t = e->fetched + s->ttl_ms;
			if (e->fetched && t > now && (!next || t < next))
				next = t;
		}
	pthread_mutex_unlock(&s->lock);
	return next;
}

size_t store_bytes(struct store *s)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	n = s->bytes;
	pthread_mutex_unlock(&s->lock);
	return n;
}
