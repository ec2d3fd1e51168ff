// SPDX-License-Identifier: MIT
#include "backend/zenml.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/http.h"
#include "backend/log.h"
#include "backend/secret.h"
#include "backend/util.h"

#define PAGE_SIZE_MAX 10000

struct zen {
	struct http_client *http;
	/* login_lock serializes logins (it is held across the network call:
	 * it protects nothing but the order of logins). */
	pthread_mutex_t login_lock;
	/* lock protects cred, session, session_gen and last_error. */
	pthread_mutex_t lock;
	struct zen_cred cred;
	struct secret *session;
	unsigned long session_gen;
	char last_error[512];
};

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

struct zen *zen_new(struct http_client *http, struct zen_cred *cred)
{
	struct zen *z = calloc(1, sizeof(*z));

	if (!z)
		return NULL;
	z->http = http;
	z->cred = *cred;
	memset(cred, 0, sizeof(*cred));
	pthread_mutex_init(&z->lock, NULL);
	pthread_mutex_init(&z->login_lock, NULL);
	/* A saved device session is used as the session directly. */
	if (z->cred.kind == CRED_SESSION)
		z->session = secret_ref(z->cred.secret);
	return z;
}

void zen_free(struct zen *z)
{
	if (!z)
		return;
	secret_unref(z->session);
	secret_unref(z->cred.secret);
	free(z->cred.username);
	http_client_free(z->http);
	free(z);
}

const char *zen_url(const struct zen *z)
{
	return http_base_url(z->http);
}

enum cred_kind zen_cred_kind(const struct zen *z)
{
	return z->cred.kind;
}

void zen_set_error(struct zen *z, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&z->lock);
	va_start(ap, fmt);
	vsnprintf(z->last_error, sizeof(z->last_error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&z->lock);
}

void zen_last_error(struct zen *z, char *buf, size_t size)
{
	pthread_mutex_lock(&z->lock);
	strlcpy_z(buf, z->last_error, size);
	pthread_mutex_unlock(&z->lock);
}

static const char *errno_text(int err)
{
	switch (-err) {
	case ECONNREFUSED:
		return "connection refused";
	case EHOSTUNREACH:
		return "host unreachable";
	case ETIMEDOUT:
		return "timed out";
	case EPROTO:
		return "TLS failure";
	case EFBIG:
		return "reply too large";
	default:
		return strerror(-err);
	}
}

/* Turn a non-2xx reply into an errno, recording the server's message. */
static int reply_error(struct zen *z, const char *what,
		       const struct http_response *r, char *cls, size_t clssz)
{
	char msg[300];
	int err;

	cls[0] = '\0';
	zerr_parse(r->body, r->len, cls, clssz, msg, sizeof(msg));
	err = zerr_errno(r->status, cls, msg);
	zen_set_error(z, "%s: server said %ld (%s%s%s)", what, r->status, cls,
		      cls[0] ? ": " : "", msg);
	return err;
}

static int transport_error(struct zen *z, const char *what, int err)
{
	zen_set_error(z, "%s: %s", what, errno_text(err));
	return err;
}

void zen_set_api_key(struct zen *z, struct secret *key)
{
	pthread_mutex_lock(&z->lock);
	secret_unref(z->cred.secret);
	z->cred.secret = secret_ref(key);
	z->cred.kind = CRED_API_KEY;
	pthread_mutex_unlock(&z->lock);
}

void zen_api_key_id(struct zen *z, char *id, size_t idsz)
{
	char tmp[40];

	id[0] = '\0';
	pthread_mutex_lock(&z->lock);
	if (z->cred.kind == CRED_API_KEY &&
	    !zenkey_id(z->cred.secret->buf, z->cred.secret->len, tmp,
		       sizeof(tmp)))
		strlcpy_z(id, tmp, idsz);
	pthread_mutex_unlock(&z->lock);
}

static int do_login(struct zen *z)
{
	struct http_response r = { 0 };
	struct secret *form = NULL, *sess;
	struct zen_cred cred;
	json_t *root = NULL, *tok;
	char cls[64];
	int ret;

	pthread_mutex_lock(&z->lock);
	cred.kind = z->cred.kind;
	cred.secret = secret_ref(z->cred.secret);
	cred.username = z->cred.username ? strdup(z->cred.username) : NULL;
	pthread_mutex_unlock(&z->lock);

	switch (cred.kind) {
	case CRED_API_KEY:
		ret = http_form_add(&form, "grant_type", "zenml-api-key", 13);
		if (!ret)
			ret = http_form_add(&form, "password", cred.secret->buf,
					    cred.secret->len);
		break;
	case CRED_PASSWORD:
		ret = http_form_add(&form, "grant_type", "password", 8);
		if (!ret)
			ret = http_form_add(&form, "username", cred.username,
					    strlen(cred.username));
		if (!ret)
			ret = http_form_add(&form, "password", cred.secret->buf,
					    cred.secret->len);
		break;
	case CRED_SESSION:
		/* A device session cannot be renewed without the user. */
		zen_set_error(z,
			      "the saved login session is no longer valid: "
			      "run 'zenmlfs login %s' again",
			      zen_url(z));
		ret = -EKEYEXPIRED;
		goto out;
	default:
		zen_set_error(z, "no credential configured");
		ret = -ENOKEY;
		goto out;
	}
	if (ret)
		goto out;
	ret = http_request(z->http, "POST", "/api/v1/login",
			   "application/x-www-form-urlencoded", form->buf,
			   form->len, NULL, true, &r);
	if (ret) {
		ret = transport_error(z, "login", ret);
		goto out;
	}
	if (r.status != 200) {
		ret = reply_error(z, "login", &r, cls, sizeof(cls));
		/* Any refusal of the login is about the credential. */
		if (r.status == 401 || r.status == 403)
			ret = ret == -EKEYREVOKED ? ret : -EKEYREJECTED;
		goto out;
	}
	root = json_loadb(r.body, r.len, 0, NULL);
	tok = json_object_get(root, "access_token");
	if (!json_is_string(tok) || !json_string_length(tok)) {
		zen_set_error(z, "login: malformed reply from the server");
		ret = -EIO;
		goto out;
	}
	sess = secret_new(json_string_value(tok), json_string_length(tok));
	if (!sess) {
		ret = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&z->lock);
	secret_unref(z->session);
	z->session = sess;
	z->session_gen++;
	pthread_mutex_unlock(&z->lock);
out:
	json_decref(root);
	http_response_release(&r);
	secret_unref(form);
	secret_unref(cred.secret);
	free(cred.username);
	return ret;
}

int zen_login(struct zen *z)
{
	int ret;

	pthread_mutex_lock(&z->login_lock);
	ret = do_login(z);
	pthread_mutex_unlock(&z->login_lock);
	return ret;
}

/* Log in again unless another thread already did since gen. */
static int relogin(struct zen *z, unsigned long gen)
{
	unsigned long now;
	int ret = 0;

	pthread_mutex_lock(&z->login_lock);
	pthread_mutex_lock(&z->lock);
	now = z->session_gen;
	pthread_mutex_unlock(&z->lock);
	if (now == gen)
		ret = do_login(z);
	pthread_mutex_unlock(&z->login_lock);
	return ret;
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

static bool session_only(struct zen *z)
{
	bool ret;

	pthread_mutex_lock(&z->lock);
	ret = z->cred.kind == CRED_SESSION;
	pthread_mutex_unlock(&z->lock);
	return ret;
}

int zen_info(struct zen *z, json_t **out)
{
	struct http_response r = { 0 };
	char cls[64];
	json_t *root;
	int ret;

	ret = http_request(z->http, "GET", "/api/v1/info", NULL, NULL, 0, NULL,
			   false, &r);
	if (ret)
		return transport_error(z, "server info", ret);
	if (r.status != 200) {
		ret = reply_error(z, "server info", &r, cls, sizeof(cls));
		goto out;
	}
	root = json_loadb(r.body, r.len, 0, NULL);
	if (!json_is_object(root)) {
		json_decref(root);
		zen_set_error(z, "server info: the reply is not a ZenML "
				 "server's");
		ret = -EIO;
		goto out;
	}
	*out = root;
out:
	http_response_release(&r);
	return ret;
}

/*
 * One authenticated request.  On 401 CredentialsNotValid with the daemon's
 * session, log in again once and retry.
 */
static int call(struct zen *z, const struct secret *bearer, const char *method,
		const char *path, json_t *body, bool secret_reply, json_t **out)
{
	struct http_response r = { 0 };
	struct secret *sess = NULL;
	unsigned long gen = 0;
	char *payload = NULL, cls[64], what[300];
	json_t *root;
	int ret, tries = 0;

	snprintf(what, sizeof(what), "%s %s", method, path);
	if (body) {
		payload = json_dumps(body, JSON_COMPACT);
		if (!payload)
			return -ENOMEM;
	}
again:
	if (!bearer) {
		sess = session_get(z, &gen);
		if (!sess) {
			ret = relogin(z, gen);
			if (ret)
				goto out;
			sess = session_get(z, &gen);
			if (!sess) {
				ret = -ENOKEY;
				goto out;
			}
		}
	}
	ret = http_request(z->http, method, path,
			   payload ? "application/json" : NULL, payload,
			   payload ? strlen(payload) : 0,
			   bearer ? bearer : sess, secret_reply, &r);
	secret_unref(sess);
	sess = NULL;
	if (ret) {
		ret = transport_error(z, what, ret);
		goto out;
	}
	if (r.status < 200 || r.status > 299) {
		ret = reply_error(z, what, &r, cls, sizeof(cls));
		if (r.status == 401 && !bearer && session_only(z)) {
			/* A device session cannot log in again: it is either
			 * revoked (device locked or deleted) or expired. */
			char msg[512];

			if (ret != -EKEYREVOKED)
				ret = -EKEYEXPIRED;
			zen_last_error(z, msg, sizeof(msg));
			zen_set_error(z, "%s; run 'zenmlfs login %s' again",
				      msg, zen_url(z));
			goto out;
		}
		if (r.status == 401 && !bearer && tries++ == 0 &&
		    (!strcmp(cls, "CredentialsNotValid") || !cls[0])) {
			http_response_release(&r);
			ret = relogin(z, gen);
			if (ret)
				goto out;
			goto again;
		}
		goto out;
	}
	if (out) {
		root = r.len ? json_loadb(r.body, r.len, JSON_DECODE_ANY,
					  NULL) :
			       json_null();
		if (!root) {
			zen_set_error(z, "%s: malformed reply from the server",
				      what);
			ret = -EIO;
			goto out;
		}
		*out = root;
	}
out:
	http_response_release(&r);
	json_str_free(payload);
	return ret;
}

int zen_call(struct zen *z, const char *method, const char *path, json_t *body,
	     bool secret_reply, json_t **out)
{
	return call(z, NULL, method, path, body, secret_reply, out);
}

int zen_call_as(struct zen *z, const struct secret *bearer, const char *method,
		const char *path, json_t **out)
{
	return call(z, bearer, method, path, NULL, false, out);
}

int zen_api_token(struct zen *z, unsigned lifetime, struct secret **out)
{
	char path[128];
	json_t *tok = NULL;
	struct secret *s;
	int ret;

	snprintf(path, sizeof(path),
		 "/api/v1/api_token?token_type=generic&expires_in=%u",
		 lifetime);
	ret = call(z, NULL, "GET", path, NULL, true, &tok);
	if (ret)
		return ret;
	/* A token goes into an HTTP header: printable ASCII only. */
	if (!json_is_string(tok) || json_string_length(tok) == 0 ||
	    json_string_length(tok) > 8192) {
		ret = -EIO;
		goto bad;
	}
	for (const char *p = json_string_value(tok); *p; p++)
		if (*p <= 0x20 || *p >= 0x7f) {
			ret = -EIO;
			goto bad;
		}
	s = secret_new(json_string_value(tok), json_string_length(tok));
	json_decref(tok);
	if (!s)
		return -ENOMEM;
	*out = s;
	return 0;
bad:
	zen_set_error(z, "api token: malformed reply from the server");
	json_decref(tok);
	return ret;
}

int zen_list(struct zen *z, const char *path, json_t **items)
{
	json_t *all, *page = NULL, *arr;
	char url[1024];
	long pages = 1;
	int ret = 0;

	all = json_array();
	if (!all)
		return -ENOMEM;
	for (long i = 1; i <= pages; i++) {
		snprintf(url, sizeof(url), "%s%spage=%ld&size=%d&hydrate=true",
			 path, strchr(path, '?') ? "&" : "?", i, PAGE_SIZE_MAX);
		ret = call(z, NULL, "GET", url, NULL, false, &page);
		if (ret)
			goto fail;
		arr = json_object_get(page, "items");
		if (!json_is_array(arr) ||
		    !json_is_integer(json_object_get(page, "total_pages"))) {
			zen_set_error(z, "GET %s: malformed list reply", path);
			ret = -EIO;
			goto fail;
		}
		pages = json_integer_value(
			json_object_get(page, "total_pages"));
		if (pages > 100000)
			pages = 100000;
		json_array_extend(all, arr);
		json_decref(page);
		page = NULL;
	}
	*items = all;
	return 0;
fail:
	json_decref(page);
	json_decref(all);
	return ret;
}
