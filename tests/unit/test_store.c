// SPDX-License-Identifier: MIT
/*
 * The metadata cache (backend/store.c) without a server: the typed calls
 * it makes (api_list, api_get, api_get_child) and its clock (mono_ms) are
 * replaced at link time (-Wl,--wrap, tests/meson.build) by the fakes
 * below, which count the requests and can act "while the request is in
 * flight" (the store holds no lock across it), as a concurrent write
 * through the tree would.
 *
 * What is checked: a 404 is remembered for meta_ttl (one GET for many
 * lookups), a write through the tree or a newer listing wins over it, it
 * is swept and capped; a name the store never knew is not "gone"; a
 * listing or a GET that was in flight across a write does not undo it.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "backend/api.h"
#include "backend/store.h"

#include "tests/unit/check.h"

#define TTL 5 /* meta_ttl, seconds */

/* ---- the fakes ------------------------------------------------------- */

static long long clock_ms = 1000000;
static int n_get, n_list;
static const char *server_has[8]; /* account names the server has */
/* run once, in the middle of the next request */
static void (*during)(void);

long long __wrap_mono_ms(void);
int __wrap_api_list(struct zen *z, enum zkind k, const char *parent,
		    struct zlist **out, struct zen_err *e);
int __wrap_api_get(struct zen *z, enum zkind k, const char *parent,
		   const char *name_or_id, struct zrec **out,
		   struct zen_err *e);
int __wrap_api_get_child(struct zen *z, enum zkind k, const char *parent,
			 const char *name_or_id, struct zrec **out,
			 struct zrec **owner, struct zen_err *e);

long long __wrap_mono_ms(void)
{
	return clock_ms;
}

static json_t *account_json(const char *name)
{
	char id[64];

	snprintf(id, sizeof(id), "id-%s", name);
	return json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:b}, s:{s:s}}", "id",
			 id, "name", name, "body", "full_name", "", "created",
			 "2026-01-02T03:04:05", "updated",
			 "2026-01-02T03:04:05", "active", 1, "metadata",
			 "description", "");
}

static struct zrec *account(const char *name)
{
	json_t *j = account_json(name);
	struct zrec *r = zrec_parse(ZK_ACCOUNT, j, NULL);

	json_decref(j);
	return r;
}

static void in_flight(void)
{
	void (*fn)(void) = during;

	during = NULL;
	if (fn)
		fn();
}

static bool has(const char *name)
{
	for (size_t i = 0; i < 8; i++)
		if (server_has[i] && !strcmp(server_has[i], name))
			return true;
	return false;
}

int __wrap_api_list(struct zen *z, enum zkind k, const char *parent,
		    struct zlist **out, struct zen_err *e)
{
	json_t *items = json_array();

	n_list++;
	for (size_t i = 0; i < 8; i++)
		if (server_has[i])
			json_array_append_new(items,
					      account_json(server_has[i]));
	*out = zlist_parse(k, items);
	json_decref(items);
	in_flight(); /* the answer is made; it lands after this */
	return *out ? 0 : -ENOMEM;
}

int __wrap_api_get(struct zen *z, enum zkind k, const char *parent,
		   const char *name_or_id, struct zrec **out, struct zen_err *e)
{
	bool found = has(name_or_id);

	n_get++;
	in_flight();
	if (!found) {
		zen_err_set(e, "GET: server said 404");
		e->status = 404;
		return -ENOENT;
	}
	*out = account(name_or_id);
	return 0;
}

int __wrap_api_get_child(struct zen *z, enum zkind k, const char *parent,
			 const char *name_or_id, struct zrec **out,
			 struct zrec **owner, struct zen_err *e)
{
	zen_err_set(e, "not in these tests");
	return -EIO;
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
	int ret = store_find(st, ZK_ACCOUNT, NULL, name, false, &r, NULL, &e);

	if (!ret) {
		CHECK(r && !strcmp(zrec_name(r), name));
		zrec_unref(r);
	}
	return ret;
}

static bool listed(const char *name)
{
	struct zen_err e = { 0 };
	struct zlist *l = NULL;
	bool in;

	if (store_list(st, ZK_ACCOUNT, NULL, false, &l, &e))
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
	n_get = n_list = n_gone = 0;
	during = NULL;
}

static void update(const char *name)
{
	struct zrec *r = account(name);

	store_update(st, ZK_ACCOUNT, NULL, r);
	zrec_unref(r);
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
	/* Even once the listing is no longer usable, the older 404 does
	 * not come back: it has expired with it. */
	clock_ms += TTL * 1000 + WALK_GAP_MS;
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
	clock_ms += WALK_MAX_S * 1000LL;
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
	clock_ms += TTL * 1000;
	store_sweep(st);
	CHECK(store_next_expiry(st) == 0); /* nothing left */

	/* A flood of distinct names: the first 4096 are remembered, the
	 * rest are asked for each time. */
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "flood-%d", i);
		CHECK(find(name) == -ENOENT);
	}
	CHECK(n_get == 5001);
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

int main(void)
{
	negative();
	newer_listing_wins();
	gone_only_if_known();
	swept_and_capped();
	listing_in_flight();
	get_in_flight();
	store_free(st);
	return CHECK_DONE();
}
