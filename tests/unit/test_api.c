// SPDX-License-Identifier: MIT
/*
 * The typed calls' parsing (backend/api.c): replies as the real server
 * sends them (shapes copied from ZenML 0.98.0) into compact records, lists
 * with an index by name, and their copy-on-write edits.  No server.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "backend/api.h"

#include "tests/unit/check.h"

static const char *ACCOUNT =
	"{\"body\": {\"created\": \"2026-11-23T01:44:56.403779\", "
	"\"updated\": \"2026-11-23T01:44:56.403797\", \"full_name\": \"\", "
	"\"active\": true, \"avatar_url\": null}, \"metadata\": "
	"{\"description\": \"zenmlfs development mount\", "
	"\"external_user_id\": null}, \"resources\": null, \"id\": "
	"\"4d9be3ff-08b4-4b0e-be12-7ac2421ad02b\", \"permission_denied\": "
	"false, \"name\": \"zenmlfs-dev\"}";

static const char *KEY =
	"{\"body\": {\"created\": \"2026-11-23T01:44:56.677549\", "
	"\"updated\": \"2026-11-23T01:45:14.159964\", \"key\": null, "
	"\"active\": false, \"service_account\": {\"id\": \"x\"}}, "
	"\"metadata\": {\"description\": \"\", \"retain_period_minutes\": 5, "
	"\"last_login\": \"2026-11-23T01:45:14.159964\", \"last_rotated\": "
	"null}, \"id\": \"977415d5-2938-4303-9926-5f1fdf801313\", "
	"\"name\": \"default\"}";

static struct zrec *parse(enum zkind k, const char *text)
{
	json_t *j = json_loads(text, 0, NULL);
	struct zrec *r = zrec_parse(k, j, "http://zen.example");

	json_decref(j);
	return r;
}

static bool is(const char *got, const char *want)
{
	if (!got || !want)
		return got == want;
	return !strcmp(got, want);
}

static void records(void)
{
	struct zrec *r;

	r = parse(ZK_ACCOUNT, ACCOUNT);
	CHECK(r != NULL);
	CHECK(zrec_kind(r) == ZK_ACCOUNT);
	CHECK(is(zrec_name(r), "zenmlfs-dev"));
	CHECK(is(zrec_id(r), "4d9be3ff-08b4-4b0e-be12-7ac2421ad02b"));
	CHECK(is(zrec_field(r, "description"), "zenmlfs development mount"));
	CHECK(is(zrec_field(r, "full_name"), ""));
	CHECK(is(zrec_field(r, "active"), "1"));
	/* naive server times become RFC 3339 UTC */
	CHECK(is(zrec_field(r, "created"), "2026-11-23T01:44:56Z"));
	CHECK(zrec_field(r, "no_such_field") == NULL);
	zrec_unref(r);

	r = parse(ZK_KEY, KEY);
	CHECK(r != NULL);
	CHECK(is(zrec_name(r), "default"));
	CHECK(is(zrec_field(r, "active"), "0"));
	CHECK(is(zrec_field(r, "retain_period_minutes"), "5"));
	CHECK(zrec_field(r, "last_rotated") == NULL); /* null: no value */
	CHECK(is(zrec_field(r, "last_login"), "2026-11-23T01:45:14Z"));
	zrec_unref(r);

	/* the server's URL is the daemon's, not the reply's */
	r = parse(ZK_SERVER, "{\"id\":\"i\",\"version\":\"0.98.0\","
			     "\"auth_scheme\":\"OAUTH2_PASSWORD_BEARER\"}");
	CHECK(r && is(zrec_field(r, "url"), "http://zen.example"));
	CHECK(r && is(zrec_field(r, "version"), "0.98.0"));
	CHECK(r && zrec_field(r, "deployment_type") == NULL);
	zrec_unref(r);

	/* wrong types: no value, not a crash or a lie */
	r = parse(ZK_KEY, "{\"id\":\"u\",\"name\":\"k\",\"body\":"
			  "{\"active\":\"yes\",\"created\":7},\"metadata\":"
			  "{\"retain_period_minutes\":\"5\"}}");
	CHECK(r != NULL);
	CHECK(r && zrec_field(r, "active") == NULL);
	CHECK(r && zrec_field(r, "created") == NULL);
	CHECK(r && zrec_field(r, "retain_period_minutes") == NULL);
	zrec_unref(r);
	/* a string field that is no string is shown as JSON */
	r = parse(ZK_DEVICE, "{\"id\":\"0b7a1f4e-9c2d-4e8a-8f1b-2c3d4e5f6a7b\","
			     "\"body\":{\"os\":[1,2]}}");
	CHECK(r && is(zrec_field(r, "os"), "[1,2]"));
	zrec_unref(r);

	/* objects that cannot be a path component are not listed */
	CHECK(parse(ZK_ACCOUNT, "{\"id\":\"u\",\"name\":\"a/b\"}") == NULL);
	CHECK(parse(ZK_ACCOUNT, "{\"id\":\"u\",\"name\":\"..\"}") == NULL);
	CHECK(parse(ZK_ACCOUNT, "{\"id\":\"u\",\"name\":\"\"}") == NULL);
	CHECK(parse(ZK_ACCOUNT, "{\"id\":\"u\"}") == NULL);
	CHECK(parse(ZK_ACCOUNT, "[1,2]") == NULL);
	CHECK(parse(ZK_ACCOUNT, "\"x\"") == NULL);
}

/* The account a key's reply names (body.service_account): body, no
 * metadata.  Enough for its directory, id and active; partial, so a file
 * that shows metadata fetches the account whole. */
static void owner_in_key_reply(void)
{
	static const char *reply =
		"{\"body\": {\"created\": \"2026-11-23T14:38:50.144965\", "
		"\"key\": null, \"active\": false, \"service_account\": "
		"{\"body\": {\"created\": \"2026-11-23T14:38:49.907837\", "
		"\"updated\": \"2026-11-23T15:30:13.748252\", "
		"\"full_name\": \"\", \"active\": true, "
		"\"avatar_url\": null}, \"metadata\": null, "
		"\"resources\": null, "
		"\"id\": \"00f061ac-8845-4370-b817-63d7f4800602\", "
		"\"permission_denied\": false, \"name\": \"target-z\"}}, "
		"\"metadata\": {\"description\": \"\"}, "
		"\"id\": \"96052b39-a571-41ba-a570-4ee7125464a8\", "
		"\"name\": \"k\"}";
	json_t *j = json_loads(reply, 0, NULL);
	json_t *sa =
		json_object_get(json_object_get(j, "body"), "service_account");
	struct zrec *k = zrec_parse(ZK_KEY, j, "http://zen.example");
	struct zrec *a = zrec_parse(ZK_ACCOUNT, sa, "http://zen.example");

	CHECK(k && !zrec_partial(k));
	CHECK(a != NULL);
	CHECK(a && zrec_partial(a));
	CHECK(a && is(zrec_name(a), "target-z"));
	CHECK(a && is(zrec_id(a), "00f061ac-8845-4370-b817-63d7f4800602"));
	CHECK(a && is(zrec_field(a, "active"), "1"));
	CHECK(a && is(zrec_field(a, "updated"), "2026-11-23T15:30:13Z"));
	CHECK(a && zrec_field(a, "description") == NULL);
	zrec_unref(k);
	zrec_unref(a);
	json_decref(j);
	/* an account read whole is not partial */
	a = parse(ZK_ACCOUNT, ACCOUNT);
	CHECK(a && !zrec_partial(a));
	zrec_unref(a);
}

static void lists(void)
{
	json_t *items = json_array();
	struct zlist *l, *l2, *l3;
	struct zrec *r;
	char text[256];
	long i;

	for (int n = 0; n < 10000; n++) {
		snprintf(text, sizeof(text),
			 "{\"id\":\"id-%d\",\"name\":\"sa-%d\",\"body\":"
			 "{\"active\":%s}}",
			 n, n, n % 2 ? "true" : "false");
		json_array_append_new(items, json_loads(text, 0, NULL));
	}
	/* a duplicate name and an unaddressable one are dropped */
	json_array_append_new(items,
			      json_loads("{\"id\":\"dup\",\"name\":\"sa-7\"}",
					 0, NULL));
	json_array_append_new(
		items, json_loads("{\"id\":\"s\",\"name\":\"x/y\"}", 0, NULL));
	l = zlist_parse(ZK_ACCOUNT, items);
	json_decref(items);
	CHECK(l != NULL);
	CHECK(zlist_len(l) == 10000);
	for (int n = 0; n < 10000; n += 997) {
		snprintf(text, sizeof(text), "sa-%d", n);
		i = zlist_find(l, text);
		CHECK(i == n);
	}
	i = zlist_find(l, "sa-7");
	CHECK(i >= 0 && is(zrec_id(zlist_at(l, (size_t)i)), "id-7"));
	CHECK(zlist_find(l, "nope") == -1);
	CHECK(zlist_find(l, "x/y") == -1);
	CHECK(zlist_size(l) > 10000 * 40);

	/* an edit makes a new list; the old one is unchanged */
	r = parse(ZK_ACCOUNT, "{\"id\":\"new7\",\"name\":\"sa-7\",\"body\":"
			      "{\"active\":true}}");
	l2 = zlist_with(l, r);
	CHECK(l2 && zlist_len(l2) == 10000);
	CHECK(is(zrec_id(zlist_at(l2, (size_t)zlist_find(l2, "sa-7"))),
		 "new7"));
	CHECK(is(zrec_id(zlist_at(l, (size_t)zlist_find(l, "sa-7"))), "id-7"));
	zrec_unref(r);
	r = parse(ZK_ACCOUNT, "{\"id\":\"z\",\"name\":\"zz\"}");
	l3 = zlist_with(l2, r);
	zrec_unref(r);
	CHECK(l3 && zlist_len(l3) == 10001 && zlist_find(l3, "zz") == 10000);
	zlist_unref(l2);
	l2 = zlist_without(l3, "sa-0");
	CHECK(l2 && zlist_len(l2) == 10000 && zlist_find(l2, "sa-0") == -1);
	CHECK(zlist_find(l2, "zz") == 9999);
	zlist_unref(l2);
	zlist_unref(l3);
	zlist_unref(l);
}

static void kinds(void)
{
	const struct zfield *f;
	size_t n;

	/* every kind has an id; devices are listed by it */
	for (int k = 0; k < ZK_NKINDS; k++)
		CHECK(zkind_field((enum zkind)k, "id") >= 0);
	f = zkind_fields(ZK_DEVICE, &n);
	CHECK(n > 10 && f[zkind_field(ZK_DEVICE, "hostname")].flags & ZF_FILE);
	CHECK(!(f[zkind_field(ZK_DEVICE, "id")].flags & ZF_FILE));
	CHECK(!strcmp(zkind_name(ZK_KEY), "API key"));

	/* a kind is one object or a listing, never both; a child kind is
	 * listed; what is not a kind has no flags */
	for (int k = 0; k < ZK_NKINDS; k++) {
		unsigned fl = zkind_flags((enum zkind)k);

		CHECK(!(fl & ZKF_SINGLETON) != !(fl & ZKF_LISTED));
		CHECK(!(fl & ZKF_CHILD) || fl & ZKF_LISTED);
	}
	CHECK(zkind_flags(ZK_USER) == ZKF_SINGLETON);
	CHECK(zkind_flags(ZK_DEVICE) == ZKF_LISTED);
	CHECK(zkind_flags(ZK_KEY) == (ZKF_LISTED | ZKF_CHILD));
	CHECK(zkind_flags(ZK_NKINDS) == 0);
}

/* What each kind of server serves: a workspace everything, the Pro
 * management API only the current user, with its own fields. */
static void servers(void)
{
	struct zen *ws = zen_new(NULL, &(struct zen_cred){ 0 }, ZS_WORKSPACE);
	struct zen *pro = zen_new(NULL, &(struct zen_cred){ 0 }, ZS_PRO_API);
	int email = zkind_field(ZK_USER, "email");
	int svc = zkind_field(ZK_USER, "is_service_account");
	struct zrec *r;

	CHECK(ws && pro && email >= 0 && svc >= 0);
	for (int k = 0; k < ZK_NKINDS; k++) {
		CHECK(api_serves(ws, (enum zkind)k, -1));
		CHECK(api_serves(pro, (enum zkind)k, -1) == (k == ZK_USER));
	}
	CHECK(api_serves(ws, ZK_USER, zkind_field(ZK_USER, "id")));
	CHECK(api_serves(pro, ZK_USER, zkind_field(ZK_USER, "name")));
	CHECK(api_serves(ws, ZK_USER, svc) && !api_serves(pro, ZK_USER, svc));
	CHECK(!api_serves(ws, ZK_USER, email) &&
	      api_serves(pro, ZK_USER, email));
	CHECK(!api_serves(ws, ZK_USER, 100) && !api_serves(pro, ZK_DEVICE, 1));
	/* the documented shape of /users/me */
	r = parse(ZK_USER, "{\"id\": \"u1\", \"name\": \"ada\", "
			   "\"email\": \"ada@example.com\", "
			   "\"is_active\": true}");
	CHECK(r && !strcmp(zrec_field(r, "id"), "u1"));
	CHECK(!strcmp(zrec_field(r, "email"), "ada@example.com"));
	CHECK(!zrec_field(r, "is_service_account"));
	zrec_unref(r);
	zen_free(ws);
	zen_free(pro);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	records();
	owner_in_key_reply();
	lists();
	kinds();
	servers();
	return CHECK_DONE();
}
