// SPDX-License-Identifier: MIT
#include "backend/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend/log.h"
#include "backend/secret.h"

#include "backend/banned.h" /* always the last include */

#define SECRET_REPLY_MAX (64 * 1024)
#define POOL_MAX 8
/* more sockets than libcurl keeps for POOL_MAX handles and a few more in
 * flight; one past it is still used, but not cut at a stop */
#define SOCKS_MAX 64

struct http_client {
	char *base;
	char *cafile;
	long connect_ms, total_ms;
	size_t max_response;
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	/* pool_lock protects pool[] and npool: idle easy handles. */
	pthread_mutex_t pool_lock;
	CURL *pool[POOL_MAX];
	int npool;
	/* sock_lock protects socks[]: every socket libcurl holds open (in a
	 * transfer or kept alive), so a stop can cut them at once. */
	pthread_mutex_t sock_lock;
	int socks[SOCKS_MAX];
	bool stopping; /* atomic */
};

/* The request body, handed to libcurl piece by piece from the caller's
 * buffer (guarded memory for a login). */
struct source {
	const char *p;
	size_t left;
};

static size_t source_read(char *dst, size_t size, size_t nmemb, void *arg)
{
	struct source *src = arg;
	size_t n = size * nmemb;

	if (n > src->left)
		n = src->left;
	memcpy(dst, src->p, n);
	src->p += n;
	src->left -= n;
	return n;
}

struct sink {
	char *buf;
	size_t len, cap, max;
	bool secret;
	bool overflow;
};

/* libcurl's allocator: every block it frees is wiped first, so the
 * request and reply bytes it copied (headers, bodies) do not stay behind in
 * the heap. */
static void wipe_free(void *p)
{
	if (!p)
		return;
	explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

static void *wipe_realloc(void *p, size_t n)
{
	size_t old;
	void *q;

	if (!p)
		return malloc(n);
	if (!n) {
		wipe_free(p);
		return NULL;
	}
	old = malloc_usable_size(p);
	q = malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, old < n ? old : n);
	wipe_free(p);
	return q;
}

int http_global_init(void)
{
	return curl_global_init_mem(CURL_GLOBAL_DEFAULT, malloc, wipe_free,
				    wipe_realloc, strdup, calloc) ?
		       -EIO :
		       0;
}

void http_global_cleanup(void)
{
	curl_global_cleanup();
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access a,
		       void *arg)
{
	struct http_client *c = arg;

	pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
	struct http_client *c = arg;

	pthread_mutex_unlock(&c->share_locks[data]);
}

struct http_client *http_client_new(const struct http_opts *o)
{
	struct http_client *c;
	size_t n;

	if (!o->base_url || (strncmp(o->base_url, "http://", 7) &&
			     strncmp(o->base_url, "https://", 8)))
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->base = strdup(o->base_url);
	if (!c->base)
		goto fail;
	n = strlen(c->base);
	while (n > 8 && c->base[n - 1] == '/')
		c->base[--n] = '\0';
	if (o->cafile) {
		c->cafile = strdup(o->cafile);
		if (!c->cafile)
			goto fail;
	}
	c->connect_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
	c->total_ms = o->timeout_ms ? o->timeout_ms : 20000;
	c->max_response = o->max_response ? o->max_response : 16 << 20;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
	pthread_mutex_init(&c->sock_lock, NULL);
	for (int i = 0; i < SOCKS_MAX; i++)
		c->socks[i] = -1;
	c->share = curl_share_init();
	if (!c->share)
		goto fail;
	curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(c->share, CURLSHOPT_SHARE,
			  CURL_LOCK_DATA_SSL_SESSION);
	return c;
fail:
	http_client_free(c);
	return NULL;
}

void http_client_free(struct http_client *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->npool; i++)
		curl_easy_cleanup(c->pool[i]);
	if (c->share)
		curl_share_cleanup(c->share);
	free(c->base);
	free(c->cafile);
	free(c);
}

void http_client_stop(struct http_client *c)
{
	__atomic_store_n(&c->stopping, true, __ATOMIC_RELEASE);
	/* A transfer waiting on the server sees its socket shut and fails
	 * now, not at its next progress call or its timeout. */
	pthread_mutex_lock(&c->sock_lock);
	for (int i = 0; i < SOCKS_MAX; i++)
		if (c->socks[i] >= 0)
			shutdown(c->socks[i], SHUT_RDWR);
	pthread_mutex_unlock(&c->sock_lock);
}

static curl_socket_t sock_open(void *arg, curlsocktype purpose,
			       struct curl_sockaddr *a)
{
	struct http_client *c = arg;
	int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);

	if (fd < 0)
		return CURL_SOCKET_BAD;
	pthread_mutex_lock(&c->sock_lock);
	if (__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
		pthread_mutex_unlock(&c->sock_lock);
		close(fd);
		return CURL_SOCKET_BAD;
	}
	for (int i = 0; i < SOCKS_MAX; i++) {
		if (c->socks[i] < 0) {
			c->socks[i] = fd;
			break;
		}
	}
	pthread_mutex_unlock(&c->sock_lock);
	return fd;
}

static int sock_close(void *arg, curl_socket_t fd)
{
	struct http_client *c = arg;

	pthread_mutex_lock(&c->sock_lock);
	for (int i = 0; i < SOCKS_MAX; i++) {
		if (c->socks[i] == fd) {
			c->socks[i] = -1;
			break;
		}
	}
	pthread_mutex_unlock(&c->sock_lock);
	return close(fd);
}

/* libcurl calls this while a transfer runs: non-zero aborts it. */
static int progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
		    curl_off_t ultotal, curl_off_t ulnow)
{
	struct http_client *c = arg;

	return __atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE);
}

long http_timeout_ms(const struct http_client *c)
{
	return c->total_ms;
}

const char *http_base_url(const struct http_client *c)
{
	return c->base;
}

static size_t sink_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct sink *s = arg;
	size_t n = size * nmemb, cap;
	char *nb;

	if (n > s->max - s->len) {
		s->overflow = true;
		return 0; /* aborts the transfer */
	}
	if (s->len + n + 1 > s->cap) {
		if (s->secret) {
			/* guarded memory does not grow: size it once */
			cap = s->max + 1;
			nb = sodium_malloc(cap);
			if (!nb)
				return 0;
			if (s->buf) {
				memcpy(nb, s->buf, s->len);
				sodium_free(s->buf);
			}
		} else {
			cap = s->cap ? s->cap * 2 : 4096;
			while (cap < s->len + n + 1)
				cap *= 2;
			if (cap > s->max + 1)
				cap = s->max + 1;
			nb = realloc(s->buf, cap);
			if (!nb)
				return 0;
		}
		s->buf = nb;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, n);
	s->len += n;
	return n;
}

static CURL *handle_get(struct http_client *c)
{
	CURL *h = NULL;

	pthread_mutex_lock(&c->pool_lock);
	if (c->npool)
		h = c->pool[--c->npool];
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		return h;
	h = curl_easy_init();
	return h;
}

static void handle_put(struct http_client *c, CURL *h, bool drop)
{
	if (drop) {
		curl_easy_cleanup(h);
		return;
	}
	curl_easy_reset(h);
	pthread_mutex_lock(&c->pool_lock);
	if (c->npool < POOL_MAX) {
		c->pool[c->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		curl_easy_cleanup(h);
}

static int curl_errno(CURLcode rc)
{
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
		return -EPROTO;
	case CURLE_WRITE_ERROR:
	case CURLE_FILESIZE_EXCEEDED:
		return -EFBIG;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	case CURLE_ABORTED_BY_CALLBACK:
		return -ECANCELED;
	default:
		return -EIO;
	}
}

static struct curl_slist *auth_header(const struct secret *bearer)
{
	static const char pfx[] = "Authorization: Bearer ";
	struct curl_slist *l;
	char *hdr;

	/* curl copies header strings; the copy is freed with the list.  Build
	 * ours in guarded memory so at least our side leaves nothing behind. */
	hdr = sodium_malloc(sizeof(pfx) + bearer->len);
	if (!hdr)
		return NULL;
	memcpy(hdr, pfx, sizeof(pfx) - 1);
	memcpy(hdr + sizeof(pfx) - 1, bearer->buf, bearer->len + 1);
	l = curl_slist_append(NULL, hdr);
	sodium_free(hdr);
	return l;
}

static void slist_wipe_free(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p; p = p->next)
		sodium_memzero(p->data, strlen(p->data));
	curl_slist_free_all(l);
}

const char *http_strerror(int err)
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

int http_do(struct http_client *c, const struct http_req *rq,
	    struct http_response *resp)
{
	const char *method = rq->method, *path = rq->path;
	bool secret_reply = rq->secret_reply;
	struct source src = { rq->body, rq->body_len };
	struct sink sink = { .secret = secret_reply };
	struct curl_slist *hdrs = NULL, *tail;
	char url[2048], ctbuf[128];
	CURLcode rc;
	long status = 0;
	CURL *h;
	int ret = 0;

	if (__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE))
		return -ECANCELED;
	sink.max = secret_reply ? SECRET_REPLY_MAX : c->max_response;
	if ((size_t)snprintf(url, sizeof(url), "%s%s", c->base, path) >=
	    sizeof(url))
		return -ENAMETOOLONG;
	h = handle_get(c);
	if (!h)
		return -ENOMEM;
	if (rq->bearer) {
		hdrs = auth_header(rq->bearer);
		if (!hdrs) {
			ret = -ENOMEM;
			goto out;
		}
	}
	if (rq->ctype) {
		snprintf(ctbuf, sizeof(ctbuf), "Content-Type: %s", rq->ctype);
		tail = curl_slist_append(hdrs, ctbuf);
		if (!tail) {
			ret = -ENOMEM;
			goto out;
		}
		hdrs = tail;
	}
	/* curl adds "Expect: 100-continue" for big bodies: not wanted. */
	tail = curl_slist_append(hdrs, "Expect:");
	if (!tail) {
		ret = -ENOMEM;
		goto out;
	}
	hdrs = tail;
	tail = curl_slist_append(hdrs, "Accept: application/json");
	if (tail)
		hdrs = tail;

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_SHARE, c->share);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
			 rq->timeout_ms ? rq->timeout_ms : c->total_ms);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->cafile)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->cafile);
	curl_easy_setopt(h, CURLOPT_USERAGENT,
			 rq->user_agent ? rq->user_agent :
					  "zenmlfs/" ZENMLFS_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, sock_open);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, c);
	curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, sock_close);
	curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, c);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)sink.max);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (rq->body) {
		/* Read from the caller's buffer: no copy made by us. */
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, source_read);
		curl_easy_setopt(h, CURLOPT_READDATA, &src);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)rq->body_len);
	} else if (!strcmp(method, "GET")) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	}

	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		ret = sink.overflow ? -EFBIG : curl_errno(rc);
		log_debug("%s '%s' failed: %s", method, path,
			  curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (!sink.buf) {
		sink.buf = secret_reply ? sodium_malloc(1) : malloc(1);
		if (!sink.buf) {
			ret = -ENOMEM;
			goto out;
		}
	}
	sink.buf[sink.len] = '\0';
	resp->status = status;
	{
		curl_off_t ra = 0;

		/* delta-seconds or an HTTP date, as libcurl reads it */
		if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) || ra < 0)
			ra = 0;
		resp->retry_after = ra > 86400 ? 86400 : (long)ra;
	}
	resp->body = sink.buf;
	resp->len = sink.len;
	resp->secret = secret_reply;
	sink.buf = NULL;
out:
	if (sink.buf) {
		if (sink.secret)
			sodium_free(sink.buf);
		else
			free(sink.buf);
	}
	slist_wipe_free(hdrs);
	/* A handle that received a secret keeps it in its receive buffer:
	 * free it (wiped by the allocator) rather than pool it. */
	handle_put(c, h, secret_reply);
	/* libcurl's frames below this one held the request and the reply
	 * (a bearer token, a login body, a minted token): wipe that stack. */
	if (rq->bearer || secret_reply)
		sodium_stackzero(STACK_WIPE);
	return ret;
}

void http_response_release(struct http_response *r)
{
	if (!r->body)
		return;
	if (r->secret)
		sodium_free(r->body);
	else
		free(r->body);
	r->body = NULL;
	r->len = 0;
}

struct secret *http_form_escape(const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	struct secret *out;
	char *tmp;
	size_t j = 0;

	tmp = sodium_malloc(len * 3 + 1);
	if (!tmp)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = s[i];

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
		    ch == '.' || ch == '~') {
			tmp[j++] = ch;
		} else {
			tmp[j++] = '%';
			tmp[j++] = hex[ch >> 4];
			tmp[j++] = hex[ch & 15];
		}
	}
	out = secret_new(tmp, j);
	sodium_free(tmp);
	return out;
}

int http_form_add(struct secret **form, const char *name, const char *val,
		  size_t len)
{
	struct secret *esc, *nf;
	size_t nlen = strlen(name), olen = *form ? (*form)->len : 0;
	char *tmp;

	esc = http_form_escape(val, len);
	if (!esc)
		return -ENOMEM;
	tmp = sodium_malloc(olen + nlen + esc->len + 3);
	if (!tmp) {
		secret_unref(esc);
		return -ENOMEM;
	}
	size_t j = 0;

	if (olen) {
		memcpy(tmp, (*form)->buf, olen);
		j = olen;
		tmp[j++] = '&';
	}
	memcpy(tmp + j, name, nlen);
	j += nlen;
	tmp[j++] = '=';
	memcpy(tmp + j, esc->buf, esc->len);
	j += esc->len;
	nf = secret_new(tmp, j);
	sodium_free(tmp);
	secret_unref(esc);
	if (!nf)
		return -ENOMEM;
	secret_unref(*form);
	*form = nf;
	return 0;
}
