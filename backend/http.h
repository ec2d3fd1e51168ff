/* SPDX-License-Identifier: MIT */
/*
 * A small HTTP client on libcurl for one server.  Every request has connect
 * and total timeouts and a response size cap; TLS is verified (plus
 * --cafile); no cookie engine, no redirects, no Origin/Referer; connections
 * are reused across threads through a shared cache.  Thread-safe.
 */
#ifndef ZENMLFS_HTTP_H
#define ZENMLFS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct secret;

struct http_opts {
	const char *base_url; /* "https://host[:port][/prefix]", copied */
	const char *cafile; /* may be NULL; copied */
	long connect_timeout_ms; /* 0: 5000 */
	long timeout_ms; /* 0: 20000 */
	size_t max_response; /* 0: 16 MiB */
};

struct http_response {
	long status; /* HTTP status, 0 when no reply */
	char *body; /* NUL-terminated; free with http_response_release */
	size_t len;
	bool secret; /* body lives in guarded memory */
};

/* Returns NULL on a bad URL (not http/https) or out of memory. */
struct http_client *http_client_new(const struct http_opts *opts);
void http_client_free(struct http_client *c);
/* The base URL without a trailing slash; owned by the client. */
const char *http_base_url(const struct http_client *c);

/*
 * One request to base_url + path.  body may be NULL; ctype is its
 * Content-Type.  bearer may be NULL.  When secret_reply is set, the reply
 * body (which holds a secret) is kept in guarded memory, capped at 64 KiB.
 *
 * Returns 0 when the server answered (any status, in resp->status) or a
 * transport errno: -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -EPROTO (TLS),
 * -EFBIG (reply over the cap), -EIO.  On error resp is untouched.  The
 * transport error text goes to the log, never the request.
 */
int http_request(struct http_client *c, const char *method, const char *path,
		 const char *ctype, const char *body, size_t body_len,
		 const struct secret *bearer, bool secret_reply,
		 struct http_response *resp);

void http_response_release(struct http_response *resp);

/* URL-encode s for a form body into guarded memory.  Caller frees with
 * secret_unref(). */
struct secret *http_form_escape(const char *s, size_t len);

/* Append "name=" + URL-encoded val (and a "&" before it unless *form is
 * NULL) to a form body kept in guarded memory; *form is replaced. */
int http_form_add(struct secret **form, const char *name, const char *val,
		  size_t len);

#endif
