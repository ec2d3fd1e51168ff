// SPDX-License-Identifier: MIT
#include "backend/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/log.h"
#include "backend/util.h"
#include "backend/zenml.h"

#include "backend/banned.h" /* always the last include */

/*
 * A child looked up under an object (a key of an account): when the
 * object's record has expired and it is asked for again, the child is
 * fetched instead, under the UUID the object had; the server's reply names
 * the object the child belongs to, name and UUID, which is all a lookup
 * of the object needs (a partial record: its files fetch it whole).  So
 * an expired "account/keys/k/active" is one GET before its PUT, not two.
 */
#define NHINTS 8
#define HINT_MS (10 * 60 * 1000LL)
#define HINT_NAME 128

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

struct hint {
	long long at; /* CLOCK_MONOTONIC ms; 0: unused */
	unsigned char k, ck;
	char name[HINT_NAME]; /* the object's */
	char id[UUID_BUF]; /* its UUID then */
	char cname[HINT_NAME]; /* the child's */
};

/* One list, or one object, of the server. */
struct entry {
	struct entry *next; /* hash chain */
	char *key; /* "kind:parent" (lists) or "kind:parent:name" */
	bool is_list;
	struct zlist *list;
	struct zrec *rec;
	long long fetched; /* CLOCK_MONOTONIC ms; 0: nothing yet */
	/* a walk: until when, and the entry it looked up last (-1: none) */
	long long walk_until;
	long last_i;
	/* an object a write changed, whose reply did not say it all: the
	 * listing's copy is out of date, fetch it alone */
	long long stale_at; /* 0: not stale */
	/* an object: the server has none of that name (since fetched) */
	bool absent;
	/* an object: bumped by each write through the tree, so that a
	 * fetch in flight across one yields to it (the write is newer) */
	unsigned long wgen;
	/* a listing: the writes made while it was being fetched */
	struct wlog *log;
	size_t nlog;
	bool log_lost; /* a write could not be logged: drop the fetch */
	/* a fetch in flight, and what the last one gave its waiters */
	bool fetching;
	int waiters;
	unsigned long gen;
	int result;
	struct zen_err err;
};

struct store {
	struct zen *zen;
	long long ttl_ms;
	/* lock protects everything below and every entry; done wakes the
	 * callers waiting for a fetch in flight. */
	pthread_mutex_t lock;
	pthread_cond_t done;
	struct entry **tab;
	size_t cap, n;
	size_t bytes;
	size_t nneg; /* objects known absent (at most NEG_MAX) */
	store_gone_fn *gone_fn;
	void *gone_arg;
	/* children looked up lately (see store_hint) */
	struct hint hints[NHINTS];
};

struct store *store_new(struct zen *z, unsigned ttl)
{
	struct store *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->cap = 64;
	s->tab = calloc(s->cap, sizeof(*s->tab));
	if (!s->tab) {
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

void store_free(struct store *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->cap; i++)
		while (s->tab[i]) {
			struct entry *e = s->tab[i];

			s->tab[i] = e->next;
			entry_free(e);
		}
	free(s->tab);
	free(s);
}

static void make_key(char *buf, size_t size, enum zkind k, const char *parent,
		     const char *name)
{
	snprintf(buf, size, "%d:%s%s%s", (int)k, parent ? parent : "",
		 name ? ":" : "", name ? name : "");
}

/* Caller holds lock. */
static struct entry *find(struct store *s, const char *key)
{
	struct entry *e = s->tab[hash_str(key) & (s->cap - 1)];

	while (e && strcmp(e->key, key))
		e = e->next;
	return e;
}

/* Caller holds lock. */
static void grow(struct store *s)
{
	size_t cap = s->cap * 2;
	struct entry **tab = calloc(cap, sizeof(*tab));

	if (!tab)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < s->cap; i++)
		while (s->tab[i]) {
			struct entry *e = s->tab[i];
			size_t j = hash_str(e->key) & (cap - 1);

			s->tab[i] = e->next;
			e->next = tab[j];
			tab[j] = e;
		}
	free(s->tab);
	s->tab = tab;
	s->cap = cap;
}

/* Caller holds lock. */
static struct entry *get(struct store *s, const char *key, bool is_list)
{
	struct entry *e = find(s, key);
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
	e->last_i = -1;
	if (s->n >= s->cap)
		grow(s);
	i = hash_str(key) & (s->cap - 1);
	e->next = s->tab[i];
	s->tab[i] = e;
	s->n++;
	return e;
}

static bool fresh(const struct store *s, const struct entry *e, long long now)
{
	return e->fetched && now - e->fetched < s->ttl_ms;
}

static bool usable(const struct store *s, const struct entry *e, long long now)
{
	return e->list &&
	       (fresh(s, e, now) || (now < e->walk_until &&
				     now - e->fetched < WALK_MAX_S * 1000LL));
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
	l = find(s, key);
	return l && l->list && zlist_find(l->list, name) >= 0;
}

/* A lookup of entry i of a listing in use: a name other than the one
 * looked up just before keeps the walk on (a second pass over the names,
 * as cat does after the shell's glob, counts; a reader polling one file
 * does not). */
static void progress(const struct store *s, struct entry *e, long i,
		     long long now)
{
	if (i == e->last_i)
		return;
	e->last_i = i;
	if (now >= e->walk_until)
		return;
	e->walk_until = now + WALK_GAP_MS;
	/* What the walk looked up is kept by the kernel while the listing
	 * is fresh (fs/ops.c: fresh_timeout), so no lookup may reach us
	 * until then: the walk goes on at least WALK_GAP_MS after. */
	if (fresh(s, e, now) &&
	    e->fetched + s->ttl_ms + WALK_GAP_MS > e->walk_until)
		e->walk_until = e->fetched + s->ttl_ms + WALK_GAP_MS;
}

/*
 * Wait for the fetch in flight on e to end.  Returns true with its result
 * in *ret when the caller can use it; false when the caller should fetch.
 * Caller holds lock.
 */
static bool join(struct store *s, struct entry *e, int *ret,
		 struct zen_err *err)
{
	unsigned long gen;

	if (!e->fetching)
		return false;
	if (!zen_may_wait()) {
		*ret = -ZEN_WOULD_WAIT;
		return true;
	}
	gen = e->gen;
	e->waiters++;
	while (e->fetching && e->gen == gen)
		pthread_cond_wait(&s->done, &s->lock);
	e->waiters--;
	*ret = e->result;
	if (*ret && err)
		*err = e->err;
	return true;
}

/* Mark a fetch done: wake its waiters.  Caller holds lock. */
static void fetched(struct store *s, struct entry *e, int ret,
		    const struct zen_err *err)
{
	e->fetching = false;
	e->result = ret;
	if (ret && err)
		e->err = *err;
	e->gen++;
	pthread_cond_broadcast(&s->done);
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
	for (size_t i = 0; i < s->cap; i++)
		for (struct entry *e = s->tab[i]; e; e = e->next) {
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
 * The listing l (a new reference, or NULL on error) just fetched for e,
 * with the writes made through the tree while it was in flight put in:
 * the server may have answered before them, and a write's reply is newer
 * than the listing's copy.  An object whose reply was partial is marked
 * stale past the listing (fetched at now), so its next lookup asks for
 * it alone.  The log is emptied.  Caller holds lock.
 */
static int merge_writes(struct store *s, struct entry *e, enum zkind k,
			const char *parent, struct zlist **l, long long now)
{
	int ret = 0;

	for (size_t i = 0; i < e->nlog && *l && !ret; i++) {
		const struct wlog *w = &e->log[i];
		struct zlist *nl;
		struct entry *o;
		char key[640];

		if (!w->rec && zlist_find(*l, w->name) < 0)
			continue;
		nl = w->rec ? zlist_with(*l, w->rec) :
			      zlist_without(*l, w->name);
		if (!nl) {
			ret = -ENOMEM; /* rather than a listing that lies */
			break;
		}
		zlist_unref(*l);
		*l = nl;
		make_key(key, sizeof(key), k, parent, w->name);
		o = w->rec && zrec_partial(w->rec) ? find(s, key) : NULL;
		if (o)
			o->stale_at = now;
	}
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
	e = find(s, key);
	if (!e || !e->fetching)
		return;
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

int store_list(struct store *s, enum zkind k, const char *parent, bool opening,
	       struct zlist **out, struct zen_err *err)
{
	struct zen_err le = { 0 };
	struct gone g = { 0 };
	struct zlist *l = NULL;
	char key[128];
	struct entry *e;
	long long now;
	int ret;

	make_key(key, sizeof(key), k, parent, NULL);
	pthread_mutex_lock(&s->lock);
	e = get(s, key, true);
	if (!e) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	now = mono_ms();
	if (fresh(s, e, now) && e->list) {
		ret = 0;
		goto take;
	}
	if (join(s, e, &ret, err)) {
		if (ret || !e->list)
			goto out;
		goto take;
	}
	if (!zen_may_wait()) {
		ret = -ZEN_WOULD_WAIT;
		goto out;
	}
	e->fetching = true;
	pthread_mutex_unlock(&s->lock);

	ret = api_list(s->zen, k, parent, &l, &le);

	pthread_mutex_lock(&s->lock);
	now = mono_ms();
	if (!ret && e->log_lost)
		ret = -ENOMEM;
	else if (!ret)
		ret = merge_writes(s, e, k, parent, &l, now);
	if (ret == -ENOMEM && le.msg[0] == '\0')
		zen_err_set(&le, "listing %s: out of memory", zkind_name(k));
	log_clear(e);
	e->log_lost = false;
	if (!ret) {
		if (s->gone_fn)
			gone_from_listing(s, k, parent, e->list, l, &g);
		s->bytes -= entry_bytes(e);
		zlist_unref(e->list);
		e->list = l;
		e->fetched = now;
		e->walk_until = 0;
		e->last_i = -1;
		s->bytes += entry_bytes(e);
	} else {
		zlist_unref(l);
		if (err)
			*err = le;
	}
	fetched(s, e, ret, &le);
	if (ret)
		goto out;
take:
	if (opening) {
		/* A new walk over this listing. */
		now = mono_ms();
		e->walk_until = now + WALK_GAP_MS;
		e->last_i = -1;
	}
	*out = zlist_ref(e->list);
out:
	pthread_mutex_unlock(&s->lock);
	gone_tell(s, &g);
	return ret;
}

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
 * left nothing whole (a partial reply), ask again.  le is set to match.
 * Caller holds lock.
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
 * Fetch the object of o alone, o->fetching set by the caller, and put what
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
	if (!ret)
		o->stale_at = 0;
	s->bytes += entry_bytes(o);
	if (ret == -ENOENT && knew && s->gone_fn)
		gone_add(g, k, parent, name);
	fetched(s, o, ret, le);
	return ret;
}

/* ---- an object learned from its child ------------------------------- */

static bool hint_is(const struct hint *h, enum zkind k, const char *name,
		    enum zkind ck, const char *cname)
{
	return h->k == k && h->ck == ck && !strcmp(h->name, name) &&
	       !strcmp(h->cname, cname);
}

void store_hint(struct store *s, enum zkind k, const char *name, const char *id,
		enum zkind ck, const char *cname)
{
	long long now = mono_ms();
	struct hint *h, *slot = NULL;

	if (!id || strlen(name) >= HINT_NAME || strlen(cname) >= HINT_NAME ||
	    strlen(id) >= sizeof(h->id))
		return;
	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < NHINTS; i++) {
		h = &s->hints[i];
		if (h->at && hint_is(h, k, name, ck, cname)) {
			slot = h;
			break;
		}
		if (!slot || h->at < slot->at)
			slot = h; /* the oldest, or an unused one */
	}
	slot->at = now;
	slot->k = (unsigned char)k;
	slot->ck = (unsigned char)ck;
	/* the lengths were checked above: nothing is cut */
	strlcpy_z(slot->name, name, sizeof(slot->name));
	strlcpy_z(slot->id, id, sizeof(slot->id));
	strlcpy_z(slot->cname, cname, sizeof(slot->cname));
	pthread_mutex_unlock(&s->lock);
}

/* The latest hint for (k, name) still worth a try.  Caller holds lock. */
static const struct hint *hint_for(const struct store *s, enum zkind k,
				   const char *name, long long now)
{
	const struct hint *best = NULL;

	for (int i = 0; i < NHINTS; i++) {
		const struct hint *h = &s->hints[i];

		if (h->at && now - h->at <= HINT_MS && h->k == k &&
		    !strcmp(h->name, name) && (!best || h->at > best->at))
			best = h;
	}
	return best;
}

/*
 * Fetch the object of o (o->fetching set by the caller) through the child
 * h names.  0: the child's reply names the object as h says (both are in,
 * the object partial).  -EAGAIN: the server answered otherwise (a 404,
 * another owner, an error status): nothing kept, the caller fetches the
 * object alone.  Another error: no answer (down, timed out, cut off): the
 * object's fetch fails with it, as fetch_into would have it, with no
 * second request to wait out.
 * Called with lock held; returns with it held (not across the fetch).
 */
static int fetch_via_child(struct store *s, struct entry *o, enum zkind k,
			   const char *name, const struct hint *h,
			   struct zen_err *le)
{
	struct zrec *cr = NULL, *pr = NULL;
	char id[sizeof(h->id)], cname[HINT_NAME], ckey[640];
	enum zkind ck = (enum zkind)h->ck;
	unsigned long wgen = o->wgen;
	long long now;
	struct entry *c;
	int ret;

	/* as large as the hint's own, terminated, fields: nothing is cut */
	strlcpy_z(id, h->id, sizeof(id));
	strlcpy_z(cname, h->cname, sizeof(cname));
	make_key(ckey, sizeof(ckey), ck, id, cname);
	c = get(s, ckey, false);
	if (!c || c->fetching)
		return -EAGAIN;
	c->fetching = true;
	pthread_mutex_unlock(&s->lock);
	ret = api_get_child(s->zen, ck, id, cname, &cr, &pr, le);
	pthread_mutex_lock(&s->lock);
	if (o->wgen != wgen) {
		/* The object was written meanwhile: that is newer. */
		zrec_unref(cr);
		zrec_unref(pr);
		fetched(s, c, -EAGAIN, NULL);
		ret = written_meanwhile(o, k, name, le);
		if (ret != -EAGAIN)
			fetched(s, o, ret, le);
		return ret;
	}
	if (!ret && !(pr && zrec_id(pr) && !strcmp(zrec_id(pr), id) &&
		      zrec_name(pr) && !strcmp(zrec_name(pr), name)))
		ret = -EAGAIN; /* it belongs to another now */
	else if (ret == -ENOENT || (ret && le->status))
		ret = -EAGAIN;
	if (ret == -EAGAIN) {
		/* Gone, renamed, made again: the hint is no use any more;
		 * whoever waits on the child asks again. */
		for (int i = 0; i < NHINTS; i++)
			if (hint_is(&s->hints[i], k, name, ck, cname))
				s->hints[i].at = 0;
		log_debug("%s '%s' by its %s '%s': %s; asking for it alone",
			  zkind_name(k), name, zkind_name(ck), cname,
			  le->status ? le->msg : "it belongs to another now");
		memset(le, 0, sizeof(*le));
		zrec_unref(cr);
		zrec_unref(pr);
		fetched(s, c, -EAGAIN, NULL);
		return -EAGAIN;
	}
	now = mono_ms();
	s->bytes -= entry_bytes(c) + entry_bytes(o);
	zrec_unref(c->rec);
	c->rec = ret ? NULL : cr;
	c->fetched = ret ? 0 : now;
	zrec_unref(o->rec);
	o->rec = ret ? NULL : pr;
	o->fetched = ret ? 0 : now;
	set_absent(s, o, false, now);
	if (!ret)
		c->stale_at = o->stale_at = 0;
	s->bytes += entry_bytes(c) + entry_bytes(o);
	fetched(s, c, ret, le);
	fetched(s, o, ret, le);
	return ret;
}

int store_find(struct store *s, enum zkind k, const char *parent,
	       const char *name, bool whole, struct zrec **out,
	       long long *fresh_until, struct zen_err *err)
{
	long long until = 0;
	struct gone g = { 0 };
	struct zen_err le = { 0 };
	struct zrec *r = NULL;
	struct entry *le_list, *o;
	const struct hint *h;
	char key[640];
	long long now;
	long i;
	int ret;

	if (fresh_until)
		*fresh_until = 0;
	if (zkind_flags(k) & ZKF_SINGLETON)
		name = "";
	pthread_mutex_lock(&s->lock);
again:
	now = mono_ms();
	make_key(key, sizeof(key), k, parent, NULL);
	le_list = zkind_flags(k) & ZKF_LISTED ? find(s, key) : NULL;
	make_key(key, sizeof(key), k, parent, name);
	o = find(s, key);
	/* A partial record (learned from a child) is newer than the
	 * listing, but not enough for whole. */
	if (le_list && usable(s, le_list, now) &&
	    !(o && o->stale_at >= le_list->fetched) &&
	    !(whole && o && o->rec && zrec_partial(o->rec) &&
	      o->fetched > le_list->fetched)) {
		i = zlist_find(le_list->list, name);
		if (i >= 0) {
			progress(s, le_list, i, now);
			r = (struct zrec *)zlist_at(le_list->list, (size_t)i);
			if (fresh(s, le_list, now))
				until = le_list->fetched + s->ttl_ms;
		}
		/* An object fetched alone after the listing is newer. */
		if (o && o->rec && o->fetched > le_list->fetched &&
		    fresh(s, o, now)) {
			r = o->rec;
			until = o->fetched + s->ttl_ms;
		}
		ret = r ? 0 : -ENOENT;
		if (!r)
			zen_err_set(err, "no %s '%s'", zkind_name(k), name);
		goto take;
	}
	o = get(s, key, false);
	if (!o) {
		ret = -ENOMEM;
		goto out;
	}
	if (o->rec && fresh(s, o, now) && !(whole && zrec_partial(o->rec))) {
		r = o->rec;
		until = o->fetched + s->ttl_ms;
		ret = 0;
		goto take;
	}
	/* Known absent, and no listing since says otherwise. */
	if (o->absent && fresh(s, o, now) &&
	    !(le_list && le_list->list && le_list->fetched > o->fetched)) {
		zen_err_set(err, "no %s '%s'", zkind_name(k), name);
		ret = -ENOENT;
		goto take;
	}
	if (join(s, o, &ret, err)) {
		if (ret == -ZEN_WOULD_WAIT)
			goto out;
		r = o->rec;
		/* a fetch through a child that did not count, or a partial
		 * record where the whole one is wanted */
		if (ret == -EAGAIN || (!ret && r && whole && zrec_partial(r)))
			goto again;
		if (!ret && !r)
			ret = -ENOENT;
		if (r)
			until = o->fetched + s->ttl_ms;
		goto take;
	}
	if (!zen_may_wait()) {
		ret = -ZEN_WOULD_WAIT;
		goto out;
	}
	o->fetching = true;
	h = whole ? NULL : hint_for(s, k, name, now);
	ret = h ? fetch_via_child(s, o, k, name, h, &le) : -EAGAIN;
	if (ret == -EAGAIN)
		ret = fetch_into(s, o, k, parent, name, &le, &g);
	if (ret == -EAGAIN)
		goto again; /* a write came first, and left nothing whole */
	if (ret && err)
		*err = le;
	r = o->rec;
	if (!ret)
		until = o->fetched + s->ttl_ms;
take:
	if (!ret)
		*out = zrec_ref(r);
	if (fresh_until)
		*fresh_until = ret ? 0 : until;
out:
	pthread_mutex_unlock(&s->lock);
	gone_tell(s, &g);
	return ret;
}

/* The cached listing of k under parent, edited: rec in place of its
 * namesake (or added), or the entry listed as gone taken out.  Caller
 * holds lock. */
static void edit_listing(struct store *s, enum zkind k, const char *parent,
			 struct zrec *rec, const char *gone)
{
	struct zlist *l;
	struct entry *e;
	char key[640];

	make_key(key, sizeof(key), k, parent, NULL);
	e = find(s, key);
	if (!e || !e->list)
		return;
	l = rec ? zlist_with(e->list, rec) : zlist_without(e->list, gone);
	if (!l) {
		/* Out of memory: forget the listing rather than lie. */
		e->fetched = 0;
		e->walk_until = 0;
		return;
	}
	s->bytes -= entry_bytes(e);
	zlist_unref(e->list);
	e->list = l;
	e->last_i = -1; /* the indices moved */
	s->bytes += entry_bytes(e);
}

/* The object entry of k/parent/name now holds rec (NULL: nothing, until
 * fetched again; stale: and not from the listing either; absent: it is
 * gone), written through the tree: a fetch of it in flight yields.
 * Caller holds lock. */
static void set_object(struct store *s, enum zkind k, const char *parent,
		       const char *name, struct zrec *rec, bool stale,
		       bool absent)
{
	long long now = mono_ms();
	struct entry *e;
	char key[640];

	make_key(key, sizeof(key), k, parent, name);
	e = rec || stale || (absent && s->nneg < NEG_MAX) ? get(s, key, false) :
							    find(s, key);
	if (!e)
		return;
	s->bytes -= entry_bytes(e);
	zrec_unref(e->rec);
	e->rec = zrec_ref(rec);
	e->fetched = rec ? now : 0;
	set_absent(s, e, absent, now);
	if (stale)
		e->stale_at = now;
	e->wgen++;
	s->bytes += entry_bytes(e);
}

void store_update(struct store *s, enum zkind k, const char *parent,
		  struct zrec *rec)
{
	pthread_mutex_lock(&s->lock);
	log_write(s, k, parent, zrec_name(rec), rec);
	if (zrec_partial(rec)) {
		/* Part of the object is unknown: the next look fetches it. */
		set_object(s, k, parent, zrec_name(rec), NULL, true, false);
	} else {
		edit_listing(s, k, parent, rec, NULL);
		set_object(s, k, parent, zrec_name(rec), rec, false, false);
	}
	pthread_mutex_unlock(&s->lock);
}

void store_remove(struct store *s, enum zkind k, const char *parent,
		  const char *name)
{
	pthread_mutex_lock(&s->lock);
	log_write(s, k, parent, name, NULL);
	edit_listing(s, k, parent, NULL, name);
	set_object(s, k, parent, name, NULL, false, true);
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
	for (size_t i = 0; i < s->cap; i++) {
		struct entry **pp = &s->tab[i];

		while (*pp) {
			struct entry *e = *pp;

			/* a stale mark outlives any listing it corrects */
			if (e->fetching || e->waiters ||
			    (e->stale_at &&
			     now - e->stale_at <
				     WALK_MAX_S * 1000LL + s->ttl_ms) ||
			    fresh(s, e, now) ||
			    (e->list && usable(s, e, now))) {
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
			s->n--;
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
	for (size_t i = 0; i < s->cap; i++)
		for (struct entry *e = s->tab[i]; e; e = e->next) {
			t = e->fetched + s->ttl_ms;
			if (e->walk_until > t)
				t = e->walk_until;
			if (t > now && (!next || t < next))
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
