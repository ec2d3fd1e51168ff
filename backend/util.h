/* SPDX-License-Identifier: MIT */
/*
 * Pure helpers with no I/O: input parsing for control files, time
 * conversion, JWT and ZENKEY_ decoding, server error bodies.  Everything
 * here is unit-tested and fuzzed (tests/unit, tests/fuzz), since most of it
 * reads bytes that come from the network or from a writer.
 *
 * Conventions: functions return 0 or -errno; out-parameters are set only on
 * success; input buffers are (pointer, length) and need not be terminated.
 */
#ifndef ZENMLFS_UTIL_H
#define ZENMLFS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/*
 * A boolean written to a control file: "1 0 true false yes no on off" in any
 * case, optionally followed by one "\n".  Anything else (empty, spaces,
 * "2", a second line, NUL bytes) is -EINVAL.
 */
int parse_bool(const char *buf, size_t len, bool *out);

/*
 * A non-negative decimal integer written to a control file, optionally
 * followed by one "\n"; no sign, no spaces, no leading "+", at most "max".
 * -EINVAL for anything else, -ERANGE when above max.
 */
int parse_uint(const char *buf, size_t len, uint64_t max, uint64_t *out);

/*
 * Parse a server timestamp: ISO 8601 "YYYY-MM-DDTHH:MM:SS[.ffffff]" with an
 * optional "Z" or "+00:00" (the server sends naive times in UTC; any other
 * offset is applied).  A space may stand for the "T".  Sets *out to seconds
 * since the epoch (fraction dropped).
 */
int time_parse_iso(const char *s, time_t *out);

/* Format t as RFC 3339 UTC "YYYY-MM-DDTHH:MM:SSZ"; out must hold 21 bytes. */
#define RFC3339_LEN 21
int time_format_rfc3339(time_t t, char *out, size_t outsz);

/* Parse then format: server time -> "YYYY-MM-DDTHH:MM:SSZ". */
int time_iso_to_rfc3339(const char *s, char *out, size_t outsz);

/*
 * base64 decoding, standard ("+/", padding optional) or url-safe ("-_",
 * no padding) alphabet as chosen.  Writes at most outsz bytes and sets
 * *outlen.  -EINVAL on a bad character, -ENOSPC when out is too small.
 */
int b64_decode(const char *in, size_t len, bool urlsafe, unsigned char *out,
	       size_t outsz, size_t *outlen);

/*
 * The "exp" claim of a JWT (header.payload.signature, payload base64url
 * JSON object).  The signature is not checked: the daemon only needs to
 * know when the server will stop accepting the token.  -ENOENT when the
 * token has no "exp" (never expires), -EINVAL when it is not a JWT.
 */
int jwt_exp(const char *jwt, size_t len, int64_t *exp);

/* A buffer for an object's id: a UUID as text, "8-4-4-4-12" hex digits,
 * and its NUL.  A longer id is no id (it is not the server's). */
#define UUID_BUF 37

/* What a JWT says about itself (the signature is not checked). */
struct jwt_info {
	bool has_exp;
	int64_t exp; /* "exp", when has_exp */
	bool has_iat;
	int64_t iat; /* "iat", when has_iat */
	/* "" when absent or too long: */
	char sub[UUID_BUF]; /* "sub" */
	char device_id[UUID_BUF]; /* "device_id" */
	char api_key_id[UUID_BUF]; /* "api_key_id" */
};

/*
 * Parse a JWT: three base64url parts, header and payload JSON objects,
 * "exp" and "iat" NumericDates when present, "sub" a string.  -EINVAL when
 * it is not a JWT or a claim has the wrong type.
 */
int jwt_parse(const char *jwt, size_t len, struct jwt_info *out);

/*
 * May a freshly minted API token, whose claims are ji, be served?  It must
 * name its user ("sub", equal to me unless me is "") and expire ("exp")
 * at least min_left seconds after now: a login session may have no "exp",
 * a minted token may not (it would never be refreshed).  0, or -EIO with
 * why (a log line, without the token) set.
 */
int jwt_check_minted(const struct jwt_info *ji, const char *me, int64_t now,
		     int64_t min_left, char *why, size_t whysz);

/*
 * The key id inside a "ZENKEY_" + base64({"id":"<uuid>","key":"<hex>"})
 * value.  id must hold UUID_BUF bytes (a canonical lowercase UUID).
 * Only the id is extracted; the decoded secret half is wiped before return.
 */
int zenkey_id(const char *key, size_t len, char *id, size_t idsz);

/* True if s is a canonical UUID "8-4-4-4-12" hex (either case). */
bool uuid_valid(const char *s);

/*
 * A server error body, in any of its shapes:
 *   {"detail":["ClassName","message"]}
 *   {"detail":"message"}
 *   {"detail":[{"loc":[...],"msg":"...","type":"..."}, ...]}   (FastAPI)
 *   {"error":"code","error_description":"..."}                  (OAuth)
 *   ["ClassName","message"]
 * cls gets the class name or OAuth error code ("" when the shape has none);
 * msg gets the message (FastAPI: the first item's "loc" joined with "." and
 * its "msg", e.g. "body.name: field required").  Both are truncated to fit,
 * always terminated, with control characters replaced by '?' so they are
 * safe in a log line.  -EINVAL when the body is none of these (msg then
 * gets a printable prefix of the body, at most 200 bytes).
 */
int zerr_parse(const char *body, size_t len, char *cls, size_t clssz, char *msg,
	       size_t msgsz);

/*
 * The errno for a failed server call (docs/design.md, Errors):
 * 401 -> -EKEYREVOKED when the message says the key/account/device is
 * inactive, deactivated, locked or deleted (revoked), else -EKEYREJECTED;
 * 403 -> -EPERM; 404 -> -ENOENT; 409 -> -EEXIST; 400, 422 -> -EINVAL;
 * 429 -> -EAGAIN; other 4xx -> -EINVAL; 5xx and anything else -> -EIO.
 * cls and msg are what zerr_parse() found (may be "").
 */
int zerr_errno(long status, const char *cls, const char *msg);

/*
 * s as text that is safe in a log line: control characters, DEL, C1
 * controls, bidi overrides and isolates, line separators and invalid UTF-8
 * are written as \xNN (bytes) or \u{NNNN} (code points); a backslash stays
 * as is.  out is always terminated; truncated on a character boundary.
 * Returns the length written.
 */
size_t text_escape(const char *s, size_t len, char *out, size_t outsz);
/* text_escape(), and a backslash written as "\\": the log's escaping, which
 * a name holding the text "\x1b" cannot imitate. */
size_t text_escape_log(const char *s, size_t len, char *out, size_t outsz);

/*
 * A server URL as the daemon accepts it: "http://" or "https://", a host,
 * no user:password@ (the password has its own variable), no query or
 * fragment, at most 1024 bytes, no spaces or control characters.  0 or
 * -EINVAL with why set to a short reason.
 */
int url_check(const char *url, const char **why);

/*
 * url as it may be shown: a user name or password in it ("user:pw@")
 * replaced by "***" ("user:pw@host" shows as "***@host").  out is always
 * terminated (truncated to fit).
 */
void url_redact(const char *url, char *out, size_t outsz);

/*
 * The most a server allows, from its refusal of a token lifetime: "The
 * maximum expiration time for generic API tokens allowed by this server
 * is 604800 seconds." (ZenML >= 0.71).  The last number before "seconds"
 * in a message that says "maximum"; -EINVAL when there is none.
 */
int max_lifetime_of(const char *msg, unsigned long *out);

/* How a backoff's wait is drawn below its bound (backoff_ms()). */
enum jitter {
	JITTER_FULL, /* anywhere from a tenth of the base up to the bound:
			nodes that failed together spread the most */
	JITTER_HALF, /* in the bound's upper half: spread, and the wait
			still doubles every time */
};

/*
 * How long to wait (ms) before retry number failures (1 for the first):
 * a bound doubling from base_ms up to cap_ms, the wait drawn at random
 * below it as j says, so that nodes failing together do not retry
 * together; never sooner than retry_after_s (a reply's Retry-After, 0:
 * none) plus up to a quarter of it more.
 */
unsigned long backoff_ms(unsigned failures, unsigned long base_ms,
			 unsigned long cap_ms, enum jitter j,
			 long retry_after_s);

/* Now on CLOCK_MONOTONIC, in milliseconds. */
long long mono_ms(void);

/* The moment ms milliseconds from now on CLOCK_MONOTONIC, for the timed
 * waits (sem_clockwait, a condvar set to CLOCK_MONOTONIC): a step of the
 * wall clock moves it neither way. */
void mono_deadline(long long ms, struct timespec *ts);

/* The 64-bit FNV-1a hash of n bytes at p, for hash tables (not for
 * anything an attacker may choose to collide where that costs more than a
 * longer probe). */
uint64_t hash_fnv1a(const void *p, size_t n);
/* hash_fnv1a() of a string, without its NUL. */
uint64_t hash_str(const char *s);

/*
 * A reference count for an object shared between threads: ref_init() sets
 * it to 1 (the creator's), ref_get() takes one more, ref_put() drops one
 * and is true when it was the last (the caller then frees the object).
 */
struct ref {
	int n; /* atomic */
};

static inline void ref_init(struct ref *r)
{
	__atomic_store_n(&r->n, 1, __ATOMIC_RELAXED);
}

static inline void ref_get(struct ref *r)
{
	__atomic_add_fetch(&r->n, 1, __ATOMIC_RELAXED);
}

static inline bool ref_put(struct ref *r)
{
	return __atomic_sub_fetch(&r->n, 1, __ATOMIC_ACQ_REL) == 0;
}

/* Copy src into dst (size dstsz >= 1), truncating; always terminated. */
size_t strlcpy_z(char *dst, const char *src, size_t dstsz);

#endif
