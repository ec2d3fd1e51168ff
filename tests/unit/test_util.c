// SPDX-License-Identifier: MIT
/*
 * Unit tests for backend/util.c.  Self-contained: no framework, prints
 * "N passed, N failed" and exits non-zero on any failure.
 *
 * No literal JWT or ZENKEY_ value appears in this file: every token is
 * built at run time by base64-encoding a JSON payload.
 */
#include "backend/util.h"
#include "backend/jsonpage.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"

#define CHECK_EQ_INT(got, want)                                          \
	do {                                                             \
		long long g_ = (long long)(got), w_ = (long long)(want); \
		if (g_ == w_) {                                          \
			n_pass++;                                        \
		} else {                                                 \
			n_fail++;                                        \
			fprintf(stderr,                                  \
				"%s:%d: FAIL: %s == %lld, "              \
				"want %lld\n",                           \
				__FILE__, __LINE__, #got, g_, w_);       \
		}                                                        \
	} while (0)

#define CHECK_EQ_STR(got, want)                                    \
	do {                                                       \
		const char *g_ = (got), *w_ = (want);              \
		if (strcmp(g_, w_) == 0) {                         \
			n_pass++;                                  \
		} else {                                           \
			n_fail++;                                  \
			fprintf(stderr,                            \
				"%s:%d: FAIL: %s == \"%s\", "      \
				"want \"%s\"\n",                   \
				__FILE__, __LINE__, #got, g_, w_); \
		}                                                  \
	} while (0)

/* ---- base64 encoders used to build test inputs at run time ---- */

static void b64_encode(const void *in, size_t len, bool urlsafe, bool pad,
		       char *out, size_t outsz)
{
	const char *alpha =
		urlsafe ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			  "0123456789-_" :
			  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			  "0123456789+/";
	const unsigned char *p = in;
	size_t i, o = 0;
	uint32_t v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		if (o + 4 >= outsz)
			abort();
		out[o++] = alpha[v >> 18 & 63];
		out[o++] = alpha[v >> 12 & 63];
		out[o++] = alpha[v >> 6 & 63];
		out[o++] = alpha[v & 63];
	}
	if (o + 5 >= outsz)
		abort();
	if (len - i == 1) {
		v = (uint32_t)p[i] << 16;
		out[o++] = alpha[v >> 18 & 63];
		out[o++] = alpha[v >> 12 & 63];
		if (pad) {
			out[o++] = '=';
			out[o++] = '=';
		}
	} else if (len - i == 2) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = alpha[v >> 18 & 63];
		out[o++] = alpha[v >> 12 & 63];
		out[o++] = alpha[v >> 6 & 63];
		if (pad)
			out[o++] = '=';
	}
	out[o] = '\0';
}

/* header.payload.signature with the given payload JSON. */
static void make_jwt(const char *payload, char *out, size_t outsz)
{
	static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	static const unsigned char sig[32] = { 0x13, 0x37, 0xfe, 0xed };
	char h[128], p[2048], s[64];

	b64_encode(hdr, strlen(hdr), true, false, h, sizeof(h));
	b64_encode(payload, strlen(payload), true, false, p, sizeof(p));
	b64_encode(sig, sizeof(sig), true, false, s, sizeof(s));
	if ((size_t)snprintf(out, outsz, "%s.%s.%s", h, p, s) >= outsz)
		abort();
}

static int jwt_exp_s(const char *jwt, int64_t *exp)
{
	return jwt_exp(jwt, strlen(jwt), exp);
}

static int jwt_exp_of(const char *payload, int64_t *exp)
{
	char jwt[4096];

	make_jwt(payload, jwt, sizeof(jwt));
	return jwt_exp_s(jwt, exp);
}

/* "ZENKEY_" + base64(payload), as zenml.models.APIKey.encode() does. */
static void make_zenkey(const char *payload, bool pad, char *out, size_t outsz)
{
	char b[2048];

	b64_encode(payload, strlen(payload), false, pad, b, sizeof(b));
	if ((size_t)snprintf(out, outsz, "ZENKEY_%s", b) >= outsz)
		abort();
}

static int zenkey_id_of(const char *payload, char *id, size_t idsz)
{
	char key[4096];

	make_zenkey(payload, true, key, sizeof(key));
	return zenkey_id(key, strlen(key), id, idsz);
}

/* 64 hex chars, like secrets.token_hex(32), generated at run time. */
static void fake_secret(char *out)
{
	static const char hex[] = "0123456789abcdef";
	int i;

	for (i = 0; i < 64; i++)
		out[i] = hex[(i * 7 + 3) % 16];
	out[64] = '\0';
}

/* ---- parse_bool ---- */

static void test_parse_bool(void)
{
	static const struct {
		const char *s;
		bool v;
	} good[] = {
		{ "1", true },	    { "0", false },	{ "true", true },
		{ "TRUE", true },   { "True", true },	{ "tRuE", true },
		{ "false", false }, { "FALSE", false }, { "False", false },
		{ "yes", true },    { "YES", true },	{ "Yes", true },
		{ "no", false },    { "NO", false },	{ "No", false },
		{ "nO", false },    { "on", true },	{ "ON", true },
		{ "On", true },	    { "off", false },	{ "OFF", false },
		{ "Off", false },   { "oFf", false },
	};
	static const struct {
		const char *s;
		size_t len;
	} bad[] = {
		{ "", 0 },
		{ "\n", 1 },
		{ "2", 1 },
		{ " 1", 2 },
		{ "1 ", 2 },
		{ "1\n\n", 3 },
		{ "tru", 3 },
		{ "yes\r\n", 5 },
		{ "1\0", 2 },
		{ "\0"
		  "1",
		  2 },
		{ "t\0rue", 5 },
		{ "yes\r", 4 },
		{ "\n1", 2 },
		{ "y", 1 },
		{ "n", 1 },
		{ "truee", 5 },
		{ "of", 2 },
		{ "onn", 3 },
		{ "-1", 2 },
		{ "01", 2 },
		{ "10", 2 },
		{ "\t1", 2 },
		{ "true\nfalse", 10 },
		{ "true\nfalse\n", 11 },
		{ "\xc3\xbf", 2 },
	};
	char buf[32];
	size_t i, n;
	bool v;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		n = strlen(good[i].s);
		v = !good[i].v;
		CHECK_EQ_INT(parse_bool(good[i].s, n, &v), 0);
		CHECK(v == good[i].v);
		/* And with the one trailing newline. */
		memcpy(buf, good[i].s, n);
		buf[n] = '\n';
		v = !good[i].v;
		CHECK_EQ_INT(parse_bool(buf, n + 1, &v), 0);
		CHECK(v == good[i].v);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = true;
		CHECK_EQ_INT(parse_bool(bad[i].s, bad[i].len, &v), -EINVAL);
		CHECK(v == true); /* untouched on failure */
		v = false;
		CHECK_EQ_INT(parse_bool(bad[i].s, bad[i].len, &v), -EINVAL);
		CHECK(v == false);
	}
	/* The length is honoured: no terminator needed, none read. */
	CHECK_EQ_INT(parse_bool("truex", 4, &v), 0);
	CHECK(v == true);
	CHECK_EQ_INT(parse_bool("on\nx", 3, &v), 0);
	CHECK(v == true);
	CHECK_EQ_INT(parse_bool("on\nx", 4, &v), -EINVAL);
}

/* ---- parse_uint ---- */

static int pu(const char *s, uint64_t max, uint64_t *out)
{
	return parse_uint(s, strlen(s), max, out);
}

static void test_parse_uint(void)
{
	uint64_t v;

	v = 99;
	CHECK_EQ_INT(pu("0", 10, &v), 0);
	CHECK(v == 0);
	CHECK_EQ_INT(pu("0\n", 10, &v), 0);
	CHECK(v == 0);
	CHECK_EQ_INT(pu("10", 10, &v), 0);
	CHECK(v == 10);
	CHECK_EQ_INT(pu("10\n", 10, &v), 0);
	CHECK(v == 10);
	CHECK_EQ_INT(pu("007", 10, &v), 0);
	CHECK(v == 7);
	v = 99;
	CHECK_EQ_INT(pu("11", 10, &v), -ERANGE);
	CHECK(v == 99);
	CHECK_EQ_INT(pu("11\n", 10, &v), -ERANGE);
	CHECK_EQ_INT(pu("1", 0, &v), -ERANGE);
	CHECK_EQ_INT(pu("0", 0, &v), 0);
	CHECK(v == 0);

	/* Full 64-bit range. */
	CHECK_EQ_INT(pu("18446744073709551615", UINT64_MAX, &v), 0);
	CHECK(v == UINT64_MAX);
	CHECK_EQ_INT(pu("18446744073709551615\n", UINT64_MAX, &v), 0);
	CHECK(v == UINT64_MAX);
	v = 5;
	CHECK_EQ_INT(pu("18446744073709551616", UINT64_MAX, &v), -ERANGE);
	CHECK(v == 5);
	CHECK_EQ_INT(pu("18446744073709551620", UINT64_MAX, &v), -ERANGE);
	CHECK_EQ_INT(pu("99999999999999999999", UINT64_MAX, &v), -ERANGE);
	CHECK_EQ_INT(pu("123456789012345678901234567890", UINT64_MAX, &v),
		     -ERANGE);
	CHECK_EQ_INT(pu("000000000000000000000000000042", 100, &v), 0);
	CHECK(v == 42);
	CHECK_EQ_INT(pu("4294967296", UINT32_MAX, &v), -ERANGE);
	CHECK_EQ_INT(pu("4294967295", UINT32_MAX, &v), 0);
	CHECK(v == UINT32_MAX);

	/* Syntax errors win over range errors. */
	v = 5;
	CHECK_EQ_INT(pu("-1", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("+1", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("\n", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("1a", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("a1", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu(" 1", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("1 ", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("1\n\n", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("1\r\n", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("0x10", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("1e3", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("1.0", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("1,000", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(pu("99999999999999999999999x", UINT64_MAX, &v), -EINVAL);
	CHECK_EQ_INT(parse_uint("1\0", 2, 10, &v), -EINVAL);
	CHECK_EQ_INT(parse_uint("12", 1, 10, &v), 0);
	CHECK(v == 1);
	CHECK_EQ_INT(parse_uint("", 0, 10, &v), -EINVAL);
	CHECK(v == 1);
}

/* ---- time ---- */

static int tp(const char *s, time_t *t)
{
	return time_parse_iso(s, t);
}

static void test_time(void)
{
	static const char *const bad[] = {
		"",
		"garbage",
		"2024-01-02",
		"2024-01-02T03:04",
		"2024-01-02T03:04:05.",
		"2024-01-02T03:04:05.1234567890",
		"2024-01-02T03:04:05ZZ",
		"2024-01-02T03:04:05 ",
		" 2024-01-02T03:04:05",
		"2024-01-02T03:04:05+02",
		"2024-01-02T03:04:05+0200",
		"2024-01-02T03:04:05+2:00",
		"2024-01-02T03:04:05+24:00",
		"2024-01-02T03:04:05+02:60",
		"2024-01-02T03:04:05+02:00Z",
		"2024-01-02T03:04:05z+",
		"2024-01-02X03:04:05",
		"2024-01-02_03:04:05",
		"2024-01-02T03:04:05\n",
		"2024/01/02T03:04:05",
		"24-01-02T03:04:05",
		"02024-01-02T03:04:05",
		"2024-1-02T03:04:05",
		"2024-00-02T03:04:05",
		"2024-13-02T03:04:05",
		"2024-01-00T03:04:05",
		"2024-01-32T03:04:05",
		"2023-02-29T00:00:00",
		"2100-02-29T00:00:00",
		"2024-04-31T00:00:00",
		"2024-01-02T24:00:00",
		"2024-01-02T03:60:00",
		"2024-01-02T03:04:60",
		"0000-01-01T00:00:00",
		"-2024-01-02T03:04:05",
		"2024-01-02T03:04:05.12a",
		"2024-01-02T03:04:05,123",
		"2024-0a-02T03:04:05",
		"\xff\xfe",
	};
	char out[RFC3339_LEN], big[64];
	time_t t;
	size_t i;

	CHECK_EQ_INT(tp("2024-01-02T03:04:05", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02 03:04:05", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02T03:04:05.123456", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02T03:04:05.999999999", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02T03:04:05.1", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02T03:04:05Z", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02T03:04:05.5Z", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02T03:04:05+00:00", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02T03:04:05-00:00", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02T05:04:05+02:00", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02T05:04:05.123456+02:00", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-01T22:34:05-04:30", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("2024-01-02 05:04:05+02:00", &t), 0);
	CHECK_EQ_INT(t, 1704164645);
	CHECK_EQ_INT(tp("1970-01-01T00:00:00", &t), 0);
	CHECK_EQ_INT(t, 0);
	CHECK_EQ_INT(tp("1970-01-01T01:00:00+01:00", &t), 0);
	CHECK_EQ_INT(t, 0);
	CHECK_EQ_INT(tp("1969-12-31T23:59:59", &t), 0);
	CHECK_EQ_INT(t, -1);
	CHECK_EQ_INT(tp("2024-02-29T00:00:00", &t), 0);
	CHECK_EQ_INT(t, 1709164800);
	CHECK_EQ_INT(tp("2000-02-29T00:00:00", &t), 0);
	CHECK_EQ_INT(tp("2024-03-01T00:00:00", &t), 0);
	CHECK_EQ_INT(t, 1709251200);
	CHECK_EQ_INT(tp("2038-01-19T03:14:08", &t), 0);
	CHECK_EQ_INT(t, 2147483648LL);
	CHECK_EQ_INT(tp("2100-12-31T23:59:59", &t), 0);
	CHECK_EQ_INT(t, 4133980799LL);
	CHECK_EQ_INT(tp("9999-12-31T23:59:59", &t), 0);
	CHECK_EQ_INT(t, 253402300799LL);
	CHECK_EQ_INT(tp("0001-01-01T00:00:00", &t), 0);
	CHECK_EQ_INT(t, -62135596800LL);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = 12345;
		if (tp(bad[i], &t) != -EINVAL) {
			n_fail++;
			fprintf(stderr,
				"FAIL: time_parse_iso(\"%s\") "
				"accepted\n",
				bad[i]);
		} else {
			n_pass++;
		}
		CHECK(t == 12345);
	}
	CHECK_EQ_INT(tp(NULL, &t), -EINVAL);

	/* Formatting. */
	CHECK_EQ_INT(time_format_rfc3339(0, out, sizeof(out)), 0);
	CHECK_EQ_STR(out, "1970-01-01T00:00:00Z");
	CHECK_EQ_INT(time_format_rfc3339(1704164645, out, sizeof(out)), 0);
	CHECK_EQ_STR(out, "2024-01-02T03:04:05Z");
	CHECK_EQ_INT(
		time_format_rfc3339((time_t)2147483648LL, out, sizeof(out)), 0);
	CHECK_EQ_STR(out, "2038-01-19T03:14:08Z");
	CHECK_EQ_INT(time_format_rfc3339((time_t)253402300799LL, out,
					 sizeof(out)),
		     0);
	CHECK_EQ_STR(out, "9999-12-31T23:59:59Z");
	CHECK_EQ_INT(time_format_rfc3339(-1, out, sizeof(out)), 0);
	CHECK_EQ_STR(out, "1969-12-31T23:59:59Z");
	memset(big, 'x', sizeof(big));
	CHECK_EQ_INT(time_format_rfc3339(0, big, RFC3339_LEN - 1), -ENOSPC);
	CHECK(big[0] == 'x');
	CHECK_EQ_INT(time_format_rfc3339((time_t)253402300800LL, big,
					 sizeof(big)),
		     -ERANGE);
	CHECK(big[0] == 'x');
	CHECK_EQ_INT(time_format_rfc3339(0, big, sizeof(big)), 0);
	CHECK_EQ_INT(strlen(big), RFC3339_LEN - 1);

	/* Round trip. */
	CHECK_EQ_INT(time_iso_to_rfc3339("2024-01-02 05:04:05.5+02:00", out,
					 sizeof(out)),
		     0);
	CHECK_EQ_STR(out, "2024-01-02T03:04:05Z");
	CHECK_EQ_INT(time_iso_to_rfc3339("2024-02-29T23:59:59", out,
					 sizeof(out)),
		     0);
	CHECK_EQ_STR(out, "2024-02-29T23:59:59Z");
	CHECK_EQ_INT(time_iso_to_rfc3339("2024-12-31T23:30:00-01:00", out,
					 sizeof(out)),
		     0);
	CHECK_EQ_STR(out, "2025-01-01T00:30:00Z");
	CHECK_EQ_INT(time_iso_to_rfc3339("nope", out, sizeof(out)), -EINVAL);
	CHECK_EQ_INT(time_iso_to_rfc3339("2024-01-02T03:04:05", out, 20),
		     -ENOSPC);
}

/* ---- base64 ---- */

static void test_b64(void)
{
	static const unsigned char all[] = { 0xfb, 0xff, 0xbf, 0x00, 0x3e };
	unsigned char out[64];
	char enc[64];
	size_t n;

	n = 99;
	CHECK_EQ_INT(b64_decode("", 0, false, out, sizeof(out), &n), 0);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(b64_decode("TWFu", 4, false, out, sizeof(out), &n), 0);
	CHECK(n == 3 && memcmp(out, "Man", 3) == 0);
	CHECK_EQ_INT(b64_decode("TWE=", 4, false, out, sizeof(out), &n), 0);
	CHECK(n == 2 && memcmp(out, "Ma", 2) == 0);
	CHECK_EQ_INT(b64_decode("TWE", 3, false, out, sizeof(out), &n), 0);
	CHECK(n == 2 && memcmp(out, "Ma", 2) == 0);
	CHECK_EQ_INT(b64_decode("TQ==", 4, false, out, sizeof(out), &n), 0);
	CHECK(n == 1 && out[0] == 'M');
	CHECK_EQ_INT(b64_decode("TQ", 2, false, out, sizeof(out), &n), 0);
	CHECK(n == 1 && out[0] == 'M');

	/* Bytes that exercise '+', '/', '-' and '_'. */
	b64_encode(all, sizeof(all), false, true, enc, sizeof(enc));
	CHECK_EQ_STR(enc, "+/+/AD4=");
	CHECK_EQ_INT(b64_decode(enc, strlen(enc), false, out, sizeof(out), &n),
		     0);
	CHECK(n == sizeof(all) && memcmp(out, all, n) == 0);
	b64_encode(all, sizeof(all), true, false, enc, sizeof(enc));
	CHECK_EQ_STR(enc, "-_-_AD4");
	CHECK_EQ_INT(b64_decode(enc, strlen(enc), true, out, sizeof(out), &n),
		     0);
	CHECK(n == sizeof(all) && memcmp(out, all, n) == 0);

	/* Alphabets do not mix; url-safe has no padding. */
	n = 77;
	CHECK_EQ_INT(b64_decode("-_-_", 4, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("+/+/", 4, true, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("TWE=", 4, true, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(n, 77);

	/* Bad padding, bad lengths, bad characters. */
	CHECK_EQ_INT(b64_decode("T", 1, false, out, sizeof(out), &n), -EINVAL);
	CHECK_EQ_INT(b64_decode("TWFuT", 5, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("=", 1, false, out, sizeof(out), &n), -EINVAL);
	CHECK_EQ_INT(b64_decode("==", 2, false, out, sizeof(out), &n), -EINVAL);
	CHECK_EQ_INT(b64_decode("====", 4, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("T===", 4, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("TQ=", 3, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("TQ=A", 4, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("TQ==TQ==", 8, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("TW Fu", 5, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("TWFu\n", 5, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("TW\0u", 4, false, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(b64_decode("TW.u", 4, true, out, sizeof(out), &n),
		     -EINVAL);
	CHECK_EQ_INT(n, 77);

	/* Output space. */
	CHECK_EQ_INT(b64_decode("TWFu", 4, false, out, 2, &n), -ENOSPC);
	CHECK_EQ_INT(b64_decode("TWFu", 4, false, out, 3, &n), 0);
	CHECK_EQ_INT(n, 3);
	CHECK_EQ_INT(b64_decode("TWE", 3, true, out, 1, &n), -ENOSPC);
	CHECK_EQ_INT(b64_decode("TWE", 3, true, out, 2, &n), 0);
	CHECK_EQ_INT(b64_decode("", 0, true, NULL, 0, &n), 0);
	CHECK_EQ_INT(n, 0);
	/* The length is honoured. */
	CHECK_EQ_INT(b64_decode("TWFu!!!!", 4, false, out, sizeof(out), &n), 0);
	CHECK_EQ_INT(n, 3);
}

/* ---- JWT ---- */

static void test_jwt(void)
{
	char jwt[1024], tmp[2048], seg[256], hdr[128], pl[128];
	int64_t e;
	char *dot;

	e = 0;
	CHECK_EQ_INT(jwt_exp_of("{\"sub\":\"u\",\"exp\":1704164645}", &e), 0);
	CHECK_EQ_INT(e, 1704164645);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":0}", &e), 0);
	CHECK_EQ_INT(e, 0);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":4133980799}", &e), 0);
	CHECK_EQ_INT(e, 4133980799LL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":-5}", &e), 0);
	CHECK_EQ_INT(e, -5);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":9223372036854775807}", &e), 0);
	CHECK(e == INT64_MAX);
	/* A NumericDate may have a fraction; it is dropped. */
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":1704164645.75}", &e), 0);
	CHECK_EQ_INT(e, 1704164645);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":-1.5}", &e), 0);
	CHECK_EQ_INT(e, -2);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":2.0}", &e), 0);
	CHECK_EQ_INT(e, 2);
	/* ZenML's own claim set (zen_server/jwt.py): iat is a float. */
	CHECK_EQ_INT(jwt_exp_of("{\"sub\":\"0c8f4b5e-1111-4a2b-9c3d-"
				"5e6f7a8b9c0d\",\"iss\":\"a\",\"aud\":\"b\","
				"\"iat\":1704160000.123,\"exp\":1704163600,"
				"\"api_key_id\":\"x\",\"key_gen\":2}",
				&e),
		     0);
	CHECK_EQ_INT(e, 1704163600);

	/* No exp: never expires. */
	e = 42;
	CHECK_EQ_INT(jwt_exp_of("{\"sub\":\"u\",\"iat\":1}", &e), -ENOENT);
	CHECK_EQ_INT(jwt_exp_of("{}", &e), -ENOENT);
	CHECK_EQ_INT(jwt_exp_of("{\"EXP\":5}", &e), -ENOENT);
	CHECK_EQ_INT(e, 42);

	/* exp not a number. */
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":\"1704164645\"}", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":true}", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":null}", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":[1]}", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":{}}", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":1e300}", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":99999999999999999999}", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":1,\"exp\":2}", &e), -EINVAL);
	CHECK_EQ_INT(e, 42);

	/* Payload not a JSON object. */
	CHECK_EQ_INT(jwt_exp_of("[1,2]", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("1704164645", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("\"exp\"", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":1", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("{\"exp\":1} x", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_of("not json", &e), -EINVAL);
	CHECK_EQ_INT(e, 42);

	/* Not a JWT at all. */
	CHECK_EQ_INT(jwt_exp_s("", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_s(".", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_s("..", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_s("abc", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_s("a.b", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp_s("a.b.c", &e), -EINVAL);
	CHECK_EQ_INT(jwt_exp(NULL, 0, &e), -EINVAL);
	CHECK_EQ_INT(e, 42);

	/* Structural damage to a good token. */
	make_jwt("{\"exp\":100}", jwt, sizeof(jwt));
	CHECK_EQ_INT(jwt_exp_s(jwt, &e), 0);
	CHECK_EQ_INT(e, 100);
	snprintf(tmp, sizeof(tmp), "%s.x", jwt); /* 4 parts */
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	snprintf(tmp, sizeof(tmp), "%s=", jwt); /* padded sig */
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	snprintf(tmp, sizeof(tmp), " %s", jwt);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	snprintf(tmp, sizeof(tmp), "%s\n", jwt);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	snprintf(tmp, sizeof(tmp), "Bearer %s", jwt);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	/* Length honoured: the trailing garbage is not looked at. */
	CHECK_EQ_INT(jwt_exp(tmp + 7, strlen(jwt), &e), 0);
	/* Empty signature (alg "none") is still a JWT. */
	snprintf(tmp, sizeof(tmp), "%s", jwt);
	dot = strrchr(tmp, '.');
	dot[1] = '\0';
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), 0);
	/* Only two segments. */
	dot[0] = '\0';
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	/* Empty header or payload. */
	dot = strchr(jwt, '.');
	snprintf(tmp, sizeof(tmp), "%s", dot);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	b64_encode("{\"alg\":\"none\"}", 14, true, false, seg, sizeof(seg));
	snprintf(tmp, sizeof(tmp), "%s..sig", seg);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	/* Header that is not JSON / not an object. */
	b64_encode("[]", 2, true, false, seg, sizeof(seg));
	snprintf(tmp, sizeof(tmp), "%s%s", seg, dot);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	b64_encode("hdr", 3, true, false, seg, sizeof(seg));
	snprintf(tmp, sizeof(tmp), "%s%s", seg, dot);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	/* Standard-alphabet or padded payload is not base64url. */
	b64_encode("{\"exp\":100}", 11, true, true, seg, sizeof(seg));
	CHECK(strchr(seg, '=') != NULL);
	b64_encode("{\"alg\":\"none\"}", 14, true, false, hdr, sizeof(hdr));
	b64_encode("{\"exp\":100}", 11, true, true, pl, sizeof(pl));
	snprintf(tmp, sizeof(tmp), "%s.%s.", hdr, pl);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	b64_encode("{\"exp\":100,\"x\":\"\xfb\xff\"}", 20, false, false, pl,
		   sizeof(pl));
	CHECK(strchr(pl, '+') != NULL || strchr(pl, '/') != NULL);
	snprintf(tmp, sizeof(tmp), "%s.%s.", hdr, pl);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), -EINVAL);
	/* The same payload in base64url is fine. */
	b64_encode("{\"exp\":100}", 11, true, false, pl, sizeof(pl));
	snprintf(tmp, sizeof(tmp), "%s.%s.", hdr, pl);
	CHECK_EQ_INT(jwt_exp_s(tmp, &e), 0);
	CHECK_EQ_INT(e, 100);
}

/* ---- ZENKEY_ ---- */

static void test_zenkey(void)
{
	static const char uuid[] = "0c8f4b5e-1a2b-4c3d-9e8f-a0b1c2d3e4f5";
	static const char uuid_up[] = "0C8F4B5E-1A2B-4C3D-9E8F-A0B1C2D3E4F5";
	char secret[65], payload[512], key[1024], id[64];
	size_t n;

	fake_secret(secret);
	/* Exactly what pydantic's model_dump_json() produces. */
	snprintf(payload, sizeof(payload), "{\"id\":\"%s\",\"key\":\"%s\"}",
		 uuid, secret);
	memset(id, 'x', sizeof(id));
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), 0);
	CHECK_EQ_STR(id, uuid);
	memset(id, 'x', sizeof(id));
	CHECK_EQ_INT(zenkey_id_of(payload, id, 37), 0);
	CHECK_EQ_STR(id, uuid);

	/* Without padding, with spaces in the JSON, with extra fields. */
	make_zenkey(payload, false, key, sizeof(key));
	CHECK_EQ_INT(zenkey_id(key, strlen(key), id, sizeof(id)), 0);
	CHECK_EQ_STR(id, uuid);
	snprintf(payload, sizeof(payload),
		 "{ \"key\" : \"%s\" , \"id\" : \"%s\", \"v\": 1 }", secret,
		 uuid);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), 0);
	CHECK_EQ_STR(id, uuid);

	/* Upper-case id comes back canonical lower-case. */
	snprintf(payload, sizeof(payload), "{\"id\":\"%s\",\"key\":\"%s\"}",
		 uuid_up, secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), 0);
	CHECK_EQ_STR(id, uuid);

	/* Id buffer too small; nothing written. */
	memset(id, 'x', sizeof(id));
	CHECK_EQ_INT(zenkey_id_of(payload, id, 36), -ENOSPC);
	CHECK(id[0] == 'x');

	/* Malformed payloads. */
	snprintf(payload, sizeof(payload), "{\"id\":\"%s\"}", uuid);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload), "{\"key\":\"%s\"}", secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload), "{\"id\":\"%s\",\"key\":5}", uuid);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload), "{\"id\":\"%s\",\"key\":null}",
		 uuid);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload), "{\"id\":5,\"key\":\"%s\"}", secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload), "{\"id\":\"{%s}\",\"key\":\"%s\"}",
		 uuid, secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload), "{\"id\":\"%.35s\",\"key\":\"%s\"}",
		 uuid, secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload), "{\"id\":\"%sa\",\"key\":\"%s\"}",
		 uuid, secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload),
		 "{\"id\":\"0c8f4b5e1a2b4c3d9e8fa0b1c2d3e4f5\",\"key\":\"%s\"}",
		 secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload),
		 "{\"id\":\"0c8f4b5e-1a2b-4c3d-9e8f-a0b1c2d3e4fg\","
		 "\"key\":\"%s\"}",
		 secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload),
		 "{\"id\":\"%s\",\"id\":\"%s\",\"key\":\"%s\"}", uuid, uuid,
		 secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload),
		 "{\"id\":\"0c8f4b5e-1a2b-4c3d-9e8f-a0b1c2d3e4f\\u0000\","
		 "\"key\":\"%s\"}",
		 secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	snprintf(payload, sizeof(payload), "[\"%s\",\"%s\"]", uuid, secret);
	CHECK_EQ_INT(zenkey_id_of(payload, id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id_of("", id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id_of("{}", id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id_of("null", id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id_of("not json at all", id, sizeof(id)), -EINVAL);

	/* Malformed envelopes around a good payload. */
	snprintf(payload, sizeof(payload), "{\"id\":\"%s\",\"key\":\"%s\"}",
		 uuid, secret);
	make_zenkey(payload, true, key, sizeof(key));
	n = strlen(key);
	CHECK_EQ_INT(zenkey_id(key, n, id, sizeof(id)), 0);
	CHECK_EQ_INT(zenkey_id(key, 7, id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id(key, 0, id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id(key + 7, n - 7, id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id(key, n - 1, id, sizeof(id)), -EINVAL);
	key[0] = 'z'; /* "zENKEY_" */
	CHECK_EQ_INT(zenkey_id(key, n, id, sizeof(id)), -EINVAL);
	key[0] = 'Z';
	key[n] = '\n'; /* trailing newline */
	CHECK_EQ_INT(zenkey_id(key, n + 1, id, sizeof(id)), -EINVAL);
	key[n] = '\0';
	key[20] = '-'; /* url-safe character */
	CHECK_EQ_INT(zenkey_id(key, n, id, sizeof(id)), -EINVAL);
	key[20] = ' ';
	CHECK_EQ_INT(zenkey_id(key, n, id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id("ZENKEY_", 7, id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id("ZENKEY_====", 11, id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id("ZENKEY_e30=", 11, id, sizeof(id)), -EINVAL);
	CHECK_EQ_INT(zenkey_id(NULL, 10, id, sizeof(id)), -EINVAL);
	{
		/* Absurdly long value. */
		size_t big = 8192;
		char *k = malloc(big);

		if (!k)
			abort();
		memcpy(k, "ZENKEY_", 7);
		memset(k + 7, 'A', big - 7);
		CHECK_EQ_INT(zenkey_id(k, big, id, sizeof(id)), -EINVAL);
		free(k);
	}

	/* uuid_valid */
	CHECK(uuid_valid(uuid));
	CHECK(uuid_valid(uuid_up));
	CHECK(uuid_valid("00000000-0000-0000-0000-000000000000"));
	CHECK(uuid_valid("aBcDeF01-2345-6789-abcd-EF0123456789"));
	CHECK(!uuid_valid(NULL));
	CHECK(!uuid_valid(""));
	CHECK(!uuid_valid("0c8f4b5e-1a2b-4c3d-9e8f-a0b1c2d3e4f"));
	CHECK(!uuid_valid("0c8f4b5e-1a2b-4c3d-9e8f-a0b1c2d3e4f55"));
	CHECK(!uuid_valid("0c8f4b5e-1a2b-4c3d-9e8f-a0b1c2d3e4fg"));
	CHECK(!uuid_valid("0c8f4b5e1a2b-4c3d-9e8f-a0b1c2d3e4f5-"));
	CHECK(!uuid_valid("0c8f4b5e-1a2b-4c3d-9e8fa-0b1c2d3e4f5"));
	CHECK(!uuid_valid("{0c8f4b5e-1a2b-4c3d-9e8f-a0b1c2d3e4f5}"));
	CHECK(!uuid_valid("0c8f4b5e 1a2b 4c3d 9e8f a0b1c2d3e4f5"));
	CHECK(!uuid_valid("0c8f4b5e1a2b4c3d9e8fa0b1c2d3e4f5"));
	CHECK(!uuid_valid("0c8f4b5e-1a2b-4c3d-9e8f-a0b1c2d3e4f5\n"));
	CHECK(!uuid_valid("+c8f4b5e-1a2b-4c3d-9e8f-a0b1c2d3e4f5"));
}

/* ---- server error bodies ---- */

struct zerr_case {
	const char *body;
	int ret;
	const char *cls;
	const char *msg;
};

static void zerr_check(const char *body, size_t len, int ret, const char *cls,
		       const char *msg, int line)
{
	char c[128], m[512];
	int r;

	memset(c, 'x', sizeof(c));
	memset(m, 'x', sizeof(m));
	r = zerr_parse(body, len, c, sizeof(c), m, sizeof(m));
	if (r == ret && memchr(c, '\0', sizeof(c)) && strcmp(c, cls) == 0 &&
	    memchr(m, '\0', sizeof(m)) && strcmp(m, msg) == 0) {
		n_pass++;
		return;
	}
	n_fail++;
	fprintf(stderr,
		"%s:%d: FAIL: zerr_parse -> %d \"%.128s\" \"%.512s\", "
		"want %d \"%s\" \"%s\"\n",
		__FILE__, line, r,
		memchr(c, '\0', sizeof(c)) ? c : "(unterminated)",
		memchr(m, '\0', sizeof(m)) ? m : "(unterminated)", ret, cls,
		msg);
}

#define ZERR(body, ret, cls, msg) \
	zerr_check(body, strlen(body), ret, cls, msg, __LINE__)

static void test_zerr_parse(void)
{
	char body[2048], c[8], m[16], exp[256];
	size_t i;

	/* The five shapes. */
	ZERR("{\"detail\":[\"CredentialsNotValid\",\"Authentication error: "
	     "invalid credentials\"]}",
	     0, "CredentialsNotValid",
	     "Authentication error: invalid credentials");
	ZERR("{\"detail\":\"Not authenticated\"}", 0, "", "Not authenticated");
	ZERR("{\"detail\":[{\"loc\":[\"body\",\"name\"],\"msg\":\"field "
	     "required\",\"type\":\"value_error.missing\"}]}",
	     0, "", "body.name: field required");
	ZERR("{\"error\":\"access_denied\",\"error_description\":\"device "
	     "locked\",\"error_uri\":null}",
	     0, "access_denied", "device locked");
	ZERR("[\"ValueError\",\"Invalid request: bad\"]", 0, "ValueError",
	     "Invalid request: bad");

	/* Variations of each shape. */
	ZERR("  {\"detail\" : [ \"KeyError\" , \"x\" ] }\n", 0, "KeyError",
	     "x");
	ZERR("{\"detail\":[\"\",\"\"]}", 0, "", "");
	ZERR("{\"detail\":\"\"}", 0, "", "");
	ZERR("{\"detail\":\"m\",\"error\":\"e\"}", 0, "", "m");
	ZERR("{\"detail\":[{\"loc\":[\"query\",\"page\",0],\"msg\":\"bad\","
	     "\"type\":\"t\"},{\"loc\":[\"x\"],\"msg\":\"second\"}]}",
	     0, "", "query.page.0: bad");
	ZERR("{\"detail\":[{\"loc\":[],\"msg\":\"no loc\"}]}", 0, "", "no loc");
	ZERR("{\"detail\":[{\"msg\":\"loc missing\"}]}", 0, "", "loc missing");
	ZERR("{\"detail\":[{\"loc\":[-1,\"a\"],\"msg\":\"m\"}]}", 0, "",
	     "-1.a: m");
	ZERR("{\"error\":\"invalid_client\"}", 0, "invalid_client", "");
	ZERR("{\"error\":\"expired_token\",\"error_description\":null}", 0,
	     "expired_token", "");
	ZERR("{\"error\":\"authorization_pending\",\"error_description\":"
	     "\"Authentication error: device with client ID x is pending.\"}",
	     0, "authorization_pending",
	     "Authentication error: device with client ID x is pending.");
	ZERR("[\"A\",\"caf\\u00e9 \\u2713\"]", 0, "A",
	     "caf\xc3\xa9 \xe2\x9c\x93");

	/* Control characters are made safe for a log line. */
	ZERR("{\"detail\":[\"Cls\\n\",\"line1\\nline2\\r\\t\\u001b[31m\"]}", 0,
	     "Cls?", "line1?line2???[31m");
	ZERR("{\"detail\":\"nul\\u0000byte\"}", 0, "", "nul?byte");
	ZERR("{\"detail\":\"del\\u007f c1\\u0085 bidi\\u202e end\"}", 0, "",
	     "del? c1? bidi? end");
	ZERR("{\"detail\":\"ls\\u2028ps\\u2029\"}", 0, "", "ls?ps?");
	ZERR("{\"detail\":[{\"loc\":[\"a\\nb\"],\"msg\":\"c\\rd\"}]}", 0, "",
	     "a?b: c?d");

	/* Not one of the shapes: a printable prefix of the body. */
	ZERR("", -EINVAL, "", "");
	ZERR("Internal Server Error", -EINVAL, "", "Internal Server Error");
	ZERR("<html>\r\n<h1>502</h1>\n</html>", -EINVAL, "",
	     "<html>?"
	     "?<h1>502</h1>?</html>");
	ZERR("{}", -EINVAL, "", "{}");
	ZERR("[]", -EINVAL, "", "[]");
	ZERR("null", -EINVAL, "", "null");
	ZERR("42", -EINVAL, "", "42");
	ZERR("\"just a string\"", -EINVAL, "", "\"just a string\"");
	ZERR("{\"detail\":null}", -EINVAL, "", "{\"detail\":null}");
	ZERR("{\"detail\":5}", -EINVAL, "", "{\"detail\":5}");
	ZERR("{\"detail\":{}}", -EINVAL, "", "{\"detail\":{}}");
	ZERR("{\"detail\":[]}", -EINVAL, "", "{\"detail\":[]}");
	ZERR("{\"detail\":[\"only one\"]}", -EINVAL, "",
	     "{\"detail\":[\"only one\"]}");
	ZERR("{\"detail\":[\"a\",\"b\",\"c\"]}", -EINVAL, "",
	     "{\"detail\":[\"a\",\"b\",\"c\"]}");
	ZERR("{\"detail\":[\"a\",5]}", -EINVAL, "", "{\"detail\":[\"a\",5]}");
	ZERR("{\"detail\":[1,\"b\"]}", -EINVAL, "", "{\"detail\":[1,\"b\"]}");
	ZERR("{\"detail\":[{\"loc\":[\"a\"]}]}", -EINVAL, "",
	     "{\"detail\":[{\"loc\":[\"a\"]}]}");
	ZERR("{\"detail\":[{\"loc\":\"a\",\"msg\":\"m\"}]}", -EINVAL, "",
	     "{\"detail\":[{\"loc\":\"a\",\"msg\":\"m\"}]}");
	ZERR("{\"detail\":[{\"loc\":[{}],\"msg\":\"m\"}]}", -EINVAL, "",
	     "{\"detail\":[{\"loc\":[{}],\"msg\":\"m\"}]}");
	ZERR("{\"detail\":[{\"loc\":[\"a\"],\"msg\":5}]}", -EINVAL, "",
	     "{\"detail\":[{\"loc\":[\"a\"],\"msg\":5}]}");
	ZERR("{\"error\":5}", -EINVAL, "", "{\"error\":5}");
	ZERR("{\"error\":\"e\",\"error_description\":7}", -EINVAL, "",
	     "{\"error\":\"e\",\"error_description\":7}");
	ZERR("{\"message\":\"x\"}", -EINVAL, "", "{\"message\":\"x\"}");
	ZERR("[\"a\",\"b\"] trailing", -EINVAL, "", "[\"a\",\"b\"] trailing");
	ZERR("{\"detail\":\"x\"", -EINVAL, "", "{\"detail\":\"x\"");
	ZERR("\xff\xfe{\"detail\":\"x\"}", -EINVAL, "", "??{\"detail\":\"x\"}");
	ZERR("{\"detail\":\"\xff\"}", -EINVAL, "", "{\"detail\":\"?\"}");
	ZERR("{\"detail\":\"caf\xc3\xa9\"}", 0, "", "caf\xc3\xa9");
	zerr_check("{\"detail\":\"a\"}\0junk", 19, -EINVAL, "",
		   "{\"detail\":\"a\"}?junk", __LINE__);
	zerr_check("{\"detail\":\"a\"}xx", 14, 0, "", "a", __LINE__);
	zerr_check(NULL, 0, -EINVAL, "", "", __LINE__);

	/* The raw prefix is capped at 200 bytes. */
	for (i = 0; i < 500; i++)
		body[i] = (char)('a' + i % 26);
	body[500] = '\0';
	memcpy(exp, body, 200);
	exp[200] = '\0';
	ZERR(body, -EINVAL, "", exp);

	/* Truncation: always terminated, never splits a character. */
	memset(c, 'x', sizeof(c));
	memset(m, 'x', sizeof(m));
	snprintf(body, sizeof(body), "[\"ClassNameLong\",\"%s\"]",
		 "0123456789abcdefghij");
	CHECK_EQ_INT(zerr_parse(body, strlen(body), c, sizeof(c), m, sizeof(m)),
		     0);
	CHECK_EQ_STR(c, "ClassNa");
	CHECK_EQ_STR(m, "0123456789abcde");
	snprintf(body, sizeof(body), "{\"detail\":\"%s\"}",
		 "abcdefghijklm\\u00e9z"); /* 13 + 2-byte char */
	CHECK_EQ_INT(zerr_parse(body, strlen(body), c, sizeof(c), m, 15), 0);
	CHECK_EQ_STR(m, "abcdefghijklm");
	CHECK_EQ_INT(zerr_parse(body, strlen(body), c, sizeof(c), m, 16), 0);
	CHECK_EQ_STR(m, "abcdefghijklm\xc3\xa9");
	CHECK_EQ_INT(zerr_parse(body, strlen(body), c, 1, m, 1), 0);
	CHECK_EQ_STR(c, "");
	CHECK_EQ_STR(m, "");
	CHECK_EQ_INT(zerr_parse("garbage", 7, c, 1, m, 4), -EINVAL);
	CHECK_EQ_STR(m, "gar");
	snprintf(body, sizeof(body),
		 "{\"detail\":[{\"loc\":[\"body\",\"very_long_name\"],"
		 "\"msg\":\"field required\"}]}");
	CHECK_EQ_INT(zerr_parse(body, strlen(body), c, sizeof(c), m, sizeof(m)),
		     0);
	CHECK_EQ_STR(m, "body.very_long_");
	/* Bad arguments: nothing written. */
	memset(m, 'x', sizeof(m));
	CHECK_EQ_INT(zerr_parse("{}", 2, NULL, 0, m, sizeof(m)), -EINVAL);
	CHECK(m[0] == 'x');
	CHECK_EQ_INT(zerr_parse("{}", 2, c, sizeof(c), m, 0), -EINVAL);
	CHECK(m[0] == 'x');
	/* Deeply nested garbage. */
	for (i = 0; i < 1500; i++)
		body[i] = '[';
	body[1500] = '\0';
	CHECK_EQ_INT(zerr_parse(body, 1500, c, sizeof(c), m, sizeof(m)),
		     -EINVAL);
	CHECK_EQ_STR(m, "[[[[[[[[[[[[[[[");
}

/* ---- zerr_errno ---- */

static void test_zerr_errno(void)
{
	/* How ZenML 0.98 words a 401 for a disabled or removed credential. */
	static const char *const revoked[] = {
		"Authentication error: API key k1 associated with service "
		"account sa1 is not active",
		"Authentication error: service account sa1 associated with API "
		"key k1 is not active",
		"Authentication error: user alice is not active",
		"Authentication error: account alice is not active",
		"Authentication error: device 0c8f4b5e-1a2b-4c3d-9e8f-"
		"a0b1c2d3e4f5 is not active",
		"Authentication error: error retrieving API key 0c8f4b5e-1a2b-"
		"4c3d-9e8f-a0b1c2d3e4f5",
		"Authentication error: error retrieving token account 0c8f4b5e",
		"Authentication error: error retrieving token device 0c8f4b5e",
		"Authentication error: device for client ID x has been locked "
		"due to too many failed authentication attempts.",
		"Authentication error: device with client ID x is locked.",
		"Account INACTIVE",
		"user is Deactivated",
		"This key was REVOKED",
		"service account has been deleted",
		"Account is disabled",
		"NOT ACTIVE",
	};
	static const char *const rejected[] = {
		"",
		"Authentication error: invalid username or password",
		"Authentication error: invalid credentials",
		"Authentication error: error decoding API key",
		"Authentication error: could not verify key value for API "
		"key k1",
		"Authentication error: access token for API key k1 was issued "
		"for an API key generation that is no longer valid",
		"Authentication error: error decoding access token: Signature "
		"has expired.",
		"Authentication error: device x has expired",
		"Authentication error: missing CSRF token",
		"Authentication error: no credentials provided",
		"Not authenticated",
		"activate your account",
	};
	size_t i;

	for (i = 0; i < sizeof(revoked) / sizeof(revoked[0]); i++) {
		if (zerr_errno(401, "CredentialsNotValid", revoked[i]) ==
		    -EKEYREVOKED) {
			n_pass++;
		} else {
			n_fail++;
			fprintf(stderr, "FAIL: not revoked: %s\n", revoked[i]);
		}
	}
	for (i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++) {
		if (zerr_errno(401, "CredentialsNotValid", rejected[i]) ==
		    -EKEYREJECTED) {
			n_pass++;
		} else {
			n_fail++;
			fprintf(stderr, "FAIL: not rejected: %s\n",
				rejected[i]);
		}
	}
	CHECK_EQ_INT(zerr_errno(401, "", ""), -EKEYREJECTED);
	CHECK_EQ_INT(zerr_errno(401, NULL, NULL), -EKEYREJECTED);
	CHECK_EQ_INT(zerr_errno(401, "AccountLocked", ""), -EKEYREVOKED);
	CHECK_EQ_INT(zerr_errno(401, NULL, "key revoked"), -EKEYREVOKED);
	/* Revocation wording only matters on a 401. */
	CHECK_EQ_INT(zerr_errno(403, "", "user is not active"), -EPERM);
	CHECK_EQ_INT(zerr_errno(400, "access_denied", "device locked"),
		     -EINVAL);
	CHECK_EQ_INT(zerr_errno(404, "KeyError", "deleted"), -ENOENT);

	CHECK_EQ_INT(zerr_errno(403, "IllegalOperationError", "x"), -EPERM);
	CHECK_EQ_INT(zerr_errno(404, "KeyError", "x"), -ENOENT);
	CHECK_EQ_INT(zerr_errno(409, "EntityExistsError", "x"), -EEXIST);
	CHECK_EQ_INT(zerr_errno(400, "ValueError", "x"), -EINVAL);
	CHECK_EQ_INT(zerr_errno(422, "ValueError", "x"), -EINVAL);
	CHECK_EQ_INT(zerr_errno(429, "", "x"), -EAGAIN);
	CHECK_EQ_INT(zerr_errno(402, "", ""), -EINVAL);
	CHECK_EQ_INT(zerr_errno(405, "", ""), -EINVAL);
	CHECK_EQ_INT(zerr_errno(410, "", ""), -EINVAL);
	CHECK_EQ_INT(zerr_errno(499, "", ""), -EINVAL);
	CHECK_EQ_INT(zerr_errno(500, "RuntimeError", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(501, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(502, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(503, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(599, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(0, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(-1, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(200, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(302, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(399, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(600, "", ""), -EIO);
	CHECK_EQ_INT(zerr_errno(LONG_MAX, "", ""), -EIO);
}

/* ---- strlcpy_z ---- */

static void test_strlcpy(void)
{
	char d[8];

	memset(d, 'x', sizeof(d));
	CHECK_EQ_INT(strlcpy_z(d, "abc", sizeof(d)), 3);
	CHECK_EQ_STR(d, "abc");
	CHECK_EQ_INT(strlcpy_z(d, "abcdefghij", sizeof(d)), 10);
	CHECK_EQ_STR(d, "abcdefg");
	CHECK_EQ_INT(strlcpy_z(d, "abcdefg", sizeof(d)), 7);
	CHECK_EQ_STR(d, "abcdefg");
	CHECK_EQ_INT(strlcpy_z(d, "", sizeof(d)), 0);
	CHECK_EQ_STR(d, "");
	CHECK_EQ_INT(strlcpy_z(d, "abc", 1), 3);
	CHECK_EQ_STR(d, "");
}

/* ---- what came later: jwt_parse, text_escape, url_check, limits ---- */

static void test_later(void)
{
	/* {"alg":"none"} . {"sub":"me","exp":10.9,"iat":5,"device_id":"d"} */
	static const char jwt[] =
		"eyJhbGciOiJub25lIn0."
		"eyJzdWIiOiJtZSIsImV4cCI6MTAuOSwiaWF0Ijo1LCJkZXZpY2VfaWQiOiJkIn0."
		"c2ln";
	struct jwt_info ji;
	unsigned long max;
	const char *why;
	char out[64];

	CHECK_EQ_INT(jwt_parse(jwt, strlen(jwt), &ji), 0);
	CHECK(ji.has_exp && ji.exp == 10 && ji.has_iat && ji.iat == 5);
	CHECK_EQ_STR(ji.sub, "me");
	CHECK_EQ_STR(ji.device_id, "d");
	CHECK_EQ_INT(jwt_parse("a.b", 3, &ji), -EINVAL);
	/* {"sub":5}: a sub that is not a string */
	CHECK_EQ_INT(jwt_parse("eyJhIjoxfQ.eyJzdWIiOjV9.x", 26, &ji), -EINVAL);

	text_escape("a\nb\x1b[0m\xe2\x80\xaeZ\xff", 12, out, sizeof(out));
	CHECK_EQ_STR(out, "a\\x0ab\\x1b[0m\\u{202e}Z\\xff");
	text_escape("caf\xc3\xa9", 5, out, sizeof(out));
	CHECK_EQ_STR(out, "caf\xc3\xa9"); /* plain UTF-8 stays */
	text_escape("\x01\x01\x01\x01", 4, out, 9);
	CHECK_EQ_STR(out, "\\x01\\x01"); /* cut on an escape's boundary */

	CHECK_EQ_INT(url_check("https://zen.example.com:8080/x", &why), 0);
	CHECK_EQ_INT(url_check("http://127.0.0.1:1", &why), 0);
	CHECK_EQ_INT(url_check("http://user:pw@host", &why), -EINVAL);
	CHECK(why && strstr(why, "password"));
	CHECK_EQ_INT(url_check("http://host/a@b", &why), 0); /* in the path */
	CHECK_EQ_INT(url_check("ftp://host", &why), -EINVAL);
	CHECK_EQ_INT(url_check("notaurl", &why), -EINVAL);
	CHECK_EQ_INT(url_check("http://", &why), -EINVAL);
	CHECK_EQ_INT(url_check("http://h?x=1", &why), -EINVAL);
	CHECK_EQ_INT(url_check("http://h x", &why), -EINVAL);
	CHECK_EQ_INT(url_check("", &why), -EINVAL);

	CHECK_EQ_INT(max_lifetime_of("The maximum expiration time for generic "
				     "API tokens allowed by this server is "
				     "604800 seconds.",
				     &max),
		     0);
	CHECK(max == 604800);
	CHECK_EQ_INT(max_lifetime_of("604800 seconds", &max), -EINVAL);
	CHECK_EQ_INT(max_lifetime_of("maximum is 0 seconds", &max), -EINVAL);
	CHECK_EQ_INT(max_lifetime_of("maximum is x seconds", &max), -EINVAL);
	CHECK_EQ_INT(max_lifetime_of("maximum page is 3", &max), -EINVAL);
	CHECK_EQ_INT(max_lifetime_of(NULL, &max), -EINVAL);
}

/* ---- jsonpage_parse ------------------------------------------------- */

struct seen_items {
	int n;
	char names[8][16];
	int stop_at; /* return -ENOSPC at this item (0: never) */
};

static int note_item(json_t *item, void *arg)
{
	struct seen_items *s = arg;
	const char *name = json_string_value(json_object_get(item, "name"));

	if (s->stop_at && s->n + 1 == s->stop_at)
		return -ENOSPC;
	if (s->n < 8)
		snprintf(s->names[s->n], sizeof(s->names[0]), "%s",
			 name		      ? name :
			 json_is_object(item) ? "{}" :
						"?");
	s->n++;
	return 0;
}

static int page(const char *text, struct seen_items *s, json_t **rest)
{
	memset(s->names, 0, sizeof(s->names));
	s->n = 0;
	return jsonpage_parse(text, strlen(text), note_item, s, rest);
}

static void test_jsonpage(void)
{
	struct seen_items s = { 0 };
	json_t *rest = NULL;

	/* items one by one, in order; the other members in rest */
	CHECK(page(" {\"index\": 1, \"items\": [{\"name\": \"a\", \"x\": "
		   "[1, {\"y\": \"]}\\\"\"}]}, {\"name\": \"b\\u00e9\"}], "
		   "\"total_pages\": 3, \"z\": {\"items\": 7}}\n",
		   &s, &rest) == 0);
	CHECK(s.n == 2);
	CHECK(!strcmp(s.names[0], "a"));
	CHECK(!strcmp(s.names[1], "b\xc3\xa9"));
	CHECK(json_integer_value(json_object_get(rest, "total_pages")) == 3);
	CHECK(json_integer_value(json_object_get(rest, "index")) == 1);
	CHECK(json_object_get(rest, "items") == NULL);
	CHECK(json_integer_value(json_object_get(json_object_get(rest, "z"),
						 "items")) == 7);
	json_decref(rest);
	rest = NULL;

	/* empty items; items first or last; scalars of every kind */
	CHECK(page("{\"items\":[]}", &s, &rest) == 0 && s.n == 0);
	json_decref(rest);
	CHECK(page("{\"items\":[1,true,null,\"s\",-2.5e3],\"a\":false}", &s,
		   NULL) == 0 &&
	      s.n == 5);

	/* not a page: each gets -EIO, nothing half-done is returned */
	rest = NULL;
	CHECK(page("", &s, &rest) == -EIO && rest == NULL);
	CHECK(page("[]", &s, &rest) == -EIO);
	CHECK(page("{}", &s, &rest) == -EIO);
	CHECK(page("{\"items\": {}}", &s, &rest) == -EIO);
	CHECK(page("{\"items\": [], \"items\": []}", &s, &rest) == -EIO);
	CHECK(page("{\"items\": [1,]}", &s, &rest) == -EIO);
	CHECK(page("{\"items\": [1 2]}", &s, &rest) == -EIO);
	CHECK(page("{\"items\": [{\"a\": }]}", &s, &rest) == -EIO);
	CHECK(page("{\"items\": [{]}", &s, &rest) == -EIO);
	CHECK(page("{\"items\": [\"abc]}", &s, &rest) == -EIO);
	CHECK(page("{\"items\": []", &s, &rest) == -EIO);
	CHECK(page("{\"items\": []} x", &s, &rest) == -EIO);
	CHECK(page("{\"items\": [], }", &s, &rest) == -EIO);
	CHECK(page("{items: []}", &s, &rest) == -EIO);
	CHECK(page("{\"items\": [tru]}", &s, &rest) == -EIO);
	CHECK(page("{\"a\": 01, \"items\": []}", &s, &rest) == -EIO);
	CHECK(rest == NULL);
	CHECK(jsonpage_parse("{\"items\": [1]}\0", 16, note_item, &s, NULL) ==
	      -EIO);

	/* the caller's error stops the parse and is returned */
	s.stop_at = 2;
	CHECK(page("{\"items\": [{}, {}, {}]}", &s, NULL) == -ENOSPC);
	CHECK(s.n == 1);
}

/* ---- issue 18: minted tokens, log backslashes, URL redaction, clocks ---- */

/* jwt_check_minted() on the claims of a token with this payload. */
static int minted(const char *payload, const char *me, int64_t now, char *why,
		  size_t whysz)
{
	struct jwt_info ji;
	char jwt[4096];

	make_jwt(payload, jwt, sizeof(jwt));
	why[0] = '\0';
	if (jwt_parse(jwt, strlen(jwt), &ji))
		return -EINVAL;
	return jwt_check_minted(&ji, me, now, 45, why, whysz);
}

static void test_minted(void)
{
	char why[256];

	/* a token for me with an hour left */
	CHECK_EQ_INT(minted("{\"sub\":\"me\",\"exp\":4600,\"iat\":1000}", "me",
			    1000, why, sizeof(why)),
		     0);
	/* the user not known yet (a key's session is no JWT): any sub */
	CHECK_EQ_INT(minted("{\"sub\":\"u\",\"exp\":4600}", "", 1000, why,
			    sizeof(why)),
		     0);
	CHECK_EQ_INT(minted("{\"sub\":\"u\",\"exp\":4600}", NULL, 1000, why,
			    sizeof(why)),
		     0);
	/* exactly min_left left is enough */
	CHECK_EQ_INT(minted("{\"sub\":\"me\",\"exp\":1045}", "me", 1000, why,
			    sizeof(why)),
		     0);

	/* no sub: refused, whoever the daemon is */
	CHECK_EQ_INT(minted("{\"exp\":4600}", "me", 1000, why, sizeof(why)),
		     -EIO);
	CHECK(strstr(why, "without a user ('sub')"));
	CHECK_EQ_INT(minted("{\"exp\":4600}", "", 1000, why, sizeof(why)),
		     -EIO);
	CHECK_EQ_INT(minted("{\"sub\":\"\",\"exp\":4600}", "", 1000, why,
			    sizeof(why)),
		     -EIO);
	/* a sub too long to keep is no sub either */
	CHECK_EQ_INT(minted("{\"sub\":\"0123456789012345678901234567890123456"
			    "789012345678901234567890123456789\",\"exp\":4600}",
			    "", 1000, why, sizeof(why)),
		     -EIO);
	/* another user */
	CHECK_EQ_INT(minted("{\"sub\":\"you\",\"exp\":4600}", "me", 1000, why,
			    sizeof(why)),
		     -EIO);
	CHECK_EQ_STR(why, "the server sent a token for user 'you', not 'me'");

	/* no exp: a minted token that would never be refreshed */
	CHECK_EQ_INT(minted("{\"sub\":\"me\",\"iat\":1000}", "me", 1000, why,
			    sizeof(why)),
		     -EIO);
	CHECK(strstr(why, "without an expiry ('exp')"));

	/* too short to serve: 35 s tokens (the server's lifetime, from iat) */
	CHECK_EQ_INT(minted("{\"sub\":\"me\",\"exp\":1035,\"iat\":1000}", "me",
			    1000, why, sizeof(why)),
		     -EIO);
	CHECK_EQ_STR(why, "the server issues tokens of 35 s: too short to "
			  "serve (they must last 45 s or more)");
	/* long enough, but the clocks disagree */
	CHECK_EQ_INT(minted("{\"sub\":\"me\",\"exp\":1040,\"iat\":900}", "me",
			    1000, why, sizeof(why)),
		     -EIO);
	CHECK_EQ_STR(why, "the server sent a token that expires in 40 s "
			  "(clock skew?)");
	/* expired already; no iat to tell */
	CHECK_EQ_INT(minted("{\"sub\":\"me\",\"exp\":990}", "me", 1000, why,
			    sizeof(why)),
		     -EIO);
	CHECK_EQ_STR(why, "the server sent a token that expires in -10 s "
			  "(clock skew?)");
	CHECK_EQ_INT(minted("{\"sub\":\"me\",\"exp\":1044}", "me", 1000, why,
			    sizeof(why)),
		     -EIO);
	/* extreme values neither overflow nor pass */
	CHECK_EQ_INT(minted("{\"sub\":\"me\",\"exp\":-9223372036854775807,"
			    "\"iat\":9223372036854775807}",
			    "me", 1000, why, sizeof(why)),
		     -EIO);
	CHECK_EQ_INT(minted("{\"sub\":\"me\",\"exp\":9223372036854775807}",
			    "me", -1000, why, sizeof(why)),
		     0);
}

static void test_issue18(void)
{
	struct timespec a, b;
	bool ok = true;
	char out[64];
	long long ms;

	/* the log: a backslash doubled, so "\x1b" typed in a name is not
	 * an escape */
	CHECK_EQ_INT(text_escape_log("a\\x1b", 5, out, sizeof(out)), 6);
	CHECK_EQ_STR(out, "a\\\\x1b");
	text_escape_log("a\x1b\\", 3, out, sizeof(out));
	CHECK_EQ_STR(out, "a\\x1b\\\\");
	text_escape_log("\\\\\\", 3, out, 6); /* never half of a pair */
	CHECK_EQ_STR(out, "\\\\\\\\");
	text_escape("a\\b", 3, out, sizeof(out)); /* text_escape keeps it */
	CHECK_EQ_STR(out, "a\\b");

	/* a URL with a password is shown without it */
	url_redact("http://user:secretpw@host:8080/p@th?x", out, sizeof(out));
	CHECK_EQ_STR(out, "http://***@host:8080/p@th?x");
	url_redact("https://tok@host", out, sizeof(out));
	CHECK_EQ_STR(out, "https://***@host");
	url_redact("http://a@b:pw@host/", out, sizeof(out));
	CHECK_EQ_STR(out, "http://***@host/");
	url_redact("ftp://u:pw@h", out, sizeof(out));
	CHECK_EQ_STR(out, "ftp://***@h");
	url_redact("u:pw@h/x", out, sizeof(out)); /* no scheme */
	CHECK_EQ_STR(out, "***@h/x");
	url_redact("http://host/a@b", out, sizeof(out)); /* in the path */
	CHECK_EQ_STR(out, "http://host/a@b");
	url_redact("http://host#a@b", out, sizeof(out));
	CHECK_EQ_STR(out, "http://host#a@b");
	url_redact("http://u:pw@hostname", out, 12);
	CHECK_EQ_STR(out, "http://***@");
	url_redact(NULL, out, sizeof(out));
	CHECK_EQ_STR(out, "");

	/* a deadline on the monotonic clock */
	clock_gettime(CLOCK_MONOTONIC, &a);
	mono_deadline(1500, &b);
	ms = (b.tv_sec - a.tv_sec) * 1000LL + (b.tv_nsec - a.tv_nsec) / 1000000;
	CHECK(ms >= 1500 && ms < 1500 + 1000);
	CHECK(b.tv_nsec >= 0 && b.tv_nsec < 1000000000L);
	mono_deadline(-5, &b);
	ms = (b.tv_sec - a.tv_sec) * 1000LL + (b.tv_nsec - a.tv_nsec) / 1000000;
	CHECK(ms >= 0 && ms < 1000);
	for (int i = 0; i < 1000; i++) {
		mono_deadline(999 + i, &b);
		ok = ok && b.tv_nsec >= 0 && b.tv_nsec < 1000000000L;
	}
	CHECK(ok);
}

/* backoff_ms(): the bound doubles to the cap; full jitter spreads from a
 * tenth of the base, the upper half keeps doubling; Retry-After is a
 * floor (plus up to a quarter). */
static void test_backoff(void)
{
	for (int round = 0; round < 200; round++) {
		for (unsigned f = 1; f <= 10; f++) {
			unsigned long bound = 1000UL << (f - 1), w;

			if (bound > 60000)
				bound = 60000;
			w = backoff_ms(f, 1000, 60000, JITTER_FULL, 0);
			CHECK(w >= 100 && w <= bound);
			w = backoff_ms(f, 1000, 60000, JITTER_HALF, 0);
			CHECK(w >= bound / 2 && w <= bound);
		}
		CHECK(backoff_ms(1, 1000, 60000, JITTER_HALF, 30) >= 30000);
		CHECK(backoff_ms(1, 1000, 60000, JITTER_FULL, 30) <= 37500);
		CHECK(backoff_ms(40, 2000, 14000, JITTER_HALF, 0) >= 7000);
		CHECK(backoff_ms(40, 2000, 14000, JITTER_HALF, 0) <= 14000);
	}
}

int main(void)
{
	test_backoff();
	test_later();
	test_minted();
	test_issue18();
	test_parse_bool();
	test_parse_uint();
	test_time();
	test_b64();
	test_jwt();
	test_zenkey();
	test_zerr_parse();
	test_zerr_errno();
	test_strlcpy();
	test_jsonpage();
	return CHECK_DONE();
}
