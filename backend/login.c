// SPDX-License-Identifier: MIT
/*
 * The OAuth 2.0 device authorization grant against a ZenML server:
 * request a code, then poll /api/v1/login with it (backend/login.h).
 */
#include "backend/login.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include <sys/utsname.h>

#include "backend/http.h"
#include "backend/secret.h"
#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

#define DEVICE_GRANT "urn:ietf:params:oauth:grant-type:device_code"

/*
 * The User-Agent the ZenML server reads a device's details from
 * (OAuthDeviceUserAgentHeader): "Host/<hostname> ZenML/<version>
 * Python/<version> OS/<system>", space-separated key/value pairs.  We are
 * not Python: that one is left out, and ZenML/ names zenmlfs.
 */
static void device_user_agent(char *buf, size_t size)
{
	struct utsname u;
	char host[sizeof(u.nodename)] = "unknown",
	     os[sizeof(u.sysname)] = "Linux";

	if (!uname(&u)) {
		snprintf(host, sizeof(host), "%s", u.nodename);
		snprintf(os, sizeof(os), "%s", u.sysname);
	}
	/* the header splits on spaces */
	for (char *p = host; *p; p++)
		if (*p == ' ' || (unsigned char)*p < 0x21 || *p == 0x7f)
			*p = '-';
	snprintf(buf, size, "Host/%s ZenML/zenmlfs-%s OS/%s zenmlfs/%s", host,
		 ZENMLFS_VERSION, os, ZENMLFS_VERSION);
}

static int post_form(struct http_client *h, const char *form, size_t len,
		     const char *path, const char *ua, struct http_response *r)
{
	return http_do(h,
		       &(struct http_req){
			       .method = "POST",
			       .path = path,
			       .ctype = "application/x-www-form-urlencoded",
			       .body = form,
			       .body_len = len,
			       .secret_reply = true,
			       .user_agent = ua,
		       },
		       r);
}

/* The device id is only in the device_id= parameter of the URL. */
static void device_id_of(const char *uri, char *id, size_t size)
{
	const char *p = strstr(uri, "device_id=");

	id[0] = '\0';
	if (p && strlen(p + 10) >= 36) {
		snprintf(id, size, "%.36s", p + 10);
		if (!uuid_valid(id))
			id[0] = '\0';
	}
}

/* The reply to the device authorization request, into dl. */
static int take_code(struct device_login *dl, json_t *j, const char *client)
{
	const char *url = http_base_url(dl->h);
	json_t *v = json_object_get(j, "device_code");
	const char *uri;

	if (!json_is_string(v) ||
	    !json_is_string(json_object_get(j, "user_code")) ||
	    !json_is_string(json_object_get(j, "verification_uri")))
		return -EPROTO;
	/* The device code can be exchanged for a session: it goes into
	 * guarded memory (the poll's form) only. */
	if (http_form_add(&dl->form, "grant_type", DEVICE_GRANT,
			  strlen(DEVICE_GRANT)) ||
	    http_form_add(&dl->form, "client_id", client, strlen(client)) ||
	    http_form_add(&dl->form, "device_code", json_string_value(v),
			  json_string_length(v)))
		return -ENOMEM;
	dl->interval = json_integer_value(json_object_get(j, "interval"));
	dl->expires = json_integer_value(json_object_get(j, "expires_in"));
	if (dl->interval < 1 || dl->interval > 60)
		dl->interval = 5;
	if (dl->expires < 1 || dl->expires > 3600)
		dl->expires = 300;
	v = json_object_get(j, "verification_uri_complete");
	if (!json_is_string(v))
		v = json_object_get(j, "verification_uri");
	uri = json_string_value(v);
	snprintf(dl->verification, sizeof(dl->verification), "%s%s",
		 uri[0] == '/' ? url : "", uri);
	device_id_of(dl->verification, dl->device, sizeof(dl->device));
	snprintf(dl->user_code, sizeof(dl->user_code), "%s",
		 json_string_value(json_object_get(j, "user_code")));
	return 0;
}

int device_login_start(struct device_login *dl, struct http_client *h,
		       const char *client_id, char *why, size_t size)
{
	struct http_response r = { 0 };
	char form[256], cls[64], msg[300];
	const char *url = http_base_url(h);
	json_t *j;
	int ret;

	memset(dl, 0, sizeof(*dl));
	dl->h = h;
	device_user_agent(dl->ua, sizeof(dl->ua));
	snprintf(form, sizeof(form), "client_id=%s", client_id);
	if (post_form(h, form, strlen(form), "/api/v1/device_authorization",
		      dl->ua, &r)) {
		snprintf(why, size, "cannot reach the ZenML server at '%s'",
			 url);
		return -EIO;
	}
	if (r.status != 200) {
		zerr_parse(r.body, r.len, cls, sizeof(cls), msg, sizeof(msg));
		snprintf(why, size,
			 "'%s' refused the device login: server said %ld (%s)",
			 url, r.status, msg);
		http_response_release(&r);
		return -EPROTO;
	}
	j = json_loadb(r.body, r.len, 0, NULL);
	http_response_release(&r);
	ret = take_code(dl, j, client_id);
	json_decref(j);
	if (ret == -EPROTO)
		snprintf(why, size, "malformed device login reply from '%s'",
			 url);
	else if (ret)
		snprintf(why, size, "out of memory");
	return ret;
}

/* The session token of an approval. */
static enum device_step approved(const struct http_response *r,
				 struct secret **session)
{
	json_t *j = json_loadb(r->body, r->len, 0, NULL);
	json_t *v = json_object_get(j, "access_token");
	enum device_step step = DL_APPROVED;

	if (!json_is_string(v))
		step = DL_MALFORMED;
	else
		*session =
			secret_new(json_string_value(v), json_string_length(v));
	if (step == DL_APPROVED && !*session)
		step = DL_NOMEM;
	json_decref(j);
	return step;
}

enum device_step device_login_poll(struct device_login *dl,
				   struct secret **session, char *why,
				   size_t size)
{
	struct http_response r = { 0 };
	char cls[64], msg[300];
	enum device_step step = DL_PENDING;

	*session = NULL;
	if (post_form(dl->h, dl->form->buf, dl->form->len, "/api/v1/login",
		      dl->ua, &r))
		return DL_PENDING; /* transient: keep polling */
	if (r.status == 200) {
		step = approved(&r, session);
		http_response_release(&r);
		return step;
	}
	zerr_parse(r.body, r.len, cls, sizeof(cls), msg, sizeof(msg));
	/* A server busy or restarting (429, 5xx): keep polling until the
	 * code expires. */
	if (r.status < 500 && r.status != 429) {
		if (!strcmp(cls, "slow_down"))
			dl->interval += 5;
		else if (!strcmp(cls, "access_denied"))
			step = DL_DENIED;
		else if (!strcmp(cls, "expired_token"))
			step = DL_EXPIRED;
		else if (strcmp(cls, "authorization_pending"))
			step = DL_REFUSED;
	}
	snprintf(why, size, "%s%s%s", cls, cls[0] ? ": " : "", msg);
	http_response_release(&r);
	return step;
}

void device_login_release(struct device_login *dl)
{
	secret_unref(dl->form);
	dl->form = NULL;
}
