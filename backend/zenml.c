// SPDX-License-Identifier: MIT
#include "backend/zenml.h"

#include <errno.h>
#include <sodium.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/flight.h"
#include "backend/http.h"
#include "backend/jsonpage.h"
#include "backend/log.h"
#include "backend/secret.h"
#include "backend/session.h"
#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

#define PROBE_TIMEOUT_MS 3000
/* A login costs a loaded server seconds of CPU (bcrypt): waiting for it
 * is cheaper than abandoning it and asking again. */
#define LOGIN_TIMEOUT_MS 90000

/* How each kind of server takes a credential and says it is up. */
static const struct server_kind {
	const char *login; /* the route a key is exchanged at */
	const char *grant_type; /* the form's grant_type, NULL: none */
	/* what a 401 or 403 on login means: a workspace says when a key is
	 * deactivated; the management API refuses a revoked PAT (or key)
	 * with a bare 401 */
	int refused;
	const char *probe; /* GET, no auth */
	bool probe_any; /* any reply below 500 means up, else only 200 */
	const char *what; /* for messages */
} servers[] = {
	[ZS_WORKSPACE] = { "/api/v1/login", "zenml-api-key", -EKEYREJECTED,
			   "/health", false, "a ZenML server" },
	[ZS_PRO_API] = { "/auth/login", NULL, -EKEYREVOKED, "/users/me", true,
			 "the ZenML Pro management API" },
};

struct zen {
	struct http_client *http;
	const struct server_kind *server;
	enum zen_server kind;
	/* lock protects everything below; login_done wakes the callers that
	 * wait for a login in flight (no lock is held across the network). */
	pthread_mutex_t lock;
	pthread_cond_t login_done;
	struct zen_cred cred;
	struct secret *session;
	char user_id[UUID_BUF]; /* the session's "sub" */
	char device_id[UUID_BUF]; /* and its "device_id" */
	unsigned long session_gen; /* bumped by each successful login */
	unsigned long handed_gen; /* the session zen_exchange() handed out */
	unsigned long cred_gen; /* bumped by each new credential */
	struct flight login;
	struct zen_err login_err; /* the last login's, beside login.ret */
	char *state_dir; /* where an API key's session is kept; NULL: not */
	struct zen_counts counts; /* atomic access */
};

#define COUNT(z, f) __atomic_add_fetch(&(z)->counts.f, 1, __ATOMIC_RELAXED)

void zen_get_counts(struct zen *z, struct zen_counts *c)
{
	unsigned long *dst = (unsigned long *)c;
	unsigned long *src = (unsigned long *)&z->counts;

	for (size_t i = 0; i < sizeof(*c) / sizeof(unsigned long); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

bool zen_err_transient(int err, const struct zen_err *e)
{
	if (e && e->status)
		return e->status == 429 || e->status >= 500;
	switch (-err) {
	case ETIMEDOUT:
	case ECONNREFUSED:
	case ECONNRESET:
	case EHOSTUNREACH:
	case EAGAIN:
		return true;
	case EIO: /* no reply at all (reset, empty), not a bad one */
		return e && e->no_reply;
	default:
		return false;
	}
}

void zen_err_set(struct zen_err *e, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	e->status = 0;
	e->retry_after = 0;
	e->no_reply = false;
	e->cls[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

const char *cred_kind_name(enum cred_kind kind)
{
	switch (kind) {
	case CRED_API_KEY:
		return "api-key";
	case CRED_SESSION:
		return "device";
	case CRED_PASSWORD:
		return "password";
	default:
		return "none";
	}
}

/* The session token's subject, when it is a JWT.  Caller holds lock. */
static void learn_user_id(struct zen *z)
{
	struct jwt_info info;

	z->user_id[0] = '\0';
	z->device_id[0] = '\0';
	if (z->session && !jwt_parse(z->session->buf, z->session->len, &info)) {
		strlcpy_z(z->user_id, info.sub, sizeof(z->user_id));
		strlcpy_z(z->device_id, info.device_id, sizeof(z->device_id));
	}
}

struct zen *zen_new(struct http_client *http, struct zen_cred *cred,
		    enum zen_server kind)
{
	struct zen *z = calloc(1, sizeof(*z));

	if (!z)
		return NULL;
	z->http = http;
	z->kind = kind;
	z->server = &servers[kind];
	z->cred = *cred;
	memset(cred, 0, sizeof(*cred));
	pthread_mutex_init(&z->lock, NULL);
	pthread_cond_init(&z->login_done, NULL);
	/* A saved device session is used as the session directly. */
	if (z->cred.kind == CRED_SESSION) {
		z->session = secret_ref(z->cred.secret);
		learn_user_id(z);
	}
	return z;
}

void zen_free(struct zen *z)
{
	if (!z)
		return;
	secret_unref(z->session);
	secret_unref(z->cred.secret);
	free(z->cred.username);
	free(z->state_dir);
	http_client_free(z->http);
	free(z);
}

const char *zen_url(const struct zen *z)
{
	return http_base_url(z->http);
}

enum zen_server zen_server(const struct zen *z)
{
	return z->kind;
}

enum cred_kind zen_cred_kind(struct zen *z)
{
	enum cred_kind k;

	pthread_mutex_lock(&z->lock);
	k = z->cred.kind;
	pthread_mutex_unlock(&z->lock);
	return k;
}

void zen_set_cred(struct zen *z, struct zen_cred *cred)
{
	struct zen_cred old;

	pthread_mutex_lock(&z->lock);
	old = z->cred;
	z->cred = *cred;
	z->cred_gen++;
	memset(cred, 0, sizeof(*cred));
	if (z->cred.kind == CRED_SESSION) {
		secret_unref(z->session);
		z->session = secret_ref(z->cred.secret);
		z->session_gen++;
		learn_user_id(z);
	}
	pthread_mutex_unlock(&z->lock);
	secret_unref(old.secret);
	free(old.username);
}

void zen_api_key_id(struct zen *z, char *id, size_t idsz)
{
	char tmp[UUID_BUF];

	id[0] = '\0';
	pthread_mutex_lock(&z->lock);
	if (z->cred.kind == CRED_API_KEY &&
	    !zenkey_id(z->cred.secret->buf, z->cred.secret->len, tmp,
		       sizeof(tmp)))
		strlcpy_z(id, tmp, idsz);
	pthread_mutex_unlock(&z->lock);
}

void zen_user_id(struct zen *z, char *id, size_t idsz)
{
	pthread_mutex_lock(&z->lock);
	strlcpy_z(id, z->user_id, idsz);
	pthread_mutex_unlock(&z->lock);
}

void zen_device_id(struct zen *z, char *id, size_t idsz)
{
	pthread_mutex_lock(&z->lock);
	strlcpy_z(id, z->device_id, idsz);
	pthread_mutex_unlock(&z->lock);
}

/* Turn a non-2xx reply into an errno, recording the server's message. */
static int reply_error(const char *what, const struct http_response *r,
		       struct zen_err *e)
{
	char cls[64], msg[300];
	int err;

	zerr_parse(r->body, r->len, cls, sizeof(cls), msg, sizeof(msg));
	err = zerr_errno(r->status, cls, msg);
	if (e) {
		zen_err_set(e, "%s: server said %ld (%s%s%s)", what, r->status,
			    cls, cls[0] ? ": " : "", msg);
		e->status = r->status;
		e->retry_after = r->retry_after;
		strlcpy_z(e->cls, cls, sizeof(e->cls));
	}
	return err;
}

static int transport_error(const char *what, int err, struct zen_err *e)
{
	zen_err_set(e, "%s: %s", what, http_strerror(err));
	if (e)
		e->no_reply = true;
	return err;
}

/* The login form for the credential, in guarded memory. */
static int login_form(const struct server_kind *sk, const struct zen_cred *cred,
		      struct secret **form, struct zen_err *e)
{
	const char *gt = sk->grant_type;
	int ret = 0;

	/* The management API exchanges a key (a PAT or an organization
	 * service account's key), and nothing else. */
	if (!gt && cred->kind != CRED_API_KEY && cred->kind != CRED_NONE) {
		zen_err_set(e,
			    "%s takes a personal access token or a service "
			    "account's API key (ZENML_STORE_API_KEY, "
			    "--api-key-file), not a %s",
			    sk->what,
			    cred->kind == CRED_SESSION ?
				    "saved login session" :
				    "user name and password");
		return -ENOKEY;
	}
	switch (cred->kind) {
	case CRED_API_KEY:
		if (gt)
			ret = http_form_add(form, "grant_type", gt, strlen(gt));
		if (!ret)
			ret = http_form_add(form, "password", cred->secret->buf,
					    cred->secret->len);
		return ret;
	case CRED_PASSWORD:
		ret = http_form_add(form, "grant_type", "password", 8);
		if (!ret)
			ret = http_form_add(form, "username", cred->username,
					    strlen(cred->username));
		if (!ret)
			ret = http_form_add(form, "password", cred->secret->buf,
					    cred->secret->len);
		return ret;
	case CRED_SESSION:
		/* A device session cannot be renewed without the user. */
		zen_err_set(e, "the saved login session is no longer valid");
		return -EKEYEXPIRED;
	default:
		zen_err_set(e, "no credential configured");
		return -ENOKEY;
	}
}

/* Log in with cred: the session token in *sess.  Touches nothing of z but
 * its HTTP client. */
static int login_as(struct zen *z, const struct zen_cred *cred,
		    struct secret **sess, struct zen_err *e)
{
	struct http_response r = { 0 };
	struct secret *form = NULL;
	json_t *root = NULL, *tok;
	int ret;

	ret = login_form(z->server, cred, &form, e);
	if (ret)
		goto out;
	ret = http_do(z->http,
		      &(struct http_req){
			      .method = "POST",
			      .path = z->server->login,
			      .ctype = "application/x-www-form-urlencoded",
			      .body = form->buf,
			      .body_len = form->len,
			      .secret_reply = true,
			      .timeout_ms = LOGIN_TIMEOUT_MS,
		      },
		      &r);
	COUNT(z, logins);
	if (ret) {
		ret = transport_error("login", ret, e);
		goto out;
	}
	if (r.status != 200) {
		ret = reply_error("login", &r, e);
		/* Any refusal of the login is about the credential. */
		if (r.status == 401 || r.status == 403)
			ret = ret == -EKEYREVOKED ? ret : z->server->refused;
		/* No login route there (a ZenML server's pages answer a POST
		 * to a path they do not serve with 405): not a ZenML server
		 * at this URL. */
		if (r.status == 404 || r.status == 405)
			ret = -ENOENT;
		goto out;
	}
	root = json_loadb(r.body, r.len, 0, NULL);
	tok = json_object_get(root, "access_token");
	if (!json_is_string(tok) || !json_string_length(tok)) {
		zen_err_set(e, "login: malformed reply from the server");
		ret = -EIO;
		goto out;
	}
	*sess = secret_new(json_string_value(tok), json_string_length(tok));
	if (!*sess)
		ret = -ENOMEM;
out:
	json_decref(root);
	http_response_release(&r);
	secret_unref(form);
	return ret;
}

/* The session is now sess (taken over).  Caller holds lock. */
static void set_session(struct zen *z, struct secret *sess)
{
	secret_unref(z->session);
	z->session = sess;
	z->session_gen++;
	learn_user_id(z);
}

/* Keep an API key's new session for the next start.  Caller holds lock
 * (the file is small; a save is a few syscalls). */
static void keep_session(struct zen *z, const struct zen_cred *cred,
			 const struct secret *sess)
{
	int ret;

	if (!z->state_dir || cred->kind != CRED_API_KEY)
		return;
	ret = keysession_save(z->state_dir, zen_url(z), cred->secret, sess);
	if (ret)
		log_warn("cannot keep the session in '%s': %s (the next start "
			 "logs in again)",
			 z->state_dir, strerror(-ret));
}

/* The server refused the key: its saved session goes too. */
static void drop_session(struct zen *z, const struct zen_cred *cred)
{
	if (z->state_dir && cred->kind == CRED_API_KEY &&
	    !keysession_forget(z->state_dir, zen_url(z), cred->secret))
		log_info("the saved session of the refused key is deleted");
}

int zen_resume(struct zen *z, const char *dir)
{
	struct secret *sess = NULL;
	struct jwt_info info;
	int ret = -ENOENT;

	pthread_mutex_lock(&z->lock);
	free(z->state_dir);
	z->state_dir = dir && dir[0] ? strdup(dir) : NULL;
	if (!z->state_dir || z->cred.kind != CRED_API_KEY)
		goto out;
	ret = keysession_load(z->state_dir, zen_url(z), z->cred.secret, &sess);
	if (ret == -EBADMSG)
		keysession_forget(z->state_dir, zen_url(z), z->cred.secret);
	if (ret)
		goto out;
	/* One that has expired is not worth a request. */
	if (jwt_parse(sess->buf, sess->len, &info) ||
	    (info.has_exp && info.exp <= time(NULL) + 60)) {
		secret_unref(sess);
		ret = -ESTALE;
		goto out;
	}
	set_session(z, sess);
	COUNT(z, resumed);
out:
	pthread_mutex_unlock(&z->lock);
	return ret;
}

static int do_login(struct zen *z, struct zen_err *e)
{
	struct secret *sess = NULL;
	struct zen_cred cred;
	unsigned long gen;
	int ret;

	pthread_mutex_lock(&z->lock);
	cred.kind = z->cred.kind;
	cred.secret = secret_ref(z->cred.secret);
	cred.username = z->cred.username ? strdup(z->cred.username) : NULL;
	gen = z->cred_gen;
	pthread_mutex_unlock(&z->lock);

	ret = login_as(z, &cred, &sess, e);
	pthread_mutex_lock(&z->lock);
	/* A credential installed meanwhile (zen_login_with, SIGHUP) came
	 * with its own session: that one stands, whatever this login with
	 * the old credential got (a rotated key's refusal included). */
	if (z->cred_gen != gen && z->session) {
		secret_unref(sess);
		ret = 0;
	} else if (!ret) {
		set_session(z, sess);
		keep_session(z, &cred, sess);
	} else {
		COUNT(z, login_failures);
		if (ret == -EKEYREJECTED || ret == -EKEYREVOKED ||
		    ret == -EPERM)
			drop_session(z, &cred);
	}
	pthread_mutex_unlock(&z->lock);
	secret_unref(cred.secret);
	free(cred.username);
	return ret;
}

int zen_login_with(struct zen *z, struct zen_cred *cred, struct zen_err *e)
{
	struct secret *sess = NULL;
	struct zen_cred old;
	int ret;

	if (cred->kind != CRED_API_KEY && cred->kind != CRED_PASSWORD) {
		zen_err_set(e, "a %s credential cannot log in",
			    cred_kind_name(cred->kind));
		return -EINVAL;
	}
	ret = login_as(z, cred, &sess, e);
	if (ret)
		return ret;
	pthread_mutex_lock(&z->lock);
	old = z->cred;
	z->cred = *cred;
	z->cred_gen++;
	memset(cred, 0, sizeof(*cred));
	set_session(z, sess);
	keep_session(z, &z->cred, sess);
	if (old.secret && (old.secret->len != z->cred.secret->len ||
			   sodium_memcmp(old.secret->buf, z->cred.secret->buf,
					 old.secret->len)))
		drop_session(z, &old);
	pthread_mutex_unlock(&z->lock);
	secret_unref(old.secret);
	free(old.username);
	return 0;
}

/*
 * Log in unless another login succeeded since gen (then its session is
 * used); a caller that finds a login in flight waits for it and shares its
 * result, so a burst of 401s makes one login.
 */
static int relogin(struct zen *z, unsigned long gen, struct zen_err *e)
{
	int ret;

	pthread_mutex_lock(&z->lock);
	if (z->session_gen != gen && z->session) {
		pthread_mutex_unlock(&z->lock);
		return 0;
	}
	if (flight_join(&z->login, &z->lock, &z->login_done, NULL, &ret)) {
		if (ret && e)
			*e = z->login_err;
		pthread_mutex_unlock(&z->lock);
		return ret;
	}
	pthread_mutex_unlock(&z->lock);

	struct zen_err err = { 0 };

	ret = do_login(z, &err);
	pthread_mutex_lock(&z->lock);
	z->login_err = err;
	flight_land(&z->login, &z->login_done, ret);
	pthread_mutex_unlock(&z->lock);
	if (ret && e)
		*e = err;
	return ret;
}

int zen_login(struct zen *z, struct zen_err *e)
{
	unsigned long gen;

	/* With the current generation, relogin() logs in (or joins a login
	 * already in flight). */
	pthread_mutex_lock(&z->lock);
	gen = z->session_gen;
	pthread_mutex_unlock(&z->lock);
	return relogin(z, gen, e);
}

static struct secret *session_get(struct zen *z, unsigned long *gen)
{
	struct secret *s;

	pthread_mutex_lock(&z->lock);
	s = secret_ref(z->session);
	*gen = z->session_gen;
	pthread_mutex_unlock(&z->lock);
	return s;
}

static __thread bool never_wait;
static __thread long long deadline;

void zen_set_deadline(long long at_ms)
{
	deadline = at_ms;
}

long zen_timeout_ms(const struct zen *z)
{
	return http_timeout_ms(z->http);
}

void zen_never_wait(bool on)
{
	never_wait = on;
}

bool zen_may_wait(void)
{
	return !never_wait;
}

int zen_exchange(struct zen *z, struct secret **out, struct zen_err *e)
{
	struct secret *s = NULL;
	int ret;

	if (never_wait)
		return -ZEN_WOULD_WAIT;
	/* A session no one was handed yet (the login made at startup, or
	 * one made again on a 401) is as new as an exchange: it is the
	 * token, without another login. */
	pthread_mutex_lock(&z->lock);
	if (z->session && z->session_gen != z->handed_gen) {
		s = secret_ref(z->session);
		z->handed_gen = z->session_gen;
	}
	pthread_mutex_unlock(&z->lock);
	if (!s) {
		ret = zen_login(z, e);
		if (ret)
			return ret;
		pthread_mutex_lock(&z->lock);
		s = secret_ref(z->session);
		z->handed_gen = z->session_gen;
		pthread_mutex_unlock(&z->lock);
	}
	if (!s) {
		zen_err_set(e, "login: no session");
		return -ENOKEY;
	}
	*out = s;
	return 0;
}

void zen_shutdown(struct zen *z)
{
	http_client_stop(z->http);
}

int zen_probe(struct zen *z)
{
	struct http_response r = { 0 };
	int ret;

	COUNT(z, probes);
	ret = http_do(z->http,
		      &(struct http_req){ .method = "GET",
					  .path = z->server->probe,
					  .timeout_ms = PROBE_TIMEOUT_MS },
		      &r);
	if (!ret && (z->server->probe_any ? r.status >= 500 : r.status != 200))
		ret = -EIO;
	http_response_release(&r);
	return ret;
}

/* A 2xx reply: its JSON, checked for the shape the caller wants. */
static int parse_reply(const char *what, const struct http_response *r,
		       unsigned flags, int (*each)(json_t *, void *), void *arg,
		       json_t **out, struct zen_err *e)
{
	json_t *root = NULL;
	int ret;

	if (each) {
		ret = jsonpage_parse(r->body, r->len, each, arg, &root);
		if (ret == -EIO)
			zen_err_set(e,
				    "%s: the reply is not what a ZenML "
				    "server sends",
				    what);
		else if (ret)
			zen_err_set(e, "%s: %s", what, strerror(-ret));
		if (ret)
			return ret;
		*out = root;
		return 0;
	}
	root = r->len ? json_loadb(r->body, r->len, JSON_DECODE_ANY, NULL) :
			json_null();
	if (!root || (!(flags & ZR_ANY) && !json_is_object(root))) {
		json_decref(root);
		zen_err_set(e, "%s: the reply is not what a ZenML server sends",
			    what);
		return -EIO;
	}
	*out = root;
	return 0;
}

int zen_request(struct zen *z, const struct zen_req *rq, json_t **out,
		struct zen_err *err)
{
	struct zen_err le = { 0 }, *e = &le;
	struct http_response r = { 0 };
	struct secret *sess = NULL;
	bool own = !rq->bearer && !(rq->flags & ZR_NOAUTH);
	unsigned long gen = 0;
	char *payload = NULL, what[300];
	long long timeout_ms;
	int ret, tries = 0;

	if (never_wait)
		return -ZEN_WOULD_WAIT;
	/* The route, without its query, names the call in messages. */
	snprintf(what, sizeof(what), "%s %.*s", rq->method,
		 (int)strcspn(rq->path, "?"), rq->path);
	if (rq->body) {
		payload = json_dumps(rq->body, JSON_COMPACT);
		if (!payload) {
			zen_err_set(err, "%s: out of memory", what);
			return -ENOMEM;
		}
	}
again:
	if (own) {
		sess = session_get(z, &gen);
		if (!sess) {
			ret = relogin(z, gen, e);
			if (ret)
				goto out;
			sess = session_get(z, &gen);
			if (!sess) {
				zen_err_set(e, "%s: no session", what);
				ret = -ENOKEY;
				goto out;
			}
		}
	}
	if (strstr(rq->path, "api_token"))
		COUNT(z, tokens);
	else if (strstr(rq->path, "current-user") ||
		 strstr(rq->path, "/users/me"))
		COUNT(z, checks);
	else
		COUNT(z, others);
	timeout_ms = rq->timeout_ms ? rq->timeout_ms : http_timeout_ms(z->http);
	if (deadline && deadline - mono_ms() < timeout_ms)
		timeout_ms = deadline - mono_ms();
	if (timeout_ms <= 0) {
		secret_unref(sess);
		sess = NULL;
		zen_err_set(e, "%s: no answer in time", what);
		ret = -ETIMEDOUT;
		goto out;
	}
	ret = http_do(z->http,
		      &(struct http_req){
			      .method = rq->method,
			      .path = rq->path,
			      .ctype = payload ? "application/json" : NULL,
			      .body = payload,
			      .body_len = payload ? strlen(payload) : 0,
			      .bearer = own ? sess : rq->bearer,
			      .secret_reply = rq->flags & ZR_SECRET,
			      .timeout_ms = timeout_ms,
		      },
		      &r);
	secret_unref(sess);
	sess = NULL;
	if (ret) {
		ret = transport_error(what, ret, e);
		goto out;
	}
	if (r.status >= 200 && r.status <= 299) {
		if (out)
			ret = parse_reply(what, &r, rq->flags, rq->each,
					  rq->each_arg, out, e);
		/* the parser's frames held the secret too */
		if (rq->flags & ZR_SECRET)
			sodium_stackzero(STACK_WIPE);
		goto out;
	}
	ret = reply_error(what, &r, e);
	if (r.status == 401 && own && zen_cred_kind(z) == CRED_SESSION) {
		/* A device session cannot log in again: it is either revoked
		 * (device locked or deleted) or expired. */
		if (ret != -EKEYREVOKED)
			ret = -EKEYEXPIRED;
		goto out;
	}
	if (r.status == 401 && own && tries++ == 0 &&
	    (!strcmp(e->cls, "CredentialsNotValid") || !e->cls[0])) {
		http_response_release(&r);
		ret = relogin(z, gen, e);
		if (ret)
			goto out;
		goto again;
	}
out:
	http_response_release(&r);
	json_str_free(payload);
	if (ret && err)
		*err = le;
	return ret;
}
