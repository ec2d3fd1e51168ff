// SPDX-License-Identifier: MIT
/*
 * The metadata cache (backend/store.c) without a server: the typed calls
 * it makes (api_list, api_get), its clock (mono_ms) and zen_may_wait are
 * replaced at link time (-Wl,--wrap, tests/meson.build) by the fakes
 * below, which count the requests, can act "while the request is in
 * flight" (the store holds no lock across it), as a concurrent write
 * through the tree would, and can hold a request until the test lets it
 * go, so that other threads come to wait for it.
 *
 * What is checked: a listing or an object is fresh for exactly meta_ttl
 * and then fetched again, a lookup from a fresh listing sends nothing and
 * one past it sends one GET of that object, never a list; a write puts the
 * server's reply in place (a reply that leaves fields out is fetched
 * again); a 404 is remembered for meta_ttl, a write through the tree or a
 * newer listing wins over it, it is swept and capped; a name the store
 * never knew is not "gone"; a listing or a GET that was in flight across a
 * write does not undo it; the identity map answers without a request, is
 * replaced by a reply naming another UUID and dropped on a 404; one fetch
 * serves every thread that asks meanwhile, its failure too.
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "backend/api.h"
#include "backend/store.h"

#include "tests/unit/check.h"

#define TTL 5 /* meta_ttl, seconds */
#define NSRV 8

/* ---- the fakes ------------------------------------------------------- */

static long long clock_ms = 1000000;
static int n_get, n_list;
static const char *server_has[NSRV]; /* account names the server has */
static const char *server_id[NSRV]; /* their UUIDs (NULL: "id-NAME") */
static const char *server_key[NSRV]; /* key names of account server_has[0] */
static bool server_partial; /* answers leave out the metadata */
static int server_fail; /* -errno: every request fails so */
/* run once, in the middle of the next request */
static void (*during)(void);

/* A request held until released (the single-flight tests). */
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cond = PTHREAD_COND_INITIALIZER;
static bool holding, held, released;
static int n_may_wait;

long long __wrap_mono_ms(void);
bool __wrap_zen_may_wait(void);
int __wrap_api_list(struct zen *z, enum zkind k, const char *parent,
		    struct zlist **out, struct zen_err *e);
int __wrap_api_get(struct zen *z, enum zkind k, const char *parent,
		   const char *name_or_id, struct zrec **out,
		   struct zen_err *e);

long long __wrap_mono_ms(void)
{
	return clock_ms;
}

bool __wrap_zen_may_wait(void)
{
	pthread_mutex_lock(&hold_lock);
	n_may_wait++;
	pthread_cond_broadcast(&hold_cond);
	pthread_mutex_unlock(&hold_lock);
	return true;
}

static const char *id_of(size_t i, char *buf, size_t size)
{
	if (server_id[i])
		return server_id[i];
	snprintf(buf, size, "id-%s", server_has[i]);
	return buf;
}

static json_t *account_json(const char *name, const char *id)
{
	json_t *j = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:b}}", "id", id,
			      "name", name, "body", "full_name", "", "created",
			      "2026-01-02T03:04:05", "updated",
			      "2026-01-02T03:04:05", "active", 1);

	if (!server_partial)
		json_object_set_new(j, "metadata",
				    json_pack("{s:s}", "description", "d"));
	return j;
}

static json_t *key_json(const char *name)
{
	char id[64];

	snprintf(id, sizeof(id), "key-%s", name);
	return json_pack("{s:s, s:s, s:{s:b}, s:{s:s}}", "id", id, "name", name,
			 "body", "active", 1, "metadata", "description", "");
}

static struct zrec *account(const char *name)
{
	char id[64];
	json_t *j;
	struct zrec *r;

	snprintf(id, sizeof(id), "id-%s", name);
	j = account_json(name, id);
	r = zrec_parse(ZK_ACCOUNT, j, NULL);
	json_decref(j);
	return r;
}

/* The request's wait: let the test see it, and hold it if asked. */
static void in_flight(void)
{
	void (*fn)(void) = during;

	during = NULL;
	if (fn)
		fn();
	pthread_mutex_lock(&hold_lock);
	if (holding) {
		held = true;
		pthread_cond_broadcast(&hold_cond);
		while (!released)
			pthread_cond_wait(&hold_cond, &hold_lock);
	}
	pthread_mutex_unlock(&hold_lock);
}

static long has(const char *name)
{
	for (size_t i = 0; i < NSRV; i++)
		if (server_has[i] && !strcmp(server_has[i], name))
			return (long)i;
	return -1;
}

int __wrap_api_list(struct zen *z, enum zkind k, const char *parent,
		    struct zlist **out, struct zen_err *e)
{
	json_t *items = json_array();
	char buf[64];

	n_list++;
	in_flight();
	if (server_fail) {
		json_decref(items);
		zen_err_set(e, "list: failed");
		return server_fail;
	}
	for (size_t i = 0; i < NSRV; i++)
		if (server_has[i])
			json_array_append_new(
				items,
				account_json(server_has[i],
					     id_of(i, buf, sizeof(buf))));
	*out = zlist_parse(k, items);
	json_decref(items);
	return *out ? 0 : -ENOMEM;
}

int __wrap_api_get(struct zen *z, enum zkind k, const char *parent,
		   const char *name_or_id, struct zrec **out, struct zen_err *e)
{
	long i = k == ZK_KEY ? -1 : has(name_or_id);
	char buf[64];
	json_t *j = NULL;

	n_get++;
	in_flight();
	if (server_fail) {
		zen_err_set(e, "GET: failed");
		return server_fail;
	}
	if (k == ZK_KEY && server_has[0] &&
	    !strcmp(parent, id_of(0, buf, sizeof(buf))))
		for (size_t n = 0; n < NSRV; n++)
			if (server_key[n] && !strcmp(server_key[n], name_or_id))
				j = key_json(name_or_id);
	if (i >= 0)
		j = account_json(name_or_id,
				 id_of((size_t)i, buf, sizeof(buf)));
	if (!j) {
		zen_err_set(e, "GET: server said 404");
		e->status = 404;
		return -ENOENT;
	}
	*out = zrec_parse(k, j, NULL);
	json_decref(j);
	return *out ? 0 : -ENOMEM;
}

/* ---- helpers ---------------------------------------------------------- */

static int n_gone;
static char gone_name[64];

static void on_gone(void *arg, enum zkind k, const char *parent,
		    const char *name)
{
	n_gone++;
	snprintf(gone_name, sizeof(gone_name), "%s", name);
}

static struct store *st;

static int find(const char *name)
{
	struct zen_err e = { 0 };
	struct zrec *r = NULL;
	int ret = store_find(st, ZK_ACCOUNT, NULL, name, &r, NULL, &e);

	if (!ret) {
		CHECK(r && !strcmp(zrec_name(r), name));
		zrec_unref(r);
	}
	return ret;
}

/* The text of field of the account name, as the store has it ("" on
 * error, "-" when the server has no value). */
static const char *field(const char *name, const char *f, long long *until)
{
	static char buf[64];
	struct zen_err e = { 0 };
	struct zrec *r = NULL;
	const char *v;

	if (store_find(st, ZK_ACCOUNT, NULL, name, &r, until, &e))
		return "";
	v = zrec_field(r, f);
	snprintf(buf, sizeof(buf), "%s", v ? v : "-");
	zrec_unref(r);
	return buf;
}

static bool listed(const char *name)
{
	struct zen_err e = { 0 };
	struct zlist *l = NULL;
	bool in;

	if (store_list(st, ZK_ACCOUNT, NULL, &l, &e))
		return false;
	in = zlist_find(l, name) >= 0;
	zlist_unref(l);
	return in;
}

static void reset(void)
{
	store_free(st);
	st = store_new(NULL, TTL);
	store_on_gone(st, on_gone, NULL);
	memset(server_has, 0, sizeof(server_has));
	memset(server_id, 0, sizeof(server_id));
	memset(server_key, 0, sizeof(server_key));
	server_partial = false;
	server_fail = 0;
	n_get = n_list = n_gone = 0;
	during = NULL;
}

static void update(const char *name)
{
	struct zrec *r = account(name);

	store_update(st, ZK_ACCOUNT, NULL, r);
	zrec_unref(r);
}

/* ---- fresh for exactly meta_ttl ----------------------------------------- */

static void fresh_for_meta_ttl(void)
{
	long long until = 0;

	reset();
	server_has[0] = "a";
	server_has[1] = "b";
	CHECK(listed("a"));
	CHECK(n_list == 1);
	/* Every name from the listing, however they are looked up, until
	 * the listing is meta_ttl old, and no longer. */
	for (int pass = 0; pass < 3; pass++) {
		CHECK(find("a") == 0);
		CHECK(find("b") == 0);
		CHECK(find("c") == -ENOENT);
		clock_ms += 1000;
	}
	CHECK(!strcmp(field("a", "description", &until), "d"));
	CHECK(until == clock_ms - 3000 + TTL * 1000);
	clock_ms += TTL * 1000 - 3000 - 1;
	CHECK(find("b") == 0);
	CHECK(listed("b"));
	CHECK(n_get == 0 && n_list == 1);

	/* Past it: a lookup is one GET of that object alone, never a list;
	 * a listing is one list. */
	clock_ms += 1;
	CHECK(find("b") == 0);
	CHECK(n_get == 1 && n_list == 1);
	CHECK(find("b") == 0);
	CHECK(n_get == 1);
	CHECK(listed("a"));
	CHECK(n_list == 2);
	/* b's GET was before that listing: the listing is now newer. */
	server_has[1] = NULL;
	CHECK(find("a") == 0);
	CHECK(n_get == 1);

	/* An object fetched alone after the listing wins over it. */
	reset();
	server_has[0] = "a";
	CHECK(listed("a"));
	clock_ms += TTL * 1000;
	CHECK(find("a") == 0); /* a GET: the listing has expired */
	CHECK(listed("a")); /* a new listing */
	CHECK(n_get == 1 && n_list == 2);
	CHECK(find("a") == 0);
	CHECK(n_get == 1);
}

/* ---- writes put the server's reply in place ------------------------------ */

static void writes_in_place(void)
{
	struct zrec *r;
	json_t *j;

	reset();
	server_has[0] = "w";
	CHECK(listed("w"));
	CHECK(!strcmp(field("w", "full_name", NULL), ""));
	/* The reply says the full name changed: the listing's copy is
	 * replaced, nothing is fetched. */
	j = account_json("w", "id-w");
	json_object_set_new(json_object_get(j, "body"), "full_name",
			    json_string("Dub"));
	r = zrec_parse(ZK_ACCOUNT, j, NULL);
	json_decref(j);
	store_update(st, ZK_ACCOUNT, NULL, r);
	zrec_unref(r);
	CHECK(!strcmp(field("w", "full_name", NULL), "Dub"));
	CHECK(n_get == 0 && n_list == 1);

	/* A reply without the metadata is not the object: the next look
	 * fetches it (and the listing, whose copy it no longer is). */
	server_partial = true;
	j = account_json("w", "id-w");
	r = zrec_parse(ZK_ACCOUNT, j, NULL);
	json_decref(j);
	CHECK(zrec_partial(r));
	server_partial = false;
	store_update(st, ZK_ACCOUNT, NULL, r);
	zrec_unref(r);
	CHECK(!strcmp(field("w", "description", NULL), "d"));
	CHECK(n_get == 1);
	CHECK(listed("w"));
	CHECK(n_list == 2);
}

/* ---- a 404 is a fact ---------------------------------------------------- */

static void negative(void)
{
	reset();
	CHECK(find("ghost") == -ENOENT);
	CHECK(n_get == 1);
	for (int i = 0; i < 100; i++)
		CHECK(find("ghost") == -ENOENT);
	CHECK(n_get == 1); /* remembered for meta_ttl */
	CHECK(n_gone == 0); /* never known: nothing to forget */

	/* Still absent just before meta_ttl; asked again after it. */
	clock_ms += TTL * 1000 - 1;
	CHECK(find("ghost") == -ENOENT);
	CHECK(n_get == 1);
	clock_ms += 1;
	CHECK(find("ghost") == -ENOENT);
	CHECK(n_get == 2);

	/* A write through the tree that makes it wins at once. */
	server_has[0] = "ghost";
	update("ghost");
	CHECK(find("ghost") == 0);
	CHECK(n_get == 2);

	/* Removed through the tree: absent at once, and not asked. */
	server_has[0] = NULL;
	store_remove(st, ZK_ACCOUNT, NULL, "ghost");
	CHECK(find("ghost") == -ENOENT);
	CHECK(n_get == 2);
}

static void newer_listing_wins(void)
{
	reset();
	CHECK(find("late") == -ENOENT);
	CHECK(n_get == 1);
	/* Made elsewhere; a listing fetched after the 404 has it. */
	server_has[0] = "late";
	clock_ms += 1;
	CHECK(listed("late"));
	CHECK(find("late") == 0);
	CHECK(n_get == 1);
	/* Once the listing has expired, the older 404 does not come back:
	 * it has expired with it. */
	clock_ms += TTL * 1000;
	CHECK(find("late") == 0);
	CHECK(n_get == 2);
}

static void gone_only_if_known(void)
{
	reset();
	server_has[0] = "known";
	CHECK(find("known") == 0);
	CHECK(n_get == 1);
	/* deleted elsewhere; the record expires; the next GET says 404 */
	server_has[0] = NULL;
	clock_ms += TTL * 1000;
	CHECK(find("known") == -ENOENT);
	CHECK(n_get == 2);
	CHECK(n_gone == 1 && !strcmp(gone_name, "known"));

	/* Known from an expired listing only. */
	reset();
	server_has[0] = "inlist";
	CHECK(listed("inlist"));
	server_has[0] = NULL;
	clock_ms += TTL * 1000;
	CHECK(find("inlist") == -ENOENT);
	CHECK(n_gone == 1 && !strcmp(gone_name, "inlist"));
	CHECK(find("never") == -ENOENT);
	CHECK(n_gone == 1);
}

static void swept_and_capped(void)
{
	char name[32];
	int gets;

	reset();
	CHECK(find("ghost") == -ENOENT);
	server_has[0] = "kept";
	CHECK(listed("kept"));
	CHECK(store_bytes(st) > 0);
	CHECK(store_next_expiry(st) == clock_ms + TTL * 1000);
	clock_ms += TTL * 1000;
	store_sweep(st);
	CHECK(store_next_expiry(st) == 0); /* nothing left */
	CHECK(store_bytes(st) == 0);
	CHECK(n_gone == 1 && !strcmp(gone_name, "kept"));

	/* A flood of distinct names: the first 4096 are remembered, the
	 * rest are asked for each time. */
	server_has[0] = NULL;
	gets = n_get;
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "flood-%d", i);
		CHECK(find(name) == -ENOENT);
	}
	CHECK(n_get == gets + 5000);
	gets = n_get;
	CHECK(find("flood-0") == -ENOENT);
	CHECK(find("flood-4095") == -ENOENT);
	CHECK(n_get == gets);
	CHECK(find("flood-4096") == -ENOENT);
	CHECK(find("flood-4999") == -ENOENT);
	CHECK(n_get == gets + 2);
	/* Once they expire and are swept, new names are remembered. */
	clock_ms += TTL * 1000;
	store_sweep(st);
	CHECK(find("after") == -ENOENT);
	CHECK(find("after") == -ENOENT);
	CHECK(n_get == gets + 3);
}

/* ---- a write is not undone by an answer that predates it ------------- */

static void write_made(void)
{
	server_has[1] = "made";
	update("made");
}

static void write_removed(void)
{
	server_has[0] = NULL;
	store_remove(st, ZK_ACCOUNT, NULL, "old");
}

static void listing_in_flight(void)
{
	reset();
	server_has[0] = "old";
	/* The listing is answered, then "made" is created through the tree,
	 * then the listing lands. */
	during = write_made;
	CHECK(listed("made")); /* the write is put into it */
	CHECK(n_list == 1);
	CHECK(find("made") == 0);
	CHECK(listed("made"));
	CHECK(n_list == 1 && n_get == 0);
	CHECK(n_gone == 0);

	/* The same for a removal: it stays removed. */
	clock_ms += TTL * 1000;
	server_has[0] = "old";
	during = write_removed;
	CHECK(!listed("old"));
	CHECK(n_list == 2);
	CHECK(!listed("old"));
	CHECK(find("old") == -ENOENT);
	CHECK(find("made") == 0);
	CHECK(n_list == 2 && n_get == 0);
}

static void get_in_flight(void)
{
	reset();
	/* A lookup's GET answered 404, then mkdir made the name. */
	during = write_made;
	CHECK(find("made") == 0);
	CHECK(n_get == 1);
	CHECK(find("made") == 0);
	CHECK(n_get == 1);
}

/* ---- the identity map ------------------------------------------------ */

static int ident(const char *name, char *id, size_t size, bool *checked)
{
	struct zen_err e = { 0 };
	struct zrec *r = NULL;
	int ret = store_ident(st, ZK_ACCOUNT, NULL, name, &r, checked, &e);

	if (!ret) {
		snprintf(id, size, "%s", zrec_id(r));
		zrec_unref(r);
	}
	return ret;
}

static int find_key(const char *parent, const char *name)
{
	struct zen_err e = { 0 };
	struct zrec *r = NULL;
	int ret = store_find(st, ZK_KEY, parent, name, &r, NULL, &e);

	zrec_unref(r);
	return ret;
}

static void identity_map(void)
{
	char id[64];
	bool checked = false;

	reset();
	server_has[0] = "acc";
	server_key[0] = "k";
	CHECK(ident("acc", id, sizeof(id), &checked) == 0);
	CHECK(!strcmp(id, "id-acc") && checked);
	CHECK(n_get == 1);
	CHECK(find_key(id, "k") == 0);
	CHECK(n_get == 2);

	/* Long after meta_ttl: the account's UUID without a request, and
	 * its key is one GET, with no list and no GET of the account. */
	clock_ms += 10 * TTL * 1000;
	store_sweep(st);
	CHECK(ident("acc", id, sizeof(id), &checked) == 0);
	CHECK(!strcmp(id, "id-acc") && !checked);
	CHECK(n_get == 2);
	CHECK(find_key(id, "k") == 0);
	CHECK(n_get == 3 && n_list == 0);

	/* Made again elsewhere under the same name: a GET of it (as the
	 * caller makes when a child is not found) names the new UUID, which
	 * takes the old one's place. */
	server_id[0] = "id-acc-2";
	clock_ms += TTL * 1000;
	CHECK(ident("acc", id, sizeof(id), &checked) == 0);
	CHECK(!strcmp(id, "id-acc") && !checked);
	CHECK(find_key(id, "k") == -ENOENT);
	CHECK(find("acc") == 0);
	CHECK(ident("acc", id, sizeof(id), &checked) == 0);
	CHECK(!strcmp(id, "id-acc-2") && checked);
	CHECK(find_key(id, "k") == 0);

	/* Deleted: a 404 drops it; the next ident asks again. */
	server_has[0] = NULL;
	clock_ms += TTL * 1000;
	CHECK(find("acc") == -ENOENT);
	CHECK(ident("acc", id, sizeof(id), &checked) == -ENOENT);

	/* A fresh listing is better than the map, and confirms it: it
	 * names the UUID the server has now, with no GET. */
	server_has[0] = "acc";
	server_id[0] = NULL;
	clock_ms += TTL * 1000;
	CHECK(ident("acc", id, sizeof(id), &checked) == 0);
	CHECK(!strcmp(id, "id-acc") && checked);
	server_id[0] = "id-acc-3";
	clock_ms += TTL * 1000;
	CHECK(ident("acc", id, sizeof(id), &checked) == 0);
	CHECK(!strcmp(id, "id-acc") && !checked);
	n_get = 0;
	CHECK(listed("acc"));
	CHECK(ident("acc", id, sizeof(id), &checked) == 0);
	CHECK(!strcmp(id, "id-acc-3") && checked);
	CHECK(n_get == 0);
	/* confirmed when the listing was fetched, not when asked */
	clock_ms += TTL * 1000;
	CHECK(ident("acc", id, sizeof(id), &checked) == 0);
	CHECK(!strcmp(id, "id-acc-3") && !checked);
	CHECK(n_get == 0);

	/* Removed through the tree: dropped too. */
	server_id[0] = NULL;
	clock_ms += TTL * 1000;
	CHECK(ident("acc", id, sizeof(id), &checked) == 0);
	store_remove(st, ZK_ACCOUNT, NULL, "acc");
	CHECK(ident("acc", id, sizeof(id), &checked) == -ENOENT);
}

/* ---- one fetch for every waiter ------------------------------------------ */

#define NTHREADS 6

struct asker {
	pthread_t t;
	bool list;
	int ret;
	char full_name[32];
};

static void *ask(void *arg)
{
	struct asker *a = arg;
	struct zen_err e = { 0 };
	struct zlist *l = NULL;
	struct zrec *r = NULL;

	if (a->list) {
		a->ret = store_list(st, ZK_ACCOUNT, NULL, &l, &e);
		if (!a->ret)
			snprintf(a->full_name, sizeof(a->full_name), "%zu",
				 zlist_len(l));
		zlist_unref(l);
		return NULL;
	}
	a->ret = store_find(st, ZK_ACCOUNT, NULL, "one", &r, NULL, &e);
	if (!a->ret)
		snprintf(a->full_name, sizeof(a->full_name), "%s",
			 zrec_field(r, "full_name"));
	zrec_unref(r);
	return NULL;
}

/*
 * NTHREADS threads ask at once: the first one's request is held until
 * every other has come to wait for it (each calls zen_may_wait under the
 * store's lock just before it waits, and the request cannot land before
 * they wait), then let go.
 */
static void concurrent(bool list, int fail)
{
	struct asker a[NTHREADS];

	reset();
	server_has[0] = "one";
	server_fail = fail;
	memset(a, 0, sizeof(a));
	holding = true;
	held = released = false;
	n_may_wait = 0;
	a[0].list = list;
	pthread_create(&a[0].t, NULL, ask, &a[0]);
	pthread_mutex_lock(&hold_lock);
	while (!held)
		pthread_cond_wait(&hold_cond, &hold_lock);
	pthread_mutex_unlock(&hold_lock);
	for (int i = 1; i < NTHREADS; i++) {
		a[i].list = list;
		pthread_create(&a[i].t, NULL, ask, &a[i]);
	}
	pthread_mutex_lock(&hold_lock);
	while (n_may_wait < NTHREADS)
		pthread_cond_wait(&hold_cond, &hold_lock);
	released = true;
	holding = false;
	pthread_cond_broadcast(&hold_cond);
	pthread_mutex_unlock(&hold_lock);
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(a[i].t, NULL);
		CHECK(a[i].ret == fail);
		CHECK(fail || !strcmp(a[i].full_name, list ? "1" : ""));
	}
	CHECK(n_may_wait == NTHREADS);
	CHECK(list ? n_list == 1 && n_get == 0 : n_get == 1 && n_list == 0);
}

static void single_flight(void)
{
	concurrent(false, 0);
	concurrent(true, 0);
	/* a failure is shared too: one request, every waiter gets it */
	concurrent(false, -EIO);
	concurrent(true, -EIO);
	/* and is not cached: the next ask sends again */
	server_fail = 0;
	CHECK(listed("one"));
	CHECK(n_list == 2);
}

int main(void)
{
	fresh_for_meta_ttl();
	writes_in_place();
	negative();
	newer_listing_wins();
	gone_only_if_known();
	swept_and_capped();
	listing_in_flight();
	get_in_flight();
	identity_map();
	single_flight();
	store_free(st);
	return CHECK_DONE();
}
