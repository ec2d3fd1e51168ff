// SPDX-License-Identifier: MIT
/*
 * Routes, request bodies and reply fields of the ZenML API, and the
 * compact records the tree reads.  To show one more attribute of an
 * object, add a row to its field table below: the tree lists every ZF_FILE
 * field as a file and in info.json.
 */
#include "backend/api.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/secret.h"
#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

#define API "/api/v1"
#define PAGE_SIZE_MAX 10000 /* the server's maximum page size */
#define PAGES_MAX 100000
#define VALUE_MAX 16384 /* a longer field value is cut */
#define NAME_MAX_LEN 255 /* a path component */
#define ABSENT UINT32_MAX

/* ---- kinds and their fields ----------------------------------------- */

static const struct zfield server_fields[] = {
	{ "url", NULL, FT_STR, ZF_FILE }, /* the URL the daemon talks to */
	{ "id", "id", FT_STR, ZF_FILE },
	{ "name", "name", FT_STR, ZF_FILE },
	{ "version", "version", FT_STR, ZF_FILE },
	{ "auth_scheme", "auth_scheme", FT_STR, ZF_FILE },
	{ "deployment_type", "deployment_type", FT_STR, ZF_FILE },
};

/* A workspace's /current-user and the management API's /users/me. */
static const struct zfield user_fields[] = {
	{ "id", "id", FT_STR, ZF_FILE },
	{ "name", "name", FT_STR, ZF_FILE },
	{ "email", "email", FT_STR, ZF_FILE | ZF_PRO },
	{ "is_service_account", "body.is_service_account", FT_BOOL,
	  ZF_FILE | ZF_WORKSPACE },
	{ "active", "body.active", FT_BOOL, ZF_FILE | ZF_WORKSPACE },
};

static const struct zfield device_fields[] = {
	{ "id", "id", FT_STR, 0 },
	{ "status", "body.status", FT_STR, ZF_FILE },
	{ "hostname", "body.hostname", FT_STR, ZF_FILE },
	{ "os", "body.os", FT_STR, ZF_FILE },
	{ "ip_address", "body.ip_address", FT_STR, ZF_FILE },
	{ "client_id", "body.client_id", FT_STR, ZF_FILE },
	{ "trusted", "body.trusted_device", FT_BOOL, ZF_FILE },
	{ "expires", "body.expires", FT_TIME, ZF_FILE },
	{ "last_login", "metadata.last_login", FT_TIME, ZF_FILE },
	{ "created", "body.created", FT_TIME, ZF_FILE },
	{ "updated", "body.updated", FT_TIME, ZF_FILE },
	{ "city", "metadata.city", FT_STR, ZF_FILE },
	{ "country", "metadata.country", FT_STR, ZF_FILE },
	{ "failed_auth_attempts", "metadata.failed_auth_attempts", FT_INT,
	  ZF_FILE },
	{ "zenml_version", "metadata.zenml_version", FT_STR, ZF_FILE },
	{ "python_version", "metadata.python_version", FT_STR, ZF_FILE },
};

static const struct zfield account_fields[] = {
	{ "name", "name", FT_STR, 0 },
	{ "id", "id", FT_STR, ZF_FILE },
	{ "full_name", "body.full_name", FT_STR, ZF_FILE },
	{ "description", "metadata.description", FT_STR, ZF_FILE },
	{ "created", "body.created", FT_TIME, ZF_FILE },
	{ "updated", "body.updated", FT_TIME, ZF_FILE },
	{ "active", "body.active", FT_BOOL, 0 },
};

static const struct zfield key_fields[] = {
	{ "name", "name", FT_STR, 0 },
	{ "id", "id", FT_STR, ZF_FILE },
	{ "description", "metadata.description", FT_STR, ZF_FILE },
	{ "created", "body.created", FT_TIME, ZF_FILE },
	{ "updated", "body.updated", FT_TIME, ZF_FILE },
	{ "last_login", "metadata.last_login", FT_TIME, ZF_FILE },
	{ "last_rotated", "metadata.last_rotated", FT_TIME, ZF_FILE },
	{ "retain_period_minutes", "metadata.retain_period_minutes", FT_INT,
	  ZF_FILE },
	{ "active", "body.active", FT_BOOL, 0 },
};

#define FIELDS(f) f, sizeof(f) / sizeof(f[0])

static const struct kind {
	const char *what;
	/* The route of the object (a singleton) or of the listing; items
	 * are at listing "/" id.  A child kind's is below its parent's
	 * object: parent's route "/" parent's UUID, then this. */
	const char *route;
	const struct zfield *fields;
	size_t nfields;
	const char *name_field; /* what the object is listed by */
	unsigned flags; /* ZKF_* */
	enum zkind parent; /* with ZKF_CHILD */
} kinds[ZK_NKINDS] = {
	[ZK_SERVER] = { "server", API "/info", FIELDS(server_fields), "id",
			ZKF_SINGLETON },
	[ZK_USER] = { "current user", API "/current-user", FIELDS(user_fields),
		      "name", ZKF_SINGLETON },
	[ZK_DEVICE] = { "device", API "/devices", FIELDS(device_fields), "id",
			ZKF_LISTED },
	[ZK_ACCOUNT] = { "service account", API "/service_accounts",
			 FIELDS(account_fields), "name", ZKF_LISTED },
	[ZK_KEY] = { "API key", "/api_keys", FIELDS(key_fields), "name",
		     ZKF_LISTED | ZKF_CHILD, ZK_ACCOUNT },
};

unsigned zkind_flags(enum zkind k)
{
	return k < ZK_NKINDS ? kinds[k].flags : 0;
}

/* What differs by server in the calls below. */
static const struct api_server {
	unsigned kinds; /* a bit for each kind served */
	unsigned only; /* the fields of that server alone: ZF_* */
	const char *whoami; /* the current user's route */
} servers[] = {
	[ZS_WORKSPACE] = { (1u << ZK_NKINDS) - 1, ZF_WORKSPACE,
			   API "/current-user" },
	[ZS_PRO_API] = { 1u << ZK_USER, ZF_PRO, "/users/me" },
};

bool api_serves(struct zen *z, enum zkind k, int field)
{
	const struct api_server *sv = &servers[zen_server(z)];
	unsigned only;

	if (k >= ZK_NKINDS || !(sv->kinds & (1u << k)))
		return false;
	if (field < 0)
		return true;
	if ((size_t)field >= kinds[k].nfields)
		return false;
	only = kinds[k].fields[field].flags & (ZF_WORKSPACE | ZF_PRO);
	return !only || (only & sv->only);
}

const struct zfield *zkind_fields(enum zkind k, size_t *n)
{
	*n = kinds[k].nfields;
	return kinds[k].fields;
}

int zkind_field(enum zkind k, const char *name)
{
	for (size_t i = 0; i < kinds[k].nfields; i++)
		if (!strcmp(kinds[k].fields[i].name, name))
			return (int)i;
	return -1;
}

const char *zkind_name(enum zkind k)
{
	return kinds[k].what;
}

/* ---- records --------------------------------------------------------- */

struct zrec {
	struct ref refs;
	unsigned char kind;
	unsigned char nf;
	bool partial; /* no metadata in the reply */
	uint32_t size; /* bytes allocated */
	/* nf offsets into the text after them (ABSENT: no value) */
	uint32_t off[];
};

static const char *rec_text(const struct zrec *r)
{
	return (const char *)&r->off[r->nf];
}

struct zrec *zrec_ref(struct zrec *r)
{
	if (r)
		ref_get(&r->refs);
	return r;
}

void zrec_unref(struct zrec *r)
{
	if (r && ref_put(&r->refs))
		free(r);
}

enum zkind zrec_kind(const struct zrec *r)
{
	return (enum zkind)r->kind;
}

const char *zrec_get(const struct zrec *r, int i)
{
	if (i < 0 || i >= r->nf || r->off[i] == ABSENT)
		return NULL;
	return rec_text(r) + r->off[i];
}

const char *zrec_field(const struct zrec *r, const char *name)
{
	return zrec_get(r, zkind_field(r->kind, name));
}

const char *zrec_name(const struct zrec *r)
{
	const char *s = zrec_field(r, kinds[r->kind].name_field);

	return s ? s : "";
}

const char *zrec_id(const struct zrec *r)
{
	const char *s = zrec_field(r, "id");

	return s ? s : "";
}

size_t zrec_size(const struct zrec *r)
{
	return r->size;
}

bool zrec_partial(const struct zrec *r)
{
	return r->partial;
}

/* The value at a dotted path in obj, or NULL. */
static json_t *value_at(json_t *obj, const char *path)
{
	char key[64];
	size_t n;

	while (obj && *path) {
		n = strcspn(path, ".");
		if (n >= sizeof(key) || !json_is_object(obj))
			return NULL;
		memcpy(key, path, n);
		key[n] = '\0';
		obj = json_object_get(obj, key);
		path += n;
		if (*path == '.')
			path++;
	}
	return obj;
}

/* A field's text into buf; false when the server has no value. */
static bool field_text(const struct zfield *f, json_t *v, char *buf,
		       size_t size)
{
	char *s;

	if (!v || json_is_null(v))
		return false;
	buf[0] = '\0';
	switch (f->type) {
	case FT_BOOL:
		if (!json_is_boolean(v))
			return false;
		strlcpy_z(buf, json_is_true(v) ? "1" : "0", size);
		return true;
	case FT_INT:
		if (!json_is_integer(v))
			return false;
		snprintf(buf, size, "%" JSON_INTEGER_FORMAT,
			 json_integer_value(v));
		return true;
	case FT_TIME:
		if (!json_is_string(v))
			return false;
		if (time_iso_to_rfc3339(json_string_value(v), buf, size))
			strlcpy_z(buf, json_string_value(v), size);
		return true;
	default:
		if (json_is_string(v)) {
			strlcpy_z(buf, json_string_value(v), size);
			return true;
		}
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		if (!s)
			return false;
		strlcpy_z(buf, s, size);
		json_str_free(s);
		return true;
	}
}

/* Can s be one path component? */
static bool name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	return n && n <= NAME_MAX_LEN && !strchr(s, '/') && strcmp(s, ".") &&
	       strcmp(s, "..");
}

struct zrec *zrec_parse(enum zkind k, const void *json_obj, const char *url)
{
	const struct kind *kd = &kinds[k];
	json_t *obj = (json_t *)json_obj;
	uint32_t off[32];
	char *text, *buf;
	size_t used = 0, cap = 1024, n;
	struct zrec *r = NULL;

	if (!json_is_object(obj) || kd->nfields > 32)
		return NULL;
	buf = malloc(VALUE_MAX);
	text = malloc(cap);
	if (!buf || !text)
		goto out;
	for (size_t i = 0; i < kd->nfields; i++) {
		const struct zfield *f = &kd->fields[i];
		bool have;

		if (!f->json) {
			strlcpy_z(buf, url ? url : "", VALUE_MAX);
			have = true;
		} else {
			have = field_text(f, value_at(obj, f->json), buf,
					  VALUE_MAX);
		}
		if (!have) {
			off[i] = ABSENT;
			continue;
		}
		n = strlen(buf) + 1;
		if (used + n > cap) {
			char *nt;

			while (used + n > cap)
				cap *= 2;
			nt = realloc(text, cap);
			if (!nt)
				goto out;
			text = nt;
		}
		memcpy(text + used, buf, n);
		off[i] = (uint32_t)used;
		used += n;
	}
	r = malloc(sizeof(*r) + kd->nfields * sizeof(uint32_t) + used);
	if (!r)
		goto out;
	ref_init(&r->refs);
	r->kind = (unsigned char)k;
	r->nf = (unsigned char)kd->nfields;
	r->partial = false;
	for (size_t i = 0; i < kd->nfields; i++)
		if (kd->fields[i].json &&
		    !strncmp(kd->fields[i].json, "metadata.", 9) &&
		    !json_is_object(json_object_get(obj, "metadata")))
			r->partial = true;
	r->size =
		(uint32_t)(sizeof(*r) + kd->nfields * sizeof(uint32_t) + used);
	memcpy(r->off, off, kd->nfields * sizeof(uint32_t));
	memcpy((char *)rec_text(r), text, used);
	/* A listed object must have a name that can be a path component. */
	if (kd->flags & ZKF_LISTED && !name_ok(zrec_field(r, kd->name_field))) {
		free(r);
		r = NULL;
	}
out:
	free(text);
	free(buf);
	return r;
}

/* ---- lists ----------------------------------------------------------- */

struct zlist {
	struct ref refs;
	enum zkind kind;
	size_t n;
	struct zrec **v;
	/* open addressing by name: slot = position + 1, 0 = empty */
	uint32_t *index;
	size_t index_cap; /* a power of two, > 2n */
	size_t bytes;
};

struct zlist *zlist_ref(struct zlist *l)
{
	if (l)
		ref_get(&l->refs);
	return l;
}

void zlist_unref(struct zlist *l)
{
	if (!l || !ref_put(&l->refs))
		return;
	for (size_t i = 0; i < l->n; i++)
		zrec_unref(l->v[i]);
	free(l->v);
	free(l->index);
	free(l);
}

size_t zlist_len(const struct zlist *l)
{
	return l->n;
}

const struct zrec *zlist_at(const struct zlist *l, size_t i)
{
	return i < l->n ? l->v[i] : NULL;
}

size_t zlist_size(const struct zlist *l)
{
	return l->bytes;
}

long zlist_find(const struct zlist *l, const char *name)
{
	size_t mask = l->index_cap - 1, i;
	uint32_t slot;

	for (i = hash_str(name) & mask;; i = (i + 1) & mask) {
		slot = l->index[i];
		if (!slot)
			return -1;
		if (!strcmp(zrec_name(l->v[slot - 1]), name))
			return (long)slot - 1;
	}
}

/* A list of kind k taking over v[0..n) (the references), indexed; names
 * seen before are dropped (the first one stays).  NULL when out of memory
 * (v's references are dropped then too). */
static struct zlist *list_make(enum zkind k, struct zrec **v, size_t n)
{
	struct zlist *l = calloc(1, sizeof(*l));
	size_t cap = 16, kept = 0;

	if (!l)
		goto fail;
	while (cap <= 2 * n)
		cap *= 2;
	l->index = calloc(cap, sizeof(*l->index));
	if (!l->index)
		goto fail;
	ref_init(&l->refs);
	l->kind = k;
	l->index_cap = cap;
	l->v = v;
	l->bytes = sizeof(*l) + cap * sizeof(uint32_t) + n * sizeof(*v);
	for (size_t i = 0; i < n; i++) {
		l->n = kept;
		if (zlist_find(l, zrec_name(v[i])) >= 0) {
			zrec_unref(v[i]);
			continue;
		}
		size_t j = hash_str(zrec_name(v[i])) & (cap - 1);

		while (l->index[j])
			j = (j + 1) & (cap - 1);
		v[kept] = v[i];
		l->index[j] = (uint32_t)kept + 1;
		l->bytes += zrec_size(v[i]);
		kept++;
	}
	l->n = kept;
	return l;
fail:
	for (size_t i = 0; i < n; i++)
		zrec_unref(v[i]);
	free(v);
	if (l)
		free(l->index);
	free(l);
	return NULL;
}

struct zlist *zlist_parse(enum zkind k, const void *json_items)
{
	json_t *items = (json_t *)json_items, *it;
	struct zrec **v;
	size_t i, n = 0;

	if (!json_is_array(items))
		return NULL;
	v = malloc((json_array_size(items) + 1) * sizeof(*v));
	if (!v)
		return NULL;
	json_array_foreach (items, i, it) {
		struct zrec *r = zrec_parse(k, it, NULL);

		if (r)
			v[n++] = r;
	}
	return list_make(k, v, n);
}

/* A copy of l's records, with rec (if any) in place of its namesake or
 * appended, and without skip (if any). */
static struct zlist *list_edit(const struct zlist *l, struct zrec *rec,
			       const char *skip)
{
	struct zrec **v = malloc((l->n + 1) * sizeof(*v));
	bool placed = false;
	size_t n = 0;

	if (!v)
		return NULL;
	for (size_t i = 0; i < l->n; i++) {
		const char *name = zrec_name(l->v[i]);

		if (skip && !strcmp(name, skip))
			continue;
		if (rec && !placed && !strcmp(name, zrec_name(rec))) {
			v[n++] = zrec_ref(rec);
			placed = true;
		} else {
			v[n++] = zrec_ref(l->v[i]);
		}
	}
	if (rec && !placed)
		v[n++] = zrec_ref(rec);
	return list_make(l->kind, v, n);
}

struct zlist *zlist_with(const struct zlist *l, struct zrec *rec)
{
	return list_edit(l, rec, NULL);
}

struct zlist *zlist_without(const struct zlist *l, const char *name)
{
	return list_edit(l, NULL, name);
}

/* ---- calls ----------------------------------------------------------- */

/* s with everything but unreserved characters percent-encoded, for a
 * path segment.  -ENAMETOOLONG when it does not fit. */
static int path_escape(const char *s, char *out, size_t outsz)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t j = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (j + 4 > outsz)
			return -ENAMETOOLONG;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		    c == '.' || c == '~') {
			out[j++] = (char)c;
		} else {
			out[j++] = '%';
			out[j++] = hex[c >> 4];
			out[j++] = hex[c & 15];
		}
	}
	out[j] = '\0';
	return 0;
}

/* The route of kind k's collection (parent: for a child kind, the UUID of
 * the object it is listed under), plus "/" + the escaped item and a suffix
 * when item is not NULL. */
static int route(enum zkind k, const char *parent, const char *item,
		 const char *suffix, char *out, size_t size)
{
	char pe[3 * NAME_MAX_LEN + 1], ie[3 * NAME_MAX_LEN + 1];
	const struct kind *kd = &kinds[k];
	int n;

	if (kd->flags & ZKF_CHILD &&
	    (!parent || path_escape(parent, pe, sizeof(pe))))
		return -EINVAL;
	if (item && path_escape(item, ie, sizeof(ie)))
		return -ENAMETOOLONG;
	if (kd->flags & ZKF_CHILD)
		n = snprintf(out, size, "%s/%s%s", kinds[kd->parent].route, pe,
			     kd->route);
	else
		n = snprintf(out, size, "%s", kd->route);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	if (item)
		n += snprintf(out + n, size - n, "/%s%s", ie,
			      suffix ? suffix : "");
	return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

/* One object from a call's reply. */
static int one(struct zen *z, enum zkind k, const struct zen_req *rq,
	       struct zrec **out, json_t **reply, struct zen_err *e)
{
	json_t *obj = NULL;
	struct zrec *r;
	int ret;

	ret = zen_request(z, rq, &obj, e);
	if (ret)
		return ret;
	r = zrec_parse(k, obj, zen_url(z));
	if (!r) {
		zen_err_set(e, "%s %s: the reply is not a %s", rq->method,
			    rq->path, kinds[k].what);
		json_decref(obj);
		return -EIO;
	}
	if (out)
		*out = r;
	else
		zrec_unref(r);
	if (reply)
		*reply = obj;
	else
		json_decref(obj);
	return 0;
}

int api_server(struct zen *z, struct zrec **out, struct zen_err *e)
{
	return one(z, ZK_SERVER,
		   &(struct zen_req){ "GET", kinds[ZK_SERVER].route, NULL,
				      ZR_NOAUTH },
		   out, NULL, e);
}

int api_whoami(struct zen *z, struct zrec **out, struct zen_err *e)
{
	return one(z, ZK_USER,
		   &(struct zen_req){ "GET", servers[zen_server(z)].whoami },
		   out, NULL, e);
}

int api_whoami_as(struct zen *z, const struct secret *bearer, struct zrec **out,
		  struct zen_err *e)
{
	return one(z, ZK_USER,
		   &(struct zen_req){ "GET", servers[zen_server(z)].whoami,
				      .bearer = bearer },
		   out, NULL, e);
}

/* The records of a listing as its pages arrive, one item at a time. */
struct builder {
	enum zkind kind;
	struct zrec **v;
	size_t n, cap;
};

static int add_item(json_t *item, void *arg)
{
	struct builder *b = arg;
	struct zrec *r = zrec_parse(b->kind, item, NULL);

	if (!r)
		return 0; /* not an object of this kind: left out */
	if (b->n + 1 >= b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		struct zrec **v = realloc(b->v, cap * sizeof(*v));

		if (!v) {
			zrec_unref(r);
			return -ENOMEM;
		}
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n++] = r;
	return 0;
}

int api_list(struct zen *z, enum zkind k, const char *parent,
	     struct zlist **out, struct zen_err *e)
{
	struct builder b = { .kind = k };
	char base[1024], url[1100];
	json_t *page = NULL, *tp;
	struct zlist *l;
	long pages = 1;
	int ret;

	ret = route(k, parent, NULL, NULL, base, sizeof(base));
	if (ret) {
		zen_err_set(e, "list of %ss: bad route", kinds[k].what);
		return ret;
	}
	for (long i = 1; i <= pages; i++) {
		snprintf(url, sizeof(url), "%s?page=%ld&size=%d&hydrate=true",
			 base, i, PAGE_SIZE_MAX);
		/* Each item becomes a compact record as it is parsed: the
		 * page is never one JSON tree. */
		ret = zen_request(z,
				  &(struct zen_req){ .method = "GET",
						     .path = url,
						     .each = add_item,
						     .each_arg = &b },
				  &page, e);
		if (ret)
			goto out;
		tp = json_object_get(page, "total_pages");
		if (!json_is_integer(tp)) {
			zen_err_set(e, "GET %s: the reply is not a list", base);
			ret = -EIO;
			goto out;
		}
		pages = json_integer_value(tp);
		if (pages > PAGES_MAX)
			pages = PAGES_MAX;
		json_decref(page);
		page = NULL;
	}
	l = list_make(k, b.v, b.n);
	b.v = NULL;
	b.n = 0;
	if (!l) {
		ret = -ENOMEM;
		goto out;
	}
	*out = l;
out:
	json_decref(page);
	for (size_t i = 0; i < b.n; i++)
		zrec_unref(b.v[i]);
	free(b.v);
	return ret;
}

int api_get(struct zen *z, enum zkind k, const char *parent,
	    const char *name_or_id, struct zrec **out, struct zen_err *e)
{
	char path[1024];

	/* Names that can be no object's (a kind listed by id is named by
	 * UUIDs alone): no need to ask. */
	if (!name_ok(name_or_id) ||
	    (!strcmp(kinds[k].name_field, "id") && !uuid_valid(name_or_id))) {
		zen_err_set(e, "no %s '%s'", kinds[k].what, name_or_id);
		return -ENOENT;
	}
	if (route(k, parent, name_or_id, NULL, path, sizeof(path))) {
		zen_err_set(e, "get %s '%s': name too long", kinds[k].what,
			    name_or_id);
		return -ENAMETOOLONG;
	}
	return one(z, k, &(struct zen_req){ "GET", path }, out, NULL, e);
}

/* The new key value in a create or rotate reply, into guarded memory. */
static int new_key_value(json_t *reply, struct secret **out)
{
	json_t *v = value_at(reply, "body.key");

	if (!json_is_string(v) || strncmp(json_string_value(v), "ZENKEY_", 7))
		return -EIO;
	*out = secret_new(json_string_value(v), json_string_length(v));
	return *out ? 0 : -ENOMEM;
}

/* A call whose reply is an object of kind k that may carry a new key. */
static int write_call(struct zen *z, enum zkind k, const char *method,
		      const char *path, json_t *body, struct zrec **out,
		      struct secret **value, struct zen_err *e)
{
	json_t *reply = NULL;
	int ret;

	if (!body)
		return -ENOMEM;
	ret = one(z, k,
		  &(struct zen_req){ method, path, body,
				     value ? ZR_SECRET : 0 },
		  out, value ? &reply : NULL, e);
	json_decref(body);
	if (ret || !value)
		return ret;
	ret = new_key_value(reply, value);
	json_decref(reply);
	if (ret) {
		zen_err_set(e, "%s %s: the reply has no key", method, path);
		if (out) {
			zrec_unref(*out);
			*out = NULL;
		}
	}
	return ret;
}

int api_create(struct zen *z, enum zkind k, const char *parent,
	       const char *name, struct zrec **out, struct secret **value,
	       struct zen_err *e)
{
	char path[1024];

	if (route(k, parent, NULL, NULL, path, sizeof(path)))
		return -EINVAL;
	if (k == ZK_ACCOUNT)
		return write_call(z, k, "POST", path,
				  json_pack("{s:s,s:s,s:b}", "name", name,
					    "full_name", "", "active", 1),
				  out, NULL, e);
	if (k == ZK_KEY)
		return write_call(z, k, "POST", path,
				  json_pack("{s:s,s:s}", "name", name,
					    "description", ""),
				  out, value, e);
	return -EPERM;
}

int api_set_active(struct zen *z, enum zkind k, const char *parent,
		   const char *id, bool on, struct zrec **out,
		   struct zen_err *e)
{
	char path[1024];

	if (k != ZK_ACCOUNT && k != ZK_KEY)
		return -EPERM;
	if (route(k, parent, id, NULL, path, sizeof(path)))
		return -EINVAL;
	return write_call(z, k, "PUT", path, json_pack("{s:b}", "active", on),
			  out, NULL, e);
}

int api_lock_device(struct zen *z, const char *id, bool lock, struct zrec **out,
		    struct zen_err *e)
{
	char path[1024];

	if (route(ZK_DEVICE, NULL, id, NULL, path, sizeof(path)))
		return -EINVAL;
	return write_call(z, ZK_DEVICE, "PUT", path,
			  json_pack("{s:b}", "locked", lock), out, NULL, e);
}

int api_rotate_key(struct zen *z, const char *parent, const char *id,
		   unsigned long minutes, struct zrec **out,
		   struct secret **value, struct zen_err *e)
{
	char path[1024];

	if (route(ZK_KEY, parent, id, "/rotate", path, sizeof(path)))
		return -EINVAL;
	return write_call(z, ZK_KEY, "PUT", path,
			  json_pack("{s:I}", "retain_period_minutes",
				    (json_int_t)minutes),
			  out, value, e);
}

int api_delete(struct zen *z, enum zkind k, const char *parent, const char *id,
	       struct zen_err *e)
{
	char path[1024];

	if (!(zkind_flags(k) & ZKF_LISTED) ||
	    route(k, parent, id, NULL, path, sizeof(path)))
		return -EINVAL;
	return zen_request(z, &(struct zen_req){ "DELETE", path, NULL, ZR_ANY },
			   NULL, e);
}

/* A token goes into an HTTP header: printable ASCII only. */
static bool token_ok(const char *p, size_t len)
{
	if (!len || len > 8192)
		return false;
	for (size_t i = 0; i < len; i++)
		if (p[i] <= 0x20 || p[i] >= 0x7f)
			return false;
	return true;
}

/* The management API's token: the access token of a new exchange. */
static int exchange_token(struct zen *z, struct secret **out, struct zen_err *e)
{
	struct secret *s = NULL;
	int ret;

	ret = zen_exchange(z, &s, e);
	if (ret)
		return ret;
	if (!token_ok(s->buf, s->len)) {
		secret_unref(s);
		zen_err_set(e, "POST /auth/login: the reply is not a token");
		return -EIO;
	}
	*out = s;
	return 0;
}

bool api_token_lifetime_asked(struct zen *z)
{
	return zen_server(z) != ZS_PRO_API;
}

int api_token(struct zen *z, unsigned lifetime, struct secret **out,
	      struct zen_err *e)
{
	char path[128];
	json_t *tok = NULL;
	struct secret *s;
	int ret;

	if (zen_server(z) == ZS_PRO_API)
		return exchange_token(z, out, e);
	snprintf(path, sizeof(path),
		 API "/api_token?token_type=generic&expires_in=%u", lifetime);
	ret = zen_request(
		z, &(struct zen_req){ "GET", path, NULL, ZR_SECRET | ZR_ANY },
		&tok, e);
	if (ret)
		return ret;
	if (!json_is_string(tok) ||
	    !token_ok(json_string_value(tok), json_string_length(tok)))
		goto bad;
	s = secret_new(json_string_value(tok), json_string_length(tok));
	json_decref(tok);
	if (!s)
		return -ENOMEM;
	*out = s;
	return 0;
bad:
	zen_err_set(e, "GET " API "/api_token: the reply is not a token");
	json_decref(tok);
	return -EIO;
}
