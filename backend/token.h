/* SPDX-License-Identifier: MIT */
/*
 * The token engine: one generic API token, minted ahead of need and
 * refreshed in the background when a third of its lifetime is left (with
 * jitter), retried with capped exponential backoff, never served expired
 * or within TOKEN_MARGIN seconds of expiry.  Reading the current token
 * never touches the network.
 */
#ifndef ZENMLFS_TOKEN_H
#define ZENMLFS_TOKEN_H

#include <stdint.h>
#include <stddef.h>
#include <time.h>

struct zen;
struct secret;

#define TOKEN_MARGIN 30 /* never served this close to expiry */
#define TOKEN_LIFETIME_MIN 60
#define TOKEN_NO_EXPIRY INT64_MAX

struct token_opts {
	unsigned lifetime; /* seconds, >= TOKEN_LIFETIME_MIN */
	unsigned check_interval; /* seconds between validity checks; 0 off */
	/* Called (from any thread, no engine lock held) when what
	 * token_engine_get() returns has changed: a new token, or the
	 * current one stopped being servable.  Must not block. */
	void (*on_change)(void *arg);
	void *arg;
};

/* Does not mint; call token_engine_mint() for the first token. */
struct token_engine *token_engine_new(struct zen *z,
				      const struct token_opts *opts);
/* Stops the thread if started. */
void token_engine_free(struct token_engine *te);

/* Mint a new token now, synchronously (first token, "echo 1 > refresh").
 * Concurrent calls are serialized. */
int token_engine_mint(struct token_engine *te);

/* Start / stop the background refresh thread (start after daemonizing). */
int token_engine_start(struct token_engine *te);
void token_engine_stop(struct token_engine *te);

/*
 * The token to serve: a new reference in *tok (secret_unref() it) and its
 * expiry (TOKEN_NO_EXPIRY when none).  -EKEYEXPIRED when it is expired or
 * too close to expiry, -EKEYREVOKED / -EKEYREJECTED when the server
 * refused the daemon's credential, -ENOKEY when there is none.
 */
int token_engine_get(struct token_engine *te, struct secret **tok,
		     int64_t *exp);

/* Record that the daemon's credential was revoked (found by the caller,
 * e.g. its own key deactivated through the tree); reason is logged and
 * shown in status. err is -EKEYREVOKED or similar; 0 clears. */
void token_engine_revoke(struct token_engine *te, int err, const char *reason);

/* The status file: "key: value" lines (DESIGN.md section 5).  Returns the
 * length written (truncated to size - 1). */
size_t token_engine_status(struct token_engine *te, char *buf, size_t size);

/* Wake the thread to run a validity check now. */
void token_engine_kick(struct token_engine *te);

#endif
