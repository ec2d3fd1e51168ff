/* SPDX-License-Identifier: MIT */
/*
 * A small HTTP client on libcurl for one server.  Every request has connect
 * and total timeouts and a response size cap; TLS is verified (plus
 * --cafile); no cookie engine, no redirects, no Origin/Referer; connections
 * are reused across threads through a shared cache.  Thread-safe.
 *
 * Secrets: request bodies are read from the caller's buffer (guarded
 * memory for a login) through a read callback, the Authorization header is
 * built in guarded memory, and replies that carry a secret are received
 * into guarded memory.  libcurl still copies what it sends and receives
 * into its own heap buffers (the header block, the upload buffer, the
 * receive buffer): http_global_init() gives libcurl an allocator that wipes
 * every block it frees, and a handle that carried a secret reply is freed
 * at once instead of being pooled.  What stays is the kernel's socket
 * buffers and, with TLS, OpenSSL's record buffers.
 */
#ifndef ZENMLFS_HTTP_H
#define ZENMLFS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

struct secret;

/* curl_global_init() with the wiping allocator; once, before threads. */
int http_global_init(void);
void http_global_cleanup(void);

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
	long retry_after; /* seconds the reply's Retry-After asks; 0: none */
};

struct http_req {
	const char *method;
	const char *path; /* appended to the base URL */
	const char *ctype; /* Content-Type of body, NULL when none */
	const char *body; /* may be NULL; not copied */
	size_t body_len;
	const struct secret *bearer; /* may be NULL */
	bool secret_reply; /* reply into guarded memory, at most 64 KiB */
	long timeout_ms; /* 0: the client's */
	const char *user_agent; /* NULL: "zenmlfs/VERSION" */
};

/* Returns NULL on a bad URL (not http/https) or out of memory. */
struct http_client *http_client_new(const struct http_opts *opts);
void http_client_free(struct http_client *c);
/* Abort every transfer in flight and fail new ones (-ECANCELED): at
 * shutdown, so no thread waits out a request timeout. */
void http_client_stop(struct http_client *c);
/* The client's request timeout (ms). */
long http_timeout_ms(const struct http_client *c);
/* The base URL without a trailing slash; owned by the client. */
const char *http_base_url(const struct http_client *c);

/*
 * One request.  Returns 0 when the server answered (any status, in
 * resp->status) or a transport errno: -ETIMEDOUT, -ECONNREFUSED,
 * -EHOSTUNREACH, -EPROTO (TLS), -EFBIG (reply over the cap), -EIO.  On
 * error resp is untouched.  The transport error text goes to the debug
 * log, never the request.
 */
int http_do(struct http_client *c, const struct http_req *rq,
	    struct http_response *resp);

void http_response_release(struct http_response *resp);

/* A short text for a transport errno ("connection refused", ...). */
const char *http_strerror(int err);

/* URL-encode s for a form body into guarded memory.  Caller frees with
 * secret_unref(). */
struct secret *http_form_escape(const char *s, size_t len);

/* Append "name=" + URL-encoded val (and a "&" before it unless *form is
 * NULL) to a form body kept in guarded memory; *form is replaced. */
int http_form_add(struct secret **form, const char *name, const char *val,
		  size_t len);

#endif
