// SPDX-License-Identifier: MIT
/*
 * libFuzzer targets for backend/util.c.  One source, built once per target
 * with -DFUZZ_<TARGET> (see tests/meson.build):
 *
 *   FUZZ_JWT_EXP	   jwt_exp() on the raw input
 *   FUZZ_ZENKEY_ID	   zenkey_id(); first byte 0: raw input, otherwise
 *			   "ZENKEY_" + base64(rest) so the JSON is explored
 *   FUZZ_ZERR_PARSE	   zerr_parse() with buffer sizes from the first
 *			   two bytes, then zerr_errno()
 *   FUZZ_TIME_PARSE_ISO   time_parse_iso() and a format/parse round trip
 *   FUZZ_PARSE_CTL	   parse_bool() and parse_uint()
 *   FUZZ_TEXT		   text_escape(), url_check(), max_lifetime_of()
 *   FUZZ_RECORDS	   zrec_parse() and zlist_parse() (backend/api.c)
 *   FUZZ_JSONPAGE	   jsonpage_parse() against jansson's parse of the
 *			   whole input
 *			   on replies as JSON: records never hold what a
 *			   path cannot carry, lists find every name
 *
 * Besides "no crash", each target checks the documented postconditions and
 * abort()s when one is violated.
 */
#include "backend/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ENSURE(c)                                                          \
	do {                                                               \
		if (!(c)) {                                                \
			fprintf(stderr, "%s:%d: violated: %s\n", __FILE__, \
				__LINE__, #c);                             \
			abort();                                           \
		}                                                          \
	} while (0)

/* An exact-size heap copy, so ASan sees any read past the length. */
static __attribute__((unused)) char *dup_exact(const uint8_t *data, size_t size,
					       bool nul)
{
	char *p = malloc(size + (nul ? 1 : 0) + (size == 0 && !nul));

	if (!p)
		abort();
	if (size)
		memcpy(p, data, size);
	if (nul)
		p[size] = '\0';
	return p;
}

#if defined(FUZZ_JWT_EXP)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p = dup_exact(data, size, false);
	int64_t exp = 0x5a5a5a5a;
	int r;

	r = jwt_exp(p, size, &exp);
	ENSURE(r == 0 || r == -EINVAL || r == -ENOENT);
	if (r)
		ENSURE(exp == 0x5a5a5a5a);
	free(p);
	return 0;
}

#elif defined(FUZZ_ZENKEY_ID)

static size_t b64_std(const uint8_t *in, size_t len, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				"abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i, o = 0;
	uint32_t v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
		    in[i + 2];
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		out[o++] = a[v >> 6 & 63];
		out[o++] = a[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)in[i] << 16;
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		out[o++] = '=';
		out[o++] = '=';
	} else if (len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		out[o++] = a[v >> 6 & 63];
		out[o++] = '=';
	}
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[40], *p;
	size_t n, i;
	int r;

	if (size == 0)
		return 0;
	if (data[0] == 0) {
		n = size - 1;
		p = dup_exact(data + 1, n, false);
	} else {
		p = malloc(7 + (size - 1 + 2) / 3 * 4);
		if (!p)
			abort();
		memcpy(p, "ZENKEY_", 7);
		n = 7 + b64_std(data + 1, size - 1, p + 7);
	}
	memset(id, 'x', sizeof(id));
	r = zenkey_id(p, n, id, 37);
	ENSURE(r == 0 || r == -EINVAL);
	if (r == 0) {
		ENSURE(id[36] == '\0' && uuid_valid(id));
		for (i = 0; i < 36; i++)
			ENSURE(id[i] < 'A' || id[i] > 'Z');
		ENSURE(id[37] == 'x');
	} else {
		ENSURE(id[0] == 'x');
	}
	free(p);
	return 0;
}

#elif defined(FUZZ_ZERR_PARSE)

static void check_safe(const char *s, size_t sz)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = strnlen(s, sz);

	ENSURE(n < sz);
	for (; *u; u++)
		ENSURE(*u >= 0x20 && *u != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *cls, *msg, *body;
	size_t clssz, msgsz;
	int r, e;

	if (size < 2)
		return 0;
	clssz = (size_t)data[0] % 64 + 1;
	msgsz = (size_t)data[1] + 1;
	cls = malloc(clssz);
	msg = malloc(msgsz);
	body = dup_exact(data + 2, size - 2, false);
	if (!cls || !msg)
		abort();
	r = zerr_parse(body, size - 2, cls, clssz, msg, msgsz);
	ENSURE(r == 0 || r == -EINVAL);
	check_safe(cls, clssz);
	check_safe(msg, msgsz);
	if (r)
		ENSURE(strlen(msg) <= 200);
	e = zerr_errno(401, cls, msg);
	ENSURE(e == -EKEYREVOKED || e == -EKEYREJECTED);
	free(body);
	free(msg);
	free(cls);
	return 0;
}

#elif defined(FUZZ_TIME_PARSE_ISO)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = dup_exact(data, size, true);
	char out[RFC3339_LEN];
	time_t t = 7, t2;
	int r;

	r = time_parse_iso(s, &t);
	ENSURE(r == 0 || r == -EINVAL || r == -ERANGE);
	if (r == 0) {
		/* Any accepted time re-parses from its RFC 3339 form. */
		r = time_format_rfc3339(t, out, sizeof(out));
		ENSURE(r == 0 || r == -ERANGE);
		if (r == 0) {
			ENSURE(strlen(out) == RFC3339_LEN - 1);
			ENSURE(time_parse_iso(out, &t2) == 0 && t2 == t);
		}
	} else {
		ENSURE(t == 7);
	}
	free(s);
	return 0;
}

#elif defined(FUZZ_PARSE_CTL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p = dup_exact(data, size, false);
	char buf[32];
	uint64_t v = 3, v2, max;
	bool b;
	int r;

	r = parse_bool(p, size, &b);
	ENSURE(r == 0 || r == -EINVAL);
	if (r == 0)
		ENSURE(size >= 1 && size <= 6);

	max = size > 0 ? (uint64_t)data[0] * 1000003u : 0;
	r = parse_uint(p, size, max, &v);
	ENSURE(r == 0 || r == -EINVAL || r == -ERANGE);
	if (r == 0) {
		ENSURE(v <= max);
		r = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
		ENSURE(parse_uint(buf, (size_t)r, max, &v2) == 0 && v2 == v);
	} else {
		ENSURE(v == 3);
	}
	r = parse_uint(p, size, UINT64_MAX, &v);
	ENSURE(r == 0 || r == -EINVAL || r == -ERANGE);
	free(p);
	return 0;
}

#elif defined(FUZZ_TEXT)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p = dup_exact(data, size, true), out[256];
	unsigned long max = 7;
	const char *why;
	size_t n;
	int r;

	n = text_escape(p, size, out, sizeof(out));
	ENSURE(n < sizeof(out) && out[n] == '\0' && strlen(out) == n);
	for (size_t i = 0; i < n; i++)
		ENSURE((unsigned char)out[i] >= 0x20 && out[i] != 0x7f);
	r = url_check(p, &why);
	ENSURE(r == 0 || (r == -EINVAL && why));
	if (r == 0)
		ENSURE(!strchr(p, ' ') && strchr(p, ':'));
	r = max_lifetime_of(p, &max);
	ENSURE(r == 0 || (r == -EINVAL && max == 7));
	if (r == 0)
		ENSURE(max > 0);
	free(p);
	return 0;
}

#elif defined(FUZZ_RECORDS)

#include <jansson.h>

#include "backend/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
	struct zlist *l;
	struct zrec *r;

	if (!j)
		return 0;
	for (int k = 0; k < ZK_NKINDS; k++) {
		r = zrec_parse((enum zkind)k, j, "http://x");
		if (r && k >= ZK_DEVICE) {
			const char *name = zrec_name(r);

			ENSURE(*name && !strchr(name, '/') &&
			       strcmp(name, ".") && strcmp(name, ".."));
		}
		zrec_unref(r);
		l = zlist_parse((enum zkind)k, j);
		if (l) {
			for (size_t i = 0; i < zlist_len(l); i++)
				ENSURE(zlist_find(l,
						  zrec_name(zlist_at(l, i))) ==
				       (long)i);
			zlist_unref(l);
		}
	}
	json_decref(j);
	return 0;
}

#elif defined(FUZZ_JSONPAGE)

#include <jansson.h>

#include "backend/jsonpage.h"

struct collected {
	json_t *items;
};

static int collect(json_t *item, void *arg)
{
	struct collected *c = arg;

	return json_array_append(c->items, item) ? -ENOMEM : 0;
}

/* Whatever jsonpage_parse() accepts, jansson accepts whole, and they
 * agree: the same items in order, the same other members. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct collected c = { json_array() };
	json_t *rest = NULL, *whole, *items;
	json_error_t err;
	int ret;

	ret = jsonpage_parse((const char *)data, size, collect, &c, &rest);
	if (ret) {
		ENSURE(ret == -EIO || ret == -ENOMEM);
		ENSURE(!rest);
		json_decref(c.items);
		return 0;
	}
	whole = json_loadb((const char *)data, size, 0, &err);
	if (!whole) {
		/* an item nested near the depth limit parses on its own */
		ENSURE(strstr(err.text, "depth"));
	} else {
		items = json_object_get(whole, "items");
		ENSURE(json_equal(items, c.items));
		json_object_del(whole, "items");
		ENSURE(json_equal(whole, rest));
		json_decref(whole);
	}
	json_decref(rest);
	json_decref(c.items);
	return 0;
}

#else
#error "define one FUZZ_<TARGET>, see the top of this file"
#endif
