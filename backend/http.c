// SPDX-License-Identifier: MIT
#include "backend/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/log.h"
#include "backend/secret.h"

#define SECRET_REPLY_MAX (64 * 1024)
#define POOL_MAX 8

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
};

struct sink {
	char *buf;
	size_t len, cap, max;
	bool secret;
	bool overflow;
};

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
	if (o->cafile && !(c->cafile = strdup(o->cafile)))
		goto fail;
	c->connect_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
	c->total_ms = o->timeout_ms ? o->timeout_ms : 20000;
	c->max_response = o->max_response ? o->max_response : 16 << 20;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
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

static void handle_put(struct http_client *c, CURL *h)
{
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

int http_request(struct http_client *c, const char *method, const char *path,
		 const char *ctype, const char *body, size_t body_len,
		 const struct secret *bearer, bool secret_reply,
		 struct http_response *resp)
{
	struct sink sink = { .secret = secret_reply };
	struct curl_slist *hdrs = NULL, *tail;
	char url[2048], ctbuf[128];
	CURLcode rc;
	long status = 0;
	CURL *h;
	int ret = 0;

	sink.max = secret_reply ? SECRET_REPLY_MAX : c->max_response;
	if ((size_t)snprintf(url, sizeof(url), "%s%s", c->base, path) >=
	    sizeof(url))
		return -ENAMETOOLONG;
	h = handle_get(c);
	if (!h)
		return -ENOMEM;
	if (bearer) {
		hdrs = auth_header(bearer);
		if (!hdrs) {
			ret = -ENOMEM;
			goto out;
		}
	}
	if (ctype) {
		snprintf(ctbuf, sizeof(ctbuf), "Content-Type: %s", ctype);
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
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->total_ms);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->cafile)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->cafile);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "zenmlfs/" ZENMLFS_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)sink.max);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)body_len);
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
	handle_put(c, h);
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
