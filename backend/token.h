/* SPDX-License-Identifier: MIT */
/*
 * The token engine: one generic API token, minted ahead of need and
 * refreshed in the background when a third of its lifetime is left (with
 * jitter), retried with capped exponential backoff, never served expired
 * or within TOKEN_MARGIN seconds of expiry.  Reading the current token
 * never touches the network.
 *
 * Every minted token is checked before it replaces the current one: a JWT
 * with a "sub", the daemon's own user, and an "exp" at least TOKEN_MARGIN
 * plus 15 s ahead (a token without one would never be refreshed).  A token
 * that fails is a failed refresh (backoff), so a server whose tokens are
 * too short to serve is not asked again every second; no two planned
 * refreshes are closer than 10 s.
 *
 * While the token is read (token_engine_touch()), the daemon's credential
 * is checked at most once per check_interval, with the session (not the
 * token it hands out), so a deactivated key or account or a locked device
 * stops the token being served on every server version.  An idle mount
 * sends nothing but its refreshes.
 */
#ifndef ZENMLFS_TOKEN_H
#define ZENMLFS_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct zen;
struct secret;
struct zen_err;

#define TOKEN_MARGIN 30 /* never served this close to expiry */
#define TOKEN_LIFETIME_MIN 60
#define TOKEN_NO_EXPIRY INT64_MAX

struct token_opts {
	unsigned lifetime; /* seconds, >= TOKEN_LIFETIME_MIN */
	unsigned check_interval; /* seconds between credential checks; 0 off */
	/* check_interval is the default: it may grow where the server
	 * rejects a revoked credential's tokens itself (BOUND_CHECK) */
	bool check_default;
	/* Called (from any thread, no engine lock held) when what
	 * token_engine_get() returns has changed: a new token, or the
	 * current one stopped (or started again) being servable.  Must not
	 * block. */
	void (*on_change)(void *arg);
	void *arg;
};

/* The state status shows. */
enum token_state {
	TS_NONE, /* no token yet */
	TS_OK,
	TS_DEGRADED, /* refreshes fail, the token is still served */
	TS_EXPIRED, /* the token expired and could not be renewed */
	TS_UNAUTH, /* the server refused the daemon's credential */
};

/* Does not mint; call token_engine_mint() for the first token. */
struct token_engine *token_engine_new(struct zen *z,
				      const struct token_opts *opts);
/* Stops the thread if started. */
void token_engine_free(struct token_engine *te);

/*
 * Mint a new token now, synchronously (first token, "echo 1 > refresh",
 * SIGHUP).  A call that finds a mint in flight waits for it and returns
 * its result.  Once the thread runs, the mint is made on it, the caller
 * waiting (-ECANCELED when it stops first).  e (may be NULL) says why it
 * failed.
 */
int token_engine_mint(struct token_engine *te, struct zen_err *e);

/* "echo 1 > refresh": token_engine_mint(), except that a call coming
 * within a second of a mint the server did not answer (timeout, refused)
 * gets that failure at once. */
int token_engine_refresh(struct token_engine *te, struct zen_err *e);

/* Start / stop the background thread (start after daemonizing). */
int token_engine_start(struct token_engine *te);
void token_engine_stop(struct token_engine *te);

/*
 * The token to serve: a new reference in *tok (secret_unref() it) and its
 * expiry (TOKEN_NO_EXPIRY when none).  Fails as token_engine_servable().
 */
int token_engine_get(struct token_engine *te, struct secret **tok,
		     int64_t *exp);
/*
 * May a token expiring at exp be served now?  0, -EKEYEXPIRED when it is
 * within TOKEN_MARGIN of exp, -EKEYREVOKED / -EKEYREJECTED / -EKEYEXPIRED
 * when the server refused the daemon's credential, -ENOKEY before the
 * first token.
 */
int token_engine_servable(struct token_engine *te, int64_t exp);

/* Someone read the token: the credential check may run. */
void token_engine_touch(struct token_engine *te);
/* Check the credential soon (a change through the tree may have hit the
 * daemon's own key, account or device). */
void token_engine_kick(struct token_engine *te);

/* Record that the daemon's credential was revoked (found by the caller,
 * e.g. its own key deactivated through the tree); why is logged and shown
 * in status.  err is -EKEYREVOKED or similar; 0 clears. */
void token_engine_revoke(struct token_engine *te, int err, const char *why);

/* Something went wrong that does not change the state (a new credential
 * refused on SIGHUP, the old one kept): why shows as status's last_error. */
void token_engine_note_error(struct token_engine *te, const char *why);

enum token_state token_engine_state(struct token_engine *te);
const char *token_state_name(enum token_state st);

/* The metrics file: the Prometheus text exposition format.  Returns the
 * length written (truncated to size - 1). */
size_t token_engine_metrics(struct token_engine *te, char *buf, size_t size);

/* The status file: "key: value" lines (docs/design.md, Status).  Returns the
 * length written (truncated to size - 1). */
size_t token_engine_status(struct token_engine *te, char *buf, size_t size);

#endif
