// SPDX-License-Identifier: MIT
/*
 * Pure helpers: control-file parsing, time conversion, JWT and ZENKEY_
 * decoding, server error bodies.  No I/O, no global state; every input is
 * treated as hostile (lengths and JSON types are checked everywhere).
 */
#include "backend/util.h"

#include <errno.h>
#include <limits.h>
#include <math.h> /* isfinite(), a macro: no libm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "backend/banned.h" /* always the last include */

/* Upper bounds on what we are willing to decode at all. */
#define JWT_MAX_LEN 16384
#define ZENKEY_MAX_LEN 4096
#define ZERR_MAX_BODY (1024 * 1024)
#define ZERR_PREFIX_MAX 200

#define ZENKEY_PREFIX "ZENKEY_"
#define ZENKEY_PREFIX_LEN (sizeof(ZENKEY_PREFIX) - 1)
#define UUID_STR_LEN 36

/* ---- small ASCII helpers (locale independent) ---- */

static inline char ascii_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static inline bool ascii_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool ascii_xdigit(char c)
{
	return ascii_digit(c) || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F');
}

/* Case-insensitive comparison of buf[0..len) with the lowercase word w. */
static bool word_eq(const char *buf, size_t len, const char *w)
{
	size_t i;

	if (strlen(w) != len)
		return false;
	for (i = 0; i < len; i++)
		if (ascii_lower(buf[i]) != w[i])
			return false;
	return true;
}

/* Case-insensitive search for the lowercase needle in the string hay. */
static bool contains_ci(const char *hay, const char *needle)
{
	size_t hl, nl, i, j;

	if (!hay)
		return false;
	hl = strlen(hay);
	nl = strlen(needle);
	if (nl > hl)
		return false;
	for (i = 0; i + nl <= hl; i++) {
		for (j = 0; j < nl; j++)
			if (ascii_lower(hay[i + j]) != needle[j])
				break;
		if (j == nl)
			return true;
	}
	return false;
}

/* Strip the single optional trailing newline of a control-file write. */
static size_t strip_one_newline(const char *buf, size_t len)
{
	if (len > 0 && buf[len - 1] == '\n')
		return len - 1;
	return len;
}

size_t strlcpy_z(char *dst, const char *src, size_t dstsz)
{
	size_t n, srclen;

	if (!src)
		src = "";
	srclen = strlen(src);
	if (!dst || dstsz == 0)
		return srclen;
	n = srclen < dstsz - 1 ? srclen : dstsz - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return srclen;
}

/* ---- control files ---- */

int parse_bool(const char *buf, size_t len, bool *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };
	size_t i;

	len = buf ? strip_one_newline(buf, len) : 0;
	if (!out || len == 0)
		return -EINVAL;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (word_eq(buf, len, yes[i])) {
			*out = true;
			return 0;
		}
		if (word_eq(buf, len, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int parse_uint(const char *buf, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	bool over = false;
	size_t i;

	len = buf ? strip_one_newline(buf, len) : 0;
	if (!out || len == 0)
		return -EINVAL;
	/* Syntax first, so that "99999999999999999999x" is -EINVAL. */
	for (i = 0; i < len; i++)
		if (!ascii_digit(buf[i]))
			return -EINVAL;
	for (i = 0; i < len; i++) {
		unsigned int d = (unsigned int)(buf[i] - '0');

		if (v > (UINT64_MAX - d) / 10) {
			over = true;
			break;
		}
		v = v * 10 + d;
	}
	if (over || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

/* ---- time ---- */

static bool is_leap(long y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(long y, int m)
{
	static const int mdays[12] = { 31, 28, 31, 30, 31, 30,
				       31, 31, 30, 31, 30, 31 };

	if (m == 2 && is_leap(y))
		return 29;
	return mdays[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* Read exactly n digits at *p, advancing it. */
static bool read_digits(const char **p, int n, int *val)
{
	int v = 0, i;

	for (i = 0; i < n; i++) {
		if (!ascii_digit((*p)[i]))
			return false;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*val = v;
	return true;
}

int time_parse_iso(const char *s, time_t *out)
{
	const char *p = s;
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0, nfrac = 0;
	int64_t t;

	if (!s || !out)
		return -EINVAL;
	if (!read_digits(&p, 4, &y) || *p++ != '-' ||
	    !read_digits(&p, 2, &mo) || *p++ != '-' || !read_digits(&p, 2, &d))
		return -EINVAL;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return -EINVAL;
	p++;
	if (!read_digits(&p, 2, &h) || *p++ != ':' ||
	    !read_digits(&p, 2, &mi) || *p++ != ':' ||
	    !read_digits(&p, 2, &sec))
		return -EINVAL;
	if (*p == '.') {
		p++;
		while (ascii_digit(*p)) {
			p++;
			nfrac++;
		}
		if (nfrac == 0 || nfrac > 9)
			return -EINVAL;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '-' ? -1 : 1;
		if (!read_digits(&p, 2, &oh) || *p++ != ':' ||
		    !read_digits(&p, 2, &om))
			return -EINVAL;
		if (oh > 23 || om > 59)
			return -EINVAL;
	}
	if (*p != '\0')
		return -EINVAL;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
	    h > 23 || mi > 59 || sec > 59)
		return -EINVAL;

	t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
	/* Local time = UTC + offset, so UTC = local - offset. */
	t -= (int64_t)sign * (oh * 3600 + om * 60);
	if ((int64_t)(time_t)t != t)
		return -ERANGE;
	*out = (time_t)t;
	return 0;
}

int time_format_rfc3339(time_t t, char *out, size_t outsz)
{
	char buf[64];
	struct tm tm;
	int n;

	if (!out)
		return -EINVAL;
	if (outsz < RFC3339_LEN)
		return -ENOSPC;
	if (!gmtime_r(&t, &tm))
		return -ERANGE;
	if (tm.tm_year < 1 - 1900 || tm.tm_year > 9999 - 1900)
		return -ERANGE;
	n = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02dZ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec);
	if (n != RFC3339_LEN - 1)
		return -ERANGE;
	memcpy(out, buf, RFC3339_LEN);
	return 0;
}

int time_iso_to_rfc3339(const char *s, char *out, size_t outsz)
{
	time_t t;
	int ret;

	ret = time_parse_iso(s, &t);
	if (ret)
		return ret;
	return time_format_rfc3339(t, out, outsz);
}

/* ---- base64 ---- */

static int b64_value(char c, bool urlsafe)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (urlsafe ? '-' : '+'))
		return 62;
	if (c == (urlsafe ? '_' : '/'))
		return 63;
	return -1;
}

int b64_decode(const char *in, size_t len, bool urlsafe, unsigned char *out,
	       size_t outsz, size_t *outlen)
{
	size_t i, n, need, o = 0;
	uint32_t acc = 0;
	int bits = 0;

	if ((!in && len) || !outlen)
		return -EINVAL;
	n = len;
	if (!urlsafe && n > 0 && in[n - 1] == '=') {
		/* Padding, when present, must complete the last quantum. */
		if (n % 4 != 0)
			return -EINVAL;
		n--;
		if (in[n - 1] == '=')
			n--;
	}
	if (n % 4 == 1)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (b64_value(in[i], urlsafe) < 0)
			return -EINVAL;
	need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
	if (need > outsz)
		return -ENOSPC;
	if (need && !out)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		acc = (acc << 6) | (uint32_t)b64_value(in[i], urlsafe);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	*outlen = o;
	return 0;
}

/* ---- JWT ---- */

/* Decode one base64url JWT segment and parse it as a JSON object. */
static int jwt_segment(const char *seg, size_t len, json_t **out)
{
	unsigned char *buf;
	size_t cap, n;
	json_t *j = NULL;

	if (len == 0)
		return -EINVAL;
	cap = len / 4 * 3 + 3;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	if (b64_decode(seg, len, true, buf, cap, &n) == 0)
		j = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES,
			       NULL);
	free(buf);
	if (!json_is_object(j)) {
		json_decref(j);
		return -EINVAL;
	}
	*out = j;
	return 0;
}

/* A NumericDate (RFC 7519 section 2): an integer, or a real rounded
 * down.  -EINVAL for anything else. */
static int numeric_date(const json_t *e, int64_t *out)
{
	double r;
	int64_t v;

	if (json_is_integer(e)) {
		*out = json_integer_value(e);
		return 0;
	}
	if (!json_is_real(e))
		return -EINVAL;
	r = json_real_value(e);
	if (!isfinite(r) || r < -9.2e18 || r > 9.2e18)
		return -EINVAL;
	v = (int64_t)r; /* toward zero ... */
	if ((double)v > r)
		v--; /* ... then down */
	*out = v;
	return 0;
}

int jwt_parse(const char *jwt, size_t len, struct jwt_info *out)
{
	const char *dot1, *dot2, *sig;
	struct jwt_info info = { 0 };
	json_t *hdr, *pl, *e;
	size_t i;
	int ret;

	if (!jwt || !out || len == 0 || len > JWT_MAX_LEN)
		return -EINVAL;
	dot1 = memchr(jwt, '.', len);
	if (!dot1)
		return -EINVAL;
	dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - jwt));
	if (!dot2)
		return -EINVAL;
	/* The signature: base64url characters only, no third dot. */
	sig = dot2 + 1;
	for (i = 0; i < len - (size_t)(sig - jwt); i++)
		if (b64_value(sig[i], true) < 0)
			return -EINVAL;

	ret = jwt_segment(jwt, (size_t)(dot1 - jwt), &hdr);
	if (ret)
		return ret;
	json_decref(hdr);
	ret = jwt_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1), &pl);
	if (ret)
		return ret;

	e = json_object_get(pl, "exp");
	if (e) {
		ret = numeric_date(e, &info.exp);
		info.has_exp = !ret;
	}
	e = json_object_get(pl, "iat");
	if (!ret && e) {
		ret = numeric_date(e, &info.iat);
		info.has_iat = !ret;
	}
	e = json_object_get(pl, "sub");
	if (!ret && e) {
		if (!json_is_string(e))
			ret = -EINVAL;
		else if (json_string_length(e) < sizeof(info.sub))
			memcpy(info.sub, json_string_value(e),
			       json_string_length(e) + 1);
	}
	e = json_object_get(pl, "device_id");
	if (!ret && json_is_string(e) &&
	    json_string_length(e) < sizeof(info.device_id))
		memcpy(info.device_id, json_string_value(e),
		       json_string_length(e) + 1);
	e = json_object_get(pl, "api_key_id");
	if (!ret && json_is_string(e) &&
	    json_string_length(e) < sizeof(info.api_key_id))
		memcpy(info.api_key_id, json_string_value(e),
		       json_string_length(e) + 1);
	json_decref(pl);
	if (ret == 0)
		*out = info;
	return ret;
}

int jwt_check_minted(const struct jwt_info *ji, const char *me, int64_t now,
		     int64_t min_left, char *why, size_t whysz)
{
	int64_t left, life;

	if (!ji->sub[0]) {
		snprintf(why, whysz,
			 "the server sent a token without a user ('sub')");
		return -EIO;
	}
	if (me && me[0] && strcmp(me, ji->sub)) {
		snprintf(why, whysz,
			 "the server sent a token for user '%s', not '%s'",
			 ji->sub, me);
		return -EIO;
	}
	if (!ji->has_exp) {
		snprintf(why, whysz,
			 "the server sent a token without an expiry ('exp')");
		return -EIO;
	}
	if (__builtin_sub_overflow(ji->exp, now, &left))
		left = ji->exp < 0 ? INT64_MIN : INT64_MAX;
	if (left >= min_left)
		return 0;
	/* Its lifetime, where the server said when it was made: a server
	 * whose tokens are all too short, not a clock that is off. */
	if (ji->has_iat && !__builtin_sub_overflow(ji->exp, ji->iat, &life) &&
	    life > 0 && life < min_left)
		snprintf(why, whysz,
			 "the server issues tokens of %lld s: too short to "
			 "serve (they must last %lld s or more)",
			 (long long)life, (long long)min_left);
	else
		snprintf(why, whysz,
			 "the server sent a token that expires in %lld s "
			 "(clock skew?)",
			 (long long)left);
	return -EIO;
}

int jwt_exp(const char *jwt, size_t len, int64_t *exp)
{
	struct jwt_info info;
	int ret;

	if (!exp)
		return -EINVAL;
	ret = jwt_parse(jwt, len, &info);
	if (ret)
		return ret;
	if (!info.has_exp)
		return -ENOENT;
	*exp = info.exp;
	return 0;
}

/* ---- ZENKEY_ ---- */

bool uuid_valid(const char *s)
{
	size_t i;

	if (!s)
		return false;
	for (i = 0; i < UUID_STR_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!ascii_xdigit(s[i])) {
			return false;
		}
	}
	return s[UUID_STR_LEN] == '\0';
}

int zenkey_id(const char *key, size_t len, char *id, size_t idsz)
{
	unsigned char buf[ZENKEY_MAX_LEN / 4 * 3 + 3];
	json_t *root = NULL, *jid, *jkey;
	const char *sid;
	size_t n = 0, i;
	int ret = -EINVAL;

	if (!key || !id)
		return -EINVAL;
	if (len <= ZENKEY_PREFIX_LEN || len > ZENKEY_MAX_LEN ||
	    memcmp(key, ZENKEY_PREFIX, ZENKEY_PREFIX_LEN) != 0)
		return -EINVAL;
	if (idsz < UUID_STR_LEN + 1)
		return -ENOSPC;
	if (b64_decode(key + ZENKEY_PREFIX_LEN, len - ZENKEY_PREFIX_LEN, false,
		       buf, sizeof(buf), &n) != 0)
		goto out;
	root = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root))
		goto out;
	jid = json_object_get(root, "id");
	jkey = json_object_get(root, "key");
	if (!json_is_string(jid) || !json_is_string(jkey))
		goto out;
	sid = json_string_value(jid);
	if (json_string_length(jid) != UUID_STR_LEN || !uuid_valid(sid))
		goto out;
	for (i = 0; i < UUID_STR_LEN; i++)
		id[i] = ascii_lower(sid[i]);
	id[UUID_STR_LEN] = '\0';
	ret = 0;
out:
	/*
	 * Our decoded copy is wiped below; wipe jansson's copy of the secret
	 * too (a heap buffer it owns, so writing through the cast is fine).
	 */
	jkey = json_object_get(root, "key");
	if (json_is_string(jkey))
		sodium_memzero((void *)json_string_value(jkey),
			       json_string_length(jkey));
	json_decref(root);
	sodium_memzero(buf, sizeof(buf));
	return ret;
}

/* ---- server error bodies ---- */

/* An output string that is truncated on a character boundary. */
struct sbuf {
	char *p;
	size_t sz; /* capacity including the NUL */
	size_t n; /* bytes used, excluding the NUL */
	bool full;
};

static void sbuf_init(struct sbuf *b, char *p, size_t sz)
{
	b->p = p;
	b->sz = sz;
	b->n = 0;
	b->full = false;
	p[0] = '\0';
}

static void sbuf_put(struct sbuf *b, const char *s, size_t len)
{
	if (b->full)
		return;
	if (len > b->sz - 1 - b->n) {
		b->full = true;
		return;
	}
	memcpy(b->p + b->n, s, len);
	b->n += len;
	b->p[b->n] = '\0';
}

/* Length of the UTF-8 sequence at s (at most len bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t len, uint32_t *cp)
{
	size_t n, i;
	uint32_t c;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	} else if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		c = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		c = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		c = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n > len)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && c < 0x800) || (n == 4 && c < 0x10000) || c > 0x10ffff ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

/* Code points that could corrupt or spoof a log line. */
static bool cp_unsafe(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f) ||
	       (c >= 0x200e && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e) ||
	       (c >= 0x2066 && c <= 0x2069);
}

/*
 * Append s[0..len) with unsafe characters (and invalid UTF-8 bytes)
 * replaced by '?'.  With ascii_only every byte >= 0x80 becomes '?'.
 */
static void sbuf_put_safe(struct sbuf *b, const char *s, size_t len,
			  bool ascii_only)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, n;
	uint32_t cp = 0;

	while (i < len && !b->full) {
		if (ascii_only && u[i] >= 0x80)
			n = 0;
		else
			n = utf8_seq(u + i, len - i, &cp);
		if (n == 0 || cp_unsafe(cp)) {
			sbuf_put(b, "?", 1);
			i += n ? n : 1;
		} else {
			sbuf_put(b, s + i, n);
			i += n;
		}
	}
}

static void sbuf_put_json_str(struct sbuf *b, const json_t *s)
{
	sbuf_put_safe(b, json_string_value(s), json_string_length(s), false);
}

/* ["ClassName","message"] */
static bool is_cls_msg_pair(const json_t *a)
{
	return json_is_array(a) && json_array_size(a) == 2 &&
	       json_is_string(json_array_get(a, 0)) &&
	       json_is_string(json_array_get(a, 1));
}

/* FastAPI: first item's loc joined with "." and its msg. */
static bool fastapi_msg(const json_t *detail, struct sbuf *m)
{
	const json_t *item, *loc, *msg, *v;
	char num[32];
	size_t i;
	int n;

	item = json_array_get(detail, 0);
	if (!json_is_object(item))
		return false;
	loc = json_object_get(item, "loc");
	msg = json_object_get(item, "msg");
	if (!json_is_string(msg) || (loc && !json_is_array(loc)))
		return false;
	for (i = 0; loc && i < json_array_size(loc); i++) {
		v = json_array_get(loc, i);
		if (i > 0)
			sbuf_put(m, ".", 1);
		if (json_is_string(v)) {
			sbuf_put_json_str(m, v);
		} else if (json_is_integer(v)) {
			n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
				     json_integer_value(v));
			if (n > 0 && (size_t)n < sizeof(num))
				sbuf_put(m, num, (size_t)n);
		} else {
			return false;
		}
	}
	if (loc && json_array_size(loc) > 0)
		sbuf_put(m, ": ", 2);
	sbuf_put_json_str(m, msg);
	return true;
}

static bool zerr_shape(const json_t *root, struct sbuf *c, struct sbuf *m)
{
	const json_t *detail, *err, *desc;

	if (is_cls_msg_pair(root)) {
		sbuf_put_json_str(c, json_array_get(root, 0));
		sbuf_put_json_str(m, json_array_get(root, 1));
		return true;
	}
	if (!json_is_object(root))
		return false;
	detail = json_object_get(root, "detail");
	if (detail) {
		if (json_is_string(detail)) {
			sbuf_put_json_str(m, detail);
			return true;
		}
		if (is_cls_msg_pair(detail)) {
			sbuf_put_json_str(c, json_array_get(detail, 0));
			sbuf_put_json_str(m, json_array_get(detail, 1));
			return true;
		}
		if (json_is_array(detail))
			return fastapi_msg(detail, m);
		return false;
	}
	err = json_object_get(root, "error");
	if (!json_is_string(err))
		return false;
	desc = json_object_get(root, "error_description");
	if (desc && !json_is_string(desc) && !json_is_null(desc))
		return false;
	sbuf_put_json_str(c, err);
	if (json_is_string(desc))
		sbuf_put_json_str(m, desc);
	return true;
}

int zerr_parse(const char *body, size_t len, char *cls, size_t clssz, char *msg,
	       size_t msgsz)
{
	struct sbuf c, m;
	json_t *root = NULL;
	bool ok = false;

	if ((!body && len) || !cls || !clssz || !msg || !msgsz)
		return -EINVAL;
	sbuf_init(&c, cls, clssz);
	sbuf_init(&m, msg, msgsz);
	if (len > 0 && len <= ZERR_MAX_BODY)
		root = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
				  NULL);
	if (root)
		ok = zerr_shape(root, &c, &m);
	json_decref(root);
	if (ok)
		return 0;

	/* Unknown shape: a printable prefix of the raw body. */
	sbuf_init(&c, cls, clssz);
	sbuf_init(&m, msg, msgsz);
	sbuf_put_safe(&m, body, len < ZERR_PREFIX_MAX ? len : ZERR_PREFIX_MAX,
		      true);
	return -EINVAL;
}

/*
 * How ZenML 0.98 phrases a 401 for a credential that has been disabled or
 * removed rather than merely being wrong (zen_server/auth.py):
 *   "... API key <name> associated with service account <sa> is not active"
 *   "... service account <sa> associated with API key <k> is not active"
 *   "... user <name> is not active", "... account <name> is not active"
 *   "... device <id> is not active"
 *   "... error retrieving API key <id>"          (key deleted)
 *   "... error retrieving token account <id>"    (account deleted)
 *   "... error retrieving token device <id>"     (device deleted)
 * plus generic wording other servers and proxies use.
 */
static const char *const revoked_words[] = {
	"inactive",
	"not active",
	"deactivated",
	"disabled",
	"locked",
	"deleted",
	"revoked",
	"error retrieving api key",
	"error retrieving token account",
	"error retrieving token device",
};

static bool says_revoked(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(revoked_words) / sizeof(revoked_words[0]); i++)
		if (contains_ci(s, revoked_words[i]))
			return true;
	return false;
}

int zerr_errno(long status, const char *cls, const char *msg)
{
	switch (status) {
	case 401:
		if (says_revoked(msg) || says_revoked(cls))
			return -EKEYREVOKED;
		return -EKEYREJECTED;
	case 403:
		return -EPERM;
	case 404:
		return -ENOENT;
	case 409:
		return -EEXIST;
	case 429:
		return -EAGAIN;
	default:
		if (status >= 400 && status <= 499)
			return -EINVAL;
		return -EIO;
	}
}

/* ---- a server's limits ---- */

int max_lifetime_of(const char *msg, unsigned long *out)
{
	const char *sec, *p, *digits = NULL;
	unsigned long v = 0;

	if (!msg || !out || !contains_ci(msg, "maximum"))
		return -EINVAL;
	sec = strstr(msg, "seconds");
	if (!sec)
		return -EINVAL;
	/* the number right before "seconds" */
	for (p = sec; p > msg && !ascii_digit(p[-1]); p--)
		if (p[-1] != ' ')
			return -EINVAL;
	while (p > msg && ascii_digit(p[-1]))
		digits = --p;
	if (!digits || sec - digits > 12)
		return -EINVAL;
	for (p = digits; ascii_digit(*p); p++)
		v = v * 10 + (unsigned long)(*p - '0');
	if (!v)
		return -EINVAL;
	*out = v;
	return 0;
}

/* ---- log text ---- */

/* With backslashes: a backslash is written as two. */
static size_t escape(const char *s, size_t len, char *out, size_t outsz,
		     bool backslashes)
{
	const unsigned char *u = (const unsigned char *)s;
	struct sbuf b;
	char esc[16];
	size_t i = 0, n;
	uint32_t cp = 0;

	if (!out || !outsz)
		return 0;
	sbuf_init(&b, out, outsz);
	while (s && i < len && !b.full) {
		n = utf8_seq(u + i, len - i, &cp);
		if (n == 0) {
			snprintf(esc, sizeof(esc), "\\x%02x", u[i]);
			sbuf_put(&b, esc, strlen(esc));
			i++;
		} else if (cp_unsafe(cp)) {
			if (cp < 0x80)
				snprintf(esc, sizeof(esc), "\\x%02x",
					 (unsigned)cp);
			else
				snprintf(esc, sizeof(esc), "\\u{%04x}",
					 (unsigned)cp);
			sbuf_put(&b, esc, strlen(esc));
			i += n;
		} else if (backslashes && cp == '\\') {
			sbuf_put(&b, "\\\\", 2);
			i++;
		} else {
			sbuf_put(&b, s + i, n);
			i += n;
		}
	}
	return b.n;
}

size_t text_escape(const char *s, size_t len, char *out, size_t outsz)
{
	return escape(s, len, out, outsz, false);
}

size_t text_escape_log(const char *s, size_t len, char *out, size_t outsz)
{
	return escape(s, len, out, outsz, true);
}

/* ---- URLs ---- */

int url_check(const char *url, const char **why)
{
	const char *host, *end;
	size_t n;

	*why = NULL;
	if (!url || !*url)
		*why = "it is empty";
	else if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
		*why = "it must start with http:// or https://";
	else if (strlen(url) > 1024)
		*why = "it is longer than 1024 bytes";
	if (*why)
		return -EINVAL;
	for (const char *p = url; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
			*why = "it has a space or a control character";
			return -EINVAL;
		}
	host = strstr(url, "://") + 3;
	n = strcspn(host, "/?#");
	end = host + n;
	if (memchr(host, '@', n)) {
		*why = "it has a user name or password in it (give the "
		       "credential through the environment or a key file)";
		return -EINVAL;
	}
	if (n == 0 || host[0] == ':') {
		*why = "it has no host";
		return -EINVAL;
	}
	if (strpbrk(end, "?#")) {
		*why = "it has a query or fragment";
		return -EINVAL;
	}
	return 0;
}

void url_redact(const char *url, char *out, size_t outsz)
{
	const char *auth, *at = NULL;
	size_t n;

	if (!out || !outsz)
		return;
	if (!url) {
		out[0] = '\0';
		return;
	}
	/* The authority: after "scheme://" (or from the start, for a URL
	 * without a scheme), up to the path, query or fragment.  Its last
	 * '@' ends the user information. */
	auth = strstr(url, "://");
	auth = auth ? auth + 3 : url;
	n = strcspn(auth, "/?#");
	for (const char *p = auth; p < auth + n; p++)
		if (*p == '@')
			at = p;
	if (!at)
		strlcpy_z(out, url, outsz);
	else
		snprintf(out, outsz, "%.*s***%s", (int)(auth - url), url, at);
}

uint64_t hash_fnv1a(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 14695981039346656037ULL; /* the offset basis */

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}

uint64_t hash_str(const char *s)
{
	return hash_fnv1a(s, strlen(s));
}

long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

void mono_deadline(long long ms, struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	if (ms < 0)
		ms = 0;
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

unsigned long backoff_ms(unsigned failures, unsigned long base_ms,
			 unsigned long cap_ms, enum jitter j,
			 long retry_after_s)
{
	unsigned long d = base_ms, lo, ra;

	for (unsigned i = 1; i < failures && d < cap_ms; i++)
		d *= 2;
	if (d > cap_ms)
		d = cap_ms;
	lo = j == JITTER_HALF ? d / 2 : base_ms / 10;
	if (d > lo)
		d = lo + randombytes_uniform((uint32_t)(d - lo) + 1);
	if (retry_after_s > 0) {
		ra = (unsigned long)retry_after_s * 1000;
		ra += randombytes_uniform((uint32_t)(ra / 4) + 1);
		if (d < ra)
			d = ra;
	}
	return d;
}
