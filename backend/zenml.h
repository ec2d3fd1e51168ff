/* SPDX-License-Identifier: MIT */
/*
 * The ZenML REST API as the daemon uses it: login with the daemon's own
 * credential, authenticated JSON calls that log in again once on a 401
 * CredentialsNotValid, lists that fetch every page.  Thread-safe.
 *
 * All functions return 0 or -errno mapped as DESIGN.md section 2 says; the
 * server's message for the last failure is kept for the log and status.
 */
#ifndef ZENMLFS_ZENML_H
#define ZENMLFS_ZENML_H

#include <jansson.h>
#include <stdbool.h>

struct http_client;
struct secret;

enum cred_kind {
	CRED_NONE,
	CRED_API_KEY, /* API key or Pro personal access token */
	CRED_SESSION, /* token saved by "zenmlfs login" (device flow) */
	CRED_PASSWORD, /* ZENML_STORE_USERNAME / ZENML_STORE_PASSWORD */
};

struct zen_cred {
	enum cred_kind kind;
	struct secret *secret; /* key, session token or password */
	char *username; /* CRED_PASSWORD only; malloc'd */
};

/* Name of a credential kind for status: "api-key", "device", "password". */
const char *cred_kind_name(enum cred_kind kind);

/* Takes over cred's contents (cred is zeroed) and http (freed with zen). */
struct zen *zen_new(struct http_client *http, struct zen_cred *cred);
void zen_free(struct zen *z);
const char *zen_url(const struct zen *z);
enum cred_kind zen_cred_kind(const struct zen *z);

/* Log in with the credential now (the session token is kept). */
int zen_login(struct zen *z);

/*
 * Replace the API key (after the daemon's own key was rotated): takes a
 * reference to key.  The next login uses it.
 */
void zen_set_api_key(struct zen *z, struct secret *key);
/* The id of the daemon's own API key ("" when not an API key). */
void zen_api_key_id(struct zen *z, char *id, size_t idsz);

/* GET /api/v1/info, no auth.  *out is the reply object; json_decref it. */
int zen_info(struct zen *z, json_t **out);

/* GET /api/v1/api_token?token_type=generic&expires_in=N: a new token. */
int zen_api_token(struct zen *z, unsigned lifetime, struct secret **out);

/*
 * An authenticated JSON call.  body may be NULL; out may be NULL (reply
 * dropped).  secret_reply keeps the raw reply in guarded memory (replies
 * carrying a new API key).  bearer NULL: the daemon's session.
 */
int zen_call(struct zen *z, const char *method, const char *path, json_t *body,
	     bool secret_reply, json_t **out);

/* Like zen_call, but authenticated with the given token and no re-login. */
int zen_call_as(struct zen *z, const struct secret *bearer, const char *method,
		const char *path, json_t **out);

/* Every page of a list endpoint, hydrated: *items is a JSON array. */
int zen_list(struct zen *z, const char *path, json_t **items);

/* The server's message for the last failed call ("" when none). */
void zen_last_error(struct zen *z, char *buf, size_t size);
/* Record a failure in the same place (for callers that fail on their own). */
void zen_set_error(struct zen *z, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
