/* SPDX-License-Identifier: MIT */
/*
 * The daemon's session with a ZenML server: its credential, the session
 * token a login gives, and authenticated JSON requests that log in again
 * once on a 401 CredentialsNotValid.  Used by the rest of backend/ only:
 * fs/ goes through the typed calls of backend/api.h.  Thread-safe.
 *
 * Every call returns 0 or -errno (docs/design.md, Errors) and, on failure,
 * fills the caller's struct zen_err with what failed and why: there is no
 * shared "last error".
 */
#ifndef ZENMLFS_ZENML_H
#define ZENMLFS_ZENML_H

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct http_client;
struct secret;
struct zen;

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

/*
 * Which kind of server the daemon talks to.  What differs between them
 * (how a credential logs in, what a refusal means, how to ask whether the
 * server is up; in backend/api.c: the routes, the token, the kinds of
 * objects served) is decided here and in api.c, never in fs/.
 */
enum zen_server {
	ZS_WORKSPACE, /* a ZenML server: OSS, or a ZenML Pro workspace */
	ZS_PRO_API, /* the ZenML Pro management API (cloudapi.zenml.io) */
};

/* What a failed call says, for the log and status.  Never a secret. */
struct zen_err {
	long status; /* HTTP status; 0: no reply (transport) or local */
	char cls[64]; /* the server's error class, "" when none */
	char msg[512]; /* "what: why" */
	long retry_after; /* s, from the reply's Retry-After; 0: none */
	bool no_reply; /* the server did not answer (transport) */
};

/* What the daemon asked the server, since it started (the metrics). */
struct zen_counts {
	unsigned long logins, login_failures, resumed;
	unsigned long tokens, checks, probes, others;
};
void zen_get_counts(struct zen *z, struct zen_counts *c);

/* Is this failure worth trying again later (no reply, a timeout, 429,
 * 5xx), rather than a local mistake or a refusal of the credential? */
bool zen_err_transient(int err, const struct zen_err *e);

void zen_err_set(struct zen_err *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Name of a credential kind for status: "api-key", "device", "password". */
const char *cred_kind_name(enum cred_kind kind);

/* Takes over cred's contents (cred is zeroed) and http (freed with zen). */
struct zen *zen_new(struct http_client *http, struct zen_cred *cred,
		    enum zen_server kind);
void zen_free(struct zen *z);
const char *zen_url(const struct zen *z);
enum zen_server zen_server(const struct zen *z);
enum cred_kind zen_cred_kind(struct zen *z);

/* Replace the credential (SIGHUP, the daemon's own key rotated): takes
 * over cred's contents; the next login uses it. */
void zen_set_cred(struct zen *z, struct zen_cred *cred);
/* The id of the daemon's own API key ("" when not an API key). */
void zen_api_key_id(struct zen *z, char *id, size_t idsz);
/* The user the session stands for (its JWT's "sub"), "" when unknown. */
void zen_user_id(struct zen *z, char *id, size_t idsz);
/* The device a device-flow session belongs to, "" when none. */
void zen_device_id(struct zen *z, char *id, size_t idsz);

/*
 * Keep an API key's session in dir across restarts (backend/session.h;
 * dir NULL or "": never), and take the one kept there now: 0 when there
 * was one, it is the session from now on (no login); -ENOENT etc. when
 * there was none usable.  A session the server refuses is replaced by a
 * login, as any; a login the server refuses deletes the file.
 */
int zen_resume(struct zen *z, const char *dir);

/* Log in with the credential now.  Concurrent callers share one login. */
int zen_login(struct zen *z, struct zen_err *e);

/*
 * The session token of a new login (a new reference in *out): the Pro
 * management API has no token of its own to mint, its token is the session
 * an exchange of the key gives.  A session nobody was handed yet (the
 * startup login's) is handed out without another login; a login already
 * in flight is shared.
 */
int zen_exchange(struct zen *z, struct secret **out, struct zen_err *e);

/*
 * Log in with cred (an API key or a password) on the side, the session in
 * use left alone; only when the server accepts it, cred (taken over,
 * zeroed) and its session replace the daemon's.  On failure nothing
 * changes and cred is the caller's still.  (SIGHUP: a new credential is
 * tried before it replaces one that works.)
 */
int zen_login_with(struct zen *z, struct zen_cred *cred, struct zen_err *e);

#define ZR_SECRET 0x1 /* the reply carries a secret: guarded memory */
#define ZR_NOAUTH 0x2 /* no Authorization header, no login */
#define ZR_ANY 0x4 /* the reply may be any JSON value, else an object */

struct zen_req {
	const char *method;
	const char *path; /* "/api/v1/..." */
	json_t *body; /* may be NULL */
	unsigned flags; /* ZR_* */
	const struct secret *bearer; /* NULL: the session (with re-login) */
	long timeout_ms; /* 0: the client's */
	/* A list page: each element of the reply's "items" is parsed alone
	 * and handed to each() (backend/jsonpage.h); *out gets the rest. */
	int (*each)(json_t *item, void *arg);
	void *each_arg;
};

/*
 * One request.  A 2xx reply is parsed into *out (out may be NULL: dropped;
 * an empty body gives JSON null).  bearer NULL: the daemon's session,
 * logged in first when there is none, and once more on a 401
 * CredentialsNotValid.
 */
int zen_request(struct zen *z, const struct zen_req *rq, json_t **out,
		struct zen_err *e);

/*
 * A thread that must never wait on the server (a FUSE worker: fs/defer.h)
 * says so once: from then on zen_request(), and the store's joins of a
 * fetch in flight, fail at once with ZEN_WOULD_WAIT instead, and the
 * caller hands the work to a thread that may wait.
 */
#define ZEN_WOULD_WAIT EINPROGRESS
void zen_never_wait(bool on);
bool zen_may_wait(void);
/*
 * Until when (mono_ms(); 0: no limit) the calling thread's requests may
 * take, all of them together: each gets what is left of it as its timeout,
 * and none starts once it passed (-ETIMEDOUT).  A FUSE request queued for
 * the pool gets one request timeout from when it was queued, so a caller
 * never waits longer than that, queue included.
 */
void zen_set_deadline(long long at_ms);
/* The timeout of one request (ms). */
long zen_timeout_ms(const struct zen *z);

/* Shutting down: requests in flight are aborted at once (their sockets
 * are shut), new ones fail. */
void zen_shutdown(struct zen *z);

/* No auth, short timeout: does the server answer at all?  A workspace:
 * GET /health answers 200; the management API: any reply below 500. */
int zen_probe(struct zen *z);

#endif
