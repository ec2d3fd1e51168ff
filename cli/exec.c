// SPDX-License-Identifier: MIT
#define _GNU_SOURCE /* pipe2, accept4 */
/*
 * "zenmlfs exec": a channel local to COMMAND that puts the mount's current
 * token on each request to the ZenML server.
 *
 * The ZenML SDK cannot follow a token file: a bare token
 * (ZENML_STORE_API_TOKEN) never expires in its eyes, and on a 401 it logs
 * in again only with an API key or a password.  So exec listens on a
 * loopback port, gives COMMAND ZENML_STORE_URL=http://127.0.0.2:PORT and
 * ZENML_STORE_API_TOKEN=<a random value made for this run>, and forwards
 * each request whose "Authorization: Bearer" is that value to the server,
 * with the value replaced by the token read from the mount for that very
 * request.  A request with another Authorization is refused (401); one
 * with none goes to the server as it came, with no token (the SDK asks
 * for the server's public info before it authenticates).  The value is
 * worth nothing outside this run: the server never sees it, and the port
 * is gone when exec ends.  127.0.0.2 and not
 * 127.0.0.1 or localhost: the SDK takes those for a local server of its
 * own, which changes what it does on a 401 (it tries to log in again and
 * hides the server's message) and, in a container, the host it connects
 * to.
 *
 * One thread per client connection (at most CONN_MAX), each with its own
 * libcurl handle, so both sides keep their connections alive.  Bodies are
 * streamed both ways through fixed buffers: memory does not grow with a
 * reply.  The token lives in guarded memory for the time of one request.
 *
 * Without COMMAND, with --listen and --env-file, exec serves other
 * processes (a sidecar) until SIGTERM or SIGINT.
 */
#include "cli/exec.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "backend/http.h"
#include "backend/secret.h"
#include "backend/util.h"
#include "cli/status.h"

#include "backend/banned.h" /* always the last include */

#define EXIT_EXEC_FAILED 125
#define EXIT_CANNOT_RUN 126
#define EXIT_NOT_FOUND 127

#define CONN_MAX 64
#define HEAD_MAX 16384 /* a request's or a reply's header block */
#define IO_BUF 16384
#define IDLE_MS (10 * 60 * 1000) /* a kept-alive client connection */
#define WAIT_DEFAULT_S 10
#define RETRY_MS 100
#define VALUE_BYTES 32
#define DEFAULT_ADDR "127.0.0.2"
#define THREAD_STACK (256 * 1024)

struct exec_opts {
	char mount[PATH_MAX];
	char url[2048];
	const char *cafile; /* may be NULL */
	const char *listen; /* "ADDR:PORT", may be NULL */
	const char *env_file; /* may be NULL */
	int wait_s;
	char **cmd; /* NULL: serve until a signal */
};

/* What every connection thread shares; read-only once serving starts. */
struct proxy {
	char token_path[PATH_MAX + 8];
	const char *mount;
	const char *url; /* no trailing slash */
	const char *cafile;
	long long wait_ms;
	struct secret *value; /* the run's value, "Bearer" compares to it */
	int lfd;
	pthread_mutex_t lock;
	pthread_cond_t freed;
	int conns; /* under lock */
};

/* One client connection: its buffered reader and the reply in flight. */
struct conn {
	struct proxy *px;
	int fd;
	CURL *h;
	char in[IO_BUF]; /* bytes read from the client, [off, len) unread */
	size_t off, len;
	/* the request */
	char method[16];
	char target[8192];
	bool keep_alive;
	bool chunked_in; /* Transfer-Encoding: chunked */
	long long clen; /* Content-Length, -1 when none */
	long long left; /* body bytes left in this chunk or in the body */
	bool body_done; /* the whole body was read */
	bool has_auth; /* an Authorization header came */
	bool authorized; /* ... and it was "Bearer <the run's value>" */
	bool has_ctype, has_accept;
	/* the reply */
	char head[HEAD_MAX];
	size_t head_len;
	long status;
	bool head_sent; /* the client got our status line */
	bool chunked_out;
	bool no_body;
	bool up_clen, up_chunked;
	bool broken; /* the client is gone, or framing went wrong */
};

/* ---- the client's side: reading and writing ---- */

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* More bytes from the client into c->in; 0, -ECONNRESET at EOF, -errno. */
static int fill(struct conn *c, int timeout_ms)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	ssize_t n;
	int ret;

	if (c->off == c->len) {
		c->off = 0;
		c->len = 0;
	} else if (c->off && c->len == sizeof(c->in)) {
		memmove(c->in, c->in + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len == sizeof(c->in))
		return -ENOBUFS;
	for (;;) {
		ret = poll(&pfd, 1, timeout_ms);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0)
			return -errno;
		if (ret == 0)
			return -ETIMEDOUT;
		n = recv(c->fd, c->in + c->len, sizeof(c->in) - c->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		c->len += (size_t)n;
		return 0;
	}
}

/* One line (CRLF or LF, not included) into out; at most size - 1 bytes. */
static int read_line(struct conn *c, char *out, size_t size, int timeout_ms)
{
	char *nl;
	size_t n;
	int ret;

	for (;;) {
		nl = memchr(c->in + c->off, '\n', c->len - c->off);
		if (nl)
			break;
		if (c->len - c->off >= size)
			return -E2BIG;
		ret = fill(c, timeout_ms);
		if (ret)
			return ret;
	}
	n = (size_t)(nl - (c->in + c->off));
	if (n >= size)
		return -E2BIG;
	memcpy(out, c->in + c->off, n);
	if (n && out[n - 1] == '\r')
		n--;
	out[n] = '\0';
	c->off += (size_t)(nl - (c->in + c->off)) + 1;
	return 0;
}

static bool token_char_ok(const char *s)
{
	for (; *s; s++)
		if (!isgraph((unsigned char)*s))
			return false;
	return true;
}

/* ---- replies made here ---- */

/*
 * An error reply as the ZenML server writes one ({"detail": [exception
 * class, message]}), so the SDK raises that exception with our message.
 * The connection is closed after it.
 */
static void reply_error(struct conn *c, int status, const char *exc,
			const char *msg)
{
	char head[256];
	char *body;
	json_t *j;
	int n;

	c->keep_alive = false;
	if (c->head_sent)
		return;
	j = json_pack("{s:[s,s]}", "detail", exc, msg);
	body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!body)
		return;
	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		     status,
		     status == 401 ? "Unauthorized" :
		     status == 400 ? "Bad Request" :
				     "Bad Gateway",
		     strlen(body));
	if (!send_all(c->fd, head, (size_t)n))
		send_all(c->fd, body, strlen(body));
	c->head_sent = true;
	free(body);
}

/* ---- the token ---- */

static bool transient(int err)
{
	return err == -ENOENT || err == -ENOTCONN || err == -EKEYEXPIRED ||
	       err == -EIO || err == -ENODATA;
}

/*
 * The mount's current token, read now, or the errno of the last try: a
 * daemon restarting (ENOENT, ENOTCONN) or renewing (EKEYEXPIRED) is waited
 * for up to px->wait_ms; a revoked or rejected credential fails at once.
 */
static int read_token(const struct proxy *px, struct secret **out)
{
	long long until = mono_ms() + px->wait_ms;
	int fd, ret;

	for (;;) {
		fd = open(px->token_path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
		} else {
			ret = secret_read_fd(fd, out);
			close(fd);
		}
		if (!ret || !transient(ret) || mono_ms() >= until)
			return ret;
		poll(NULL, 0, RETRY_MS);
	}
}

/* Why there is no token, for a human: the cause and what to do. */
static void token_error(const struct proxy *px, int err, char *buf, size_t size)
{
	struct stat st;
	const char *m = px->mount;

	switch (-err) {
	case EKEYREVOKED:
		snprintf(buf, size,
			 "zenmlfs exec: the zenmlfs daemon's credential was "
			 "revoked (its API key, service account or device was "
			 "deactivated, locked or deleted): '%s/token' says "
			 "\"%s\"; an administrator must give the daemon a new "
			 "key",
			 m, strerror(-err));
		break;
	case EKEYREJECTED:
	case ENOKEY:
		snprintf(buf, size,
			 "zenmlfs exec: the ZenML server refuses the zenmlfs "
			 "daemon's credential: '%s/token' says \"%s\"; an "
			 "administrator must give the daemon a new key",
			 m, strerror(-err));
		break;
	case EKEYEXPIRED:
		snprintf(
			buf, size,
			"zenmlfs exec: the token at '%s/token' has expired "
			"and the zenmlfs daemon cannot renew it (is the server "
			"reachable? see '%s/status')",
			m, m);
		break;
	case ENOENT:
	case ENOTCONN:
		if (stat(m, &st))
			snprintf(buf, size,
				 "zenmlfs exec: the zenmlfs mount '%s' is "
				 "missing: %s",
				 m, strerror(errno));
		else
			snprintf(buf, size,
				 "zenmlfs exec: no zenmlfs daemon serves '%s' "
				 "(it is not running, or did not come back "
				 "within %lld s)",
				 m, px->wait_ms / 1000);
		break;
	default:
		snprintf(buf, size, "zenmlfs exec: cannot read '%s/token': %s",
			 m, strerror(-err));
	}
}

/* ---- the request ---- */

static bool hop_by_hop(const char *name)
{
	static const char *const hop[] = { "connection",
					   "keep-alive",
					   "proxy-connection",
					   "proxy-authorization",
					   "te",
					   "trailer",
					   "upgrade",
					   "transfer-encoding",
					   "content-length",
					   "host",
					   "expect",
					   "authorization" };

	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (!strcasecmp(name, hop[i]))
			return true;
	return false;
}

/* Does "Bearer X" carry the run's value?  Constant time in X. */
static bool is_value(const struct proxy *px, const char *v)
{
	if (strncasecmp(v, "Bearer ", 7))
		return false;
	v += 7;
	while (*v == ' ')
		v++;
	return strlen(v) == px->value->len &&
	       !sodium_memcmp(v, px->value->buf, px->value->len);
}

static bool has_token(const char *list, const char *tok)
{
	size_t n = strlen(tok);

	for (const char *p = strcasestr(list, tok); p;
	     p = strcasestr(p + n, tok))
		if ((p == list || strchr(" ,\t", p[-1])) &&
		    (!p[n] || strchr(" ,\t", p[n])))
			return true;
	return false;
}

/*
 * The request line and headers: what we forward into *hdrs.  0, or
 * -ECONNRESET when the client closed between requests, -EBADMSG for a
 * request we cannot serve (answered here), other -errno.
 */
static int read_head(struct conn *c, struct curl_slist **hdrs)
{
	char line[HEAD_MAX], ver[16];
	struct curl_slist *l = NULL, *t;
	size_t total = 0;
	bool http11;
	int ret;

	do {
		ret = read_line(c, line, sizeof(line), IDLE_MS);
		if (ret)
			return ret == -ETIMEDOUT ? -ECONNRESET : ret;
	} while (!line[0]); /* RFC 9112 2.2: ignore CRLFs before a request */
	if (sscanf(line, "%15s %8191s %15s", c->method, c->target, ver) != 3 ||
	    strncmp(ver, "HTTP/1.", 7) || c->target[0] != '/' ||
	    !token_char_ok(c->method)) {
		reply_error(c, 400, "ValueError",
			    "zenmlfs exec: not an HTTP/1.1 request");
		return -EBADMSG;
	}
	http11 = strcmp(ver, "HTTP/1.0") != 0;
	c->keep_alive = http11;
	c->clen = -1;
	c->chunked_in = false;
	c->has_auth = false;
	c->authorized = false;
	c->has_ctype = false;
	c->has_accept = false;
	for (;;) {
		char *colon, *v;

		ret = read_line(c, line, sizeof(line), IDLE_MS);
		if (ret)
			goto out;
		if (!line[0])
			break;
		total += strlen(line);
		colon = strchr(line, ':');
		if (total > HEAD_MAX || !colon || colon == line) {
			ret = -EBADMSG;
			goto out;
		}
		*colon = '\0';
		for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
			;
		for (char *e = v + strlen(v); e > v && e[-1] == ' ';)
			*--e = '\0';
		if (!strcasecmp(line, "authorization")) {
			c->has_auth = true;
			c->authorized = is_value(c->px, v);
		} else if (!strcasecmp(line, "content-length")) {
			char *end;

			errno = 0;
			c->clen = strtoll(v, &end, 10);
			if (errno || *end || end == v || c->clen < 0) {
				ret = -EBADMSG;
				goto out;
			}
		} else if (!strcasecmp(line, "transfer-encoding")) {
			c->chunked_in = has_token(v, "chunked");
			if (!c->chunked_in) {
				ret = -EBADMSG;
				goto out;
			}
		} else if (!strcasecmp(line, "connection")) {
			if (has_token(v, "close"))
				c->keep_alive = false;
			else if (has_token(v, "keep-alive"))
				c->keep_alive = true;
		}
		if (hop_by_hop(line))
			continue;
		if (!strcasecmp(line, "content-type"))
			c->has_ctype = true;
		if (!strcasecmp(line, "accept"))
			c->has_accept = true;
		*colon = ':';
		t = curl_slist_append(l, line);
		if (!t) {
			ret = -ENOMEM;
			goto out;
		}
		l = t;
	}
	if (c->chunked_in)
		c->clen = -1;
	c->left = c->chunked_in ? 0 : (c->clen > 0 ? c->clen : 0);
	c->body_done = !c->chunked_in && c->left == 0;
	*hdrs = l;
	return 0;
out:
	curl_slist_free_all(l);
	if (ret == -EBADMSG)
		reply_error(c, 400, "ValueError",
			    "zenmlfs exec: a malformed request header");
	return ret;
}

/* The next chunk's size into c->left; 0 and body_done after the last. */
static int next_chunk(struct conn *c)
{
	char line[256], *end;
	int ret;

	ret = read_line(c, line, sizeof(line), IDLE_MS);
	if (ret)
		return ret;
	errno = 0;
	c->left = strtoll(line, &end, 16);
	if (errno || end == line || c->left < 0 ||
	    (*end && *end != ';' && *end != ' '))
		return -EBADMSG;
	if (c->left)
		return 0;
	do { /* the trailer section, dropped */
		ret = read_line(c, line, sizeof(line), IDLE_MS);
		if (ret)
			return ret;
	} while (line[0]);
	c->body_done = true;
	return 0;
}

/* libcurl asks for the request body: the client's, chunks unwrapped. */
static size_t body_read(char *buf, size_t size, size_t nitems, void *arg)
{
	struct conn *c = arg;
	size_t max = size * nitems, n;
	char crlf[8];

	while (!c->body_done && c->left == 0) {
		if (next_chunk(c))
			goto fail;
	}
	if (c->body_done)
		return 0;
	if (c->off == c->len && fill(c, IDLE_MS))
		goto fail;
	n = c->len - c->off;
	if ((long long)n > c->left)
		n = (size_t)c->left;
	if (n > max)
		n = max;
	memcpy(buf, c->in + c->off, n);
	c->off += n;
	c->left -= (long long)n;
	if (c->left == 0) {
		if (!c->chunked_in)
			c->body_done = true;
		else if (read_line(c, crlf, sizeof(crlf), IDLE_MS) || crlf[0])
			goto fail;
	}
	return n;
fail:
	c->broken = true;
	return CURL_READFUNC_ABORT;
}

/* ---- the reply ---- */

static void head_add(struct conn *c, const char *s, size_t n)
{
	if (c->head_len + n > sizeof(c->head)) {
		c->broken = true;
		return;
	}
	memcpy(c->head + c->head_len, s, n);
	c->head_len += n;
}

/* The upstream reply's header block is complete: send ours. */
static int head_flush(struct conn *c)
{
	const char *te = "Transfer-Encoding: chunked\r\n";
	const char *conn = c->keep_alive ? "Connection: keep-alive\r\n\r\n" :
					   "Connection: close\r\n\r\n";

	c->no_body = !strcmp(c->method, "HEAD") || c->status == 204 ||
		     c->status == 304;
	if (c->up_chunked)
		c->up_clen = false; /* both: the chunks win (RFC 9112 6.3) */
	c->chunked_out = !c->no_body && !c->up_clen;
	if (c->chunked_out)
		head_add(c, te, strlen(te));
	head_add(c, conn, strlen(conn));
	if (c->broken || send_all(c->fd, c->head, c->head_len)) {
		c->broken = true;
		return -EIO;
	}
	c->head_sent = true;
	return 0;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *arg)
{
	struct conn *c = arg;
	size_t n = size * nitems, len = n;
	char name[64];
	const char *colon;

	if (c->head_sent) /* trailers of a chunked reply: dropped */
		return n;
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
		const char *sp = memchr(buf, ' ', len);
		char line[256];
		int k;

		c->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		c->head_len = 0;
		c->up_clen = false;
		c->up_chunked = false;
		k = snprintf(line, sizeof(line), "HTTP/1.1 %.*s\r\n",
			     sp ? (int)(len - (size_t)(sp + 1 - buf)) : 0,
			     sp ? sp + 1 : "");
		head_add(c, line, (size_t)k < sizeof(line) ? (size_t)k : 0);
		return c->broken ? 0 : n;
	}
	if (len == 0) {
		if (c->status >= 100 && c->status < 200)
			return n; /* an interim reply; the final one follows */
		return head_flush(c) ? 0 : n;
	}
	colon = memchr(buf, ':', len);
	if (!colon || (size_t)(colon - buf) >= sizeof(name))
		return n;
	memcpy(name, buf, (size_t)(colon - buf));
	name[colon - buf] = '\0';
	if (!strcasecmp(name, "content-length")) {
		c->up_clen = true;
	} else if (!strcasecmp(name, "transfer-encoding")) {
		c->up_chunked = true;
		return n;
	} else if (!strcasecmp(name, "connection") ||
		   !strcasecmp(name, "keep-alive") ||
		   !strcasecmp(name, "upgrade") ||
		   !strcasecmp(name, "trailer")) {
		return n;
	}
	head_add(c, buf, len);
	head_add(c, "\r\n", 2);
	return c->broken ? 0 : n;
}

/* libcurl hands us reply bytes: straight on to the client. */
static size_t on_body(char *buf, size_t size, size_t nitems, void *arg)
{
	struct conn *c = arg;
	size_t n = size * nitems;
	char pre[24];
	struct iovec iov[3];
	int k, cnt = 0;
	ssize_t w;
	size_t total = 0;

	if (!c->head_sent || c->no_body)
		return c->head_sent ? n : 0;
	if (!n)
		return 0;
	if (c->chunked_out) {
		k = snprintf(pre, sizeof(pre), "%zx\r\n", n);
		iov[cnt++] = (struct iovec){ pre, (size_t)k };
	}
	iov[cnt++] = (struct iovec){ buf, n };
	if (c->chunked_out)
		iov[cnt++] = (struct iovec){ "\r\n", 2 };
	for (int i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	while (total) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = cnt };

		w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			c->broken = true;
			return 0;
		}
		total -= (size_t)w;
		while (cnt && (size_t)w >= iov[0].iov_len) {
			w -= (ssize_t)iov[0].iov_len;
			memmove(iov, iov + 1, (size_t)--cnt * sizeof(iov[0]));
		}
		if (cnt) {
			iov[0].iov_base = (char *)iov[0].iov_base + w;
			iov[0].iov_len -= (size_t)w;
		}
	}
	return n;
}

static struct curl_slist *slist_add(struct curl_slist *l, const char *s,
				    bool *ok)
{
	struct curl_slist *t = curl_slist_append(l, s);

	if (!t)
		*ok = false;
	return t ? t : l;
}

/* "Authorization: Bearer <token>", built in guarded memory; curl copies. */
static struct curl_slist *add_bearer(struct curl_slist *l,
				     const struct secret *tok, bool *ok)
{
	static const char pfx[] = "Authorization: Bearer ";
	char *h = sodium_malloc(sizeof(pfx) + tok->len);

	if (!h) {
		*ok = false;
		return l;
	}
	memcpy(h, pfx, sizeof(pfx) - 1);
	memcpy(h + sizeof(pfx) - 1, tok->buf, tok->len + 1);
	l = slist_add(l, h, ok);
	sodium_free(h);
	return l;
}

static void slist_wipe_free(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p; p = p->next)
		sodium_memzero(p->data, strlen(p->data));
	curl_slist_free_all(l);
}

/* Skip what the upstream did not read of the request body. */
static void drain_body(struct conn *c)
{
	char sink[4096];

	while (!c->body_done && !c->broken)
		if (body_read(sink, 1, sizeof(sink), c) == CURL_READFUNC_ABORT)
			break;
}

/* One request, forwarded.  0 when the connection can serve another. */
static int serve_one(struct conn *c)
{
	struct proxy *px = c->px;
	struct curl_slist *hdrs = NULL;
	struct secret *tok = NULL;
	char url[sizeof(c->target) + 2048], why[PATH_MAX + 512];
	bool ok = true, body;
	CURLcode rc;
	int ret;

	ret = read_head(c, &hdrs);
	if (ret)
		return ret;
	c->head_sent = false;
	c->head_len = 0;
	c->status = 0;
	c->broken = false;
	if (c->has_auth && !c->authorized) {
		/* Another process, or a credential of its own: refused. */
		drain_body(c);
		reply_error(c, 401, "CredentialsNotValid",
			    "zenmlfs exec: this channel needs the "
			    "ZENML_STORE_API_TOKEN that zenmlfs exec gave "
			    "its command");
		ret = -EACCES;
		goto out;
	}
	/* No Authorization at all (the SDK asks the server's public info
	 * before it authenticates): forwarded as it came, with no token, so
	 * the server answers as it would answer anyone. */
	if (c->authorized) {
		ret = read_token(px, &tok);
		if (ret) {
			drain_body(c);
			token_error(px, ret, why, sizeof(why));
			reply_error(c, 401, "CredentialsNotValid", why);
			goto out;
		}
		hdrs = add_bearer(hdrs, tok, &ok);
		secret_unref(tok);
	}
	snprintf(url, sizeof(url), "%s%s", px->url, c->target);
	body = c->chunked_in || c->clen > 0;
	hdrs = slist_add(hdrs, "Expect:", &ok);
	if (!c->has_accept)
		hdrs = slist_add(hdrs, "Accept:", &ok);
	if (body && !c->has_ctype)
		hdrs = slist_add(hdrs, "Content-Type:", &ok);
	if (c->chunked_in)
		hdrs = slist_add(hdrs, "Transfer-Encoding: chunked", &ok);
	if (!ok) {
		ret = -ENOMEM;
		goto out;
	}

	curl_easy_reset(c->h);
	curl_easy_setopt(c->h, CURLOPT_URL, url);
	curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c->h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c->h, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	/* No total timeout: a streamed reply takes what it takes; a server
	 * that stops sending is dropped after a minute without a byte. */
	curl_easy_setopt(c->h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c->h, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (px->cafile)
		curl_easy_setopt(c->h, CURLOPT_CAINFO, px->cafile);
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c->h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c->h, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(c->h, CURLOPT_BUFFERSIZE, (long)IO_BUF);
	if (!strcmp(c->method, "HEAD")) {
		curl_easy_setopt(c->h, CURLOPT_NOBODY, 1L);
	} else if (body) {
		curl_easy_setopt(c->h, CURLOPT_POST, 1L);
		curl_easy_setopt(c->h, CURLOPT_READFUNCTION, body_read);
		curl_easy_setopt(c->h, CURLOPT_READDATA, c);
		curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)c->clen);
	}
	if (strcmp(c->method, "HEAD") && (body || strcmp(c->method, "GET")))
		curl_easy_setopt(c->h, CURLOPT_CUSTOMREQUEST, c->method);
	rc = curl_easy_perform(c->h);
	if (rc == CURLE_OK && c->chunked_out && !c->broken &&
	    send_all(c->fd, "0\r\n\r\n", 5))
		c->broken = true;
	if (rc != CURLE_OK && !c->head_sent && !c->broken) {
		snprintf(why, sizeof(why),
			 "zenmlfs exec: cannot reach the ZenML server at '%s': "
			 "%s",
			 px->url, curl_easy_strerror(rc));
		reply_error(c, 502, "RuntimeError", why);
	}
	if (rc != CURLE_OK || c->broken)
		c->keep_alive = false;
	if (c->keep_alive)
		drain_body(c);
	ret = c->keep_alive && c->body_done && !c->broken ? 0 : -ECONNRESET;
out:
	/* The header list held the token: wipe it now, not when reused. */
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, NULL);
	slist_wipe_free(hdrs);
	return ret;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct proxy *px = c->px;
	int one = 1;

	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->h = curl_easy_init();
	if (c->h)
		while (!serve_one(c))
			;
	if (c->h)
		curl_easy_cleanup(c->h);
	close(c->fd);
	sodium_memzero(c->in, sizeof(c->in));
	free(c);
	pthread_mutex_lock(&px->lock);
	px->conns--;
	pthread_cond_signal(&px->freed);
	pthread_mutex_unlock(&px->lock);
	return NULL;
}

/* Accept connections until the process ends, CONN_MAX at a time. */
static void *accept_main(void *arg)
{
	struct proxy *px = arg;
	pthread_attr_t attr;
	pthread_t t;
	struct conn *c;
	int fd;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, THREAD_STACK);
	for (;;) {
		pthread_mutex_lock(&px->lock);
		while (px->conns >= CONN_MAX)
			pthread_cond_wait(&px->freed, &px->lock);
		pthread_mutex_unlock(&px->lock);
		fd = accept4(px->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			poll(NULL, 0, RETRY_MS); /* EMFILE and the like */
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->px = px;
		c->fd = fd;
		pthread_mutex_lock(&px->lock);
		px->conns++;
		pthread_mutex_unlock(&px->lock);
		if (pthread_create(&t, &attr, conn_main, c)) {
			close(fd);
			free(c);
			pthread_mutex_lock(&px->lock);
			px->conns--;
			pthread_mutex_unlock(&px->lock);
		}
	}
	return NULL;
}

/* ---- setting up ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: zenmlfs exec [--mount DIR] [--url URL] [--cafile FILE] "
		"[--wait SECONDS]\n"
		"                    [--listen ADDR:PORT] [--] COMMAND "
		"[ARG...]\n"
		"       zenmlfs exec [--mount DIR] ... --listen ADDR:PORT "
		"--env-file FILE\n"
		"Runs COMMAND with ZENML_STORE_URL and ZENML_STORE_API_TOKEN "
		"set so that the\nZenML SDK and CLI use the mount's current "
		"token on every request.  Without\nCOMMAND, serves until "
		"SIGTERM and writes the variables to FILE (a sidecar).\n");
}

/*
 * The mount's "server:" line from its status file, into o->url, waiting
 * up to wait_s for a daemon that is starting.
 */
static int url_from_status(struct exec_opts *o)
{
	char path[PATH_MAX + 16], buf[4096], *s, *e;
	long long until = mono_ms() + o->wait_s * 1000LL;
	ssize_t n;
	int fd, err;

	snprintf(path, sizeof(path), "%s/status", o->mount);
	for (;;) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			break;
		err = errno;
		if ((err != ENOENT && err != ENOTCONN) || mono_ms() >= until) {
			fprintf(stderr,
				"zenmlfs: exec: cannot read '%s': %s (give "
				"the server with --url)\n",
				path, strerror(err));
			return -err;
		}
		poll(NULL, 0, RETRY_MS);
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	s = strstr(buf, "server: ");
	if (!s || (s != buf && s[-1] != '\n')) {
		fprintf(stderr, "zenmlfs: exec: '%s' names no server\n", path);
		return -ENOENT;
	}
	s += 8;
	e = s + strcspn(s, "\n");
	if ((size_t)(e - s) >= sizeof(o->url)) {
		fprintf(stderr, "zenmlfs: exec: server URL too long\n");
		return -ENAMETOOLONG;
	}
	memcpy(o->url, s, (size_t)(e - s));
	o->url[e - s] = '\0';
	return 0;
}

static int parse(int argc, char **argv, struct exec_opts *o)
{
	static const struct option longs[] = {
		{ "mount", required_argument, NULL, 'm' },
		{ "url", required_argument, NULL, 'u' },
		{ "cafile", required_argument, NULL, 'c' },
		{ "wait", required_argument, NULL, 'w' },
		{ "listen", required_argument, NULL, 'l' },
		{ "env-file", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *mount = NULL;
	char why[256], *end;
	int opt;

	o->wait_s = WAIT_DEFAULT_S;
	/* "+": stop at COMMAND, whose options are its own. */
	for (;;) {
		opt = getopt_long(argc, argv, "+h", longs, NULL);
		if (opt == -1)
			break;
		switch (opt) {
		case 'm':
			mount = optarg;
			break;
		case 'u':
			if (strlen(optarg) >= sizeof(o->url))
				goto bad;
			snprintf(o->url, sizeof(o->url), "%s", optarg);
			break;
		case 'c':
			o->cafile = optarg;
			break;
		case 'w':
			errno = 0;
			o->wait_s = (int)strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || o->wait_s < 0 ||
			    o->wait_s > 3600)
				goto bad;
			break;
		case 'l':
			o->listen = optarg;
			break;
		case 'e':
			o->env_file = optarg;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			goto bad;
		}
	}
	if (optind < argc)
		o->cmd = argv + optind;
	if (!o->cmd && (!o->listen || !o->env_file)) {
		fprintf(stderr, "zenmlfs: exec: no COMMAND (a sidecar needs "
				"--listen and --env-file)\n");
		goto try;
	}
	if (mount) {
		if (!realpath(mount, o->mount) &&
		    snprintf(o->mount, sizeof(o->mount), "%s", mount) >=
			    (int)sizeof(o->mount))
			goto bad;
	} else if (status_only_mount(o->mount, sizeof(o->mount), why,
				     sizeof(why))) {
		fprintf(stderr, "zenmlfs: exec: %s (give it with --mount)\n",
			why);
		return -EINVAL;
	}
	return 0;
bad:
	fprintf(stderr, "zenmlfs: exec: bad arguments\n");
	try : fprintf(stderr, "Try 'zenmlfs exec --help'.\n")
		;
	return -EINVAL;
}

/* A listening socket at "ADDR:PORT" (IPv4; default 127.0.0.2:0). */
static int listen_at(const char *spec, struct sockaddr_in *sa)
{
	char host[64] = DEFAULT_ADDR;
	socklen_t len = sizeof(*sa);
	const char *colon;
	long port = 0;
	char *end;
	int fd, one = 1;

	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	if (spec) {
		colon = strrchr(spec, ':');
		if (!colon || (size_t)(colon - spec) >= sizeof(host))
			return -EINVAL;
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
		port = strtol(colon + 1, &end, 10);
		if (*end || end == colon + 1 || port < 0 || port > 65535)
			return -EINVAL;
	}
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -EINVAL;
	sa->sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)sa, sizeof(*sa)) || listen(fd, 128) ||
	    getsockname(fd, (struct sockaddr *)sa, &len)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* The run's value: 32 random bytes, URL-safe base64. */
static struct secret *new_value(void)
{
	static const char pfx[] = "zenmlfs-exec.";
	unsigned char raw[VALUE_BYTES];
	size_t b64 = sodium_base64_ENCODED_LEN(
		VALUE_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	struct secret *s;
	char *buf;

	buf = sodium_malloc(sizeof(pfx) + b64);
	if (!buf)
		return NULL;
	randombytes_buf(raw, sizeof(raw));
	memcpy(buf, pfx, sizeof(pfx) - 1);
	sodium_bin2base64(buf + sizeof(pfx) - 1, b64, raw, sizeof(raw),
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	sodium_memzero(raw, sizeof(raw));
	s = secret_new(buf, strlen(buf));
	sodium_free(buf);
	return s;
}

/* ZENML_STORE_URL=http://ADDR:PORT, and the URL alone into url. */
static void store_url(const struct sockaddr_in *sa, char *url, size_t size)
{
	char ip[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof(ip));
	snprintf(url, size, "http://%s:%u", ip, ntohs(sa->sin_port));
}

/* The sidecar's variables, for a shell's ". FILE"; 0600, made anew. */
static int write_env_file(const char *path, const char *url,
			  const struct secret *value)
{
	static const char tail[] = "\nDISABLE_CREDENTIALS_DISK_CACHING=true\n";
	char head[256];
	int fd, n, ret = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  0600);
	if (fd < 0)
		return -errno;
	n = snprintf(head, sizeof(head),
		     "ZENML_STORE_URL=%s\nZENML_STORE_API_TOKEN=", url);
	if (write(fd, head, (size_t)n) != n ||
	    write(fd, value->buf, value->len) != (ssize_t)value->len ||
	    write(fd, tail, sizeof(tail) - 1) != (ssize_t)sizeof(tail) - 1)
		ret = -EIO;
	if (close(fd) && !ret)
		ret = -errno;
	if (ret)
		unlink(path);
	return ret;
}

/* In the child: the variables, the signals as they were, COMMAND. */
static void __attribute__((noreturn))
run_command(char **cmd, const char *url, const struct secret *value,
	    const sigset_t *old, int errfd)
{
	int err;

	if (setenv("ZENML_STORE_URL", url, 1) ||
	    setenv("ZENML_STORE_API_TOKEN", value->buf, 1) ||
	    setenv("DISABLE_CREDENTIALS_DISK_CACHING", "true", 1))
		_exit(EXIT_EXEC_FAILED);
	sigprocmask(SIG_SETMASK, old, NULL);
	execvp(cmd[0], cmd);
	err = errno;
	if (write(errfd, &err, sizeof(err)) < 0)
		_exit(EXIT_EXEC_FAILED);
	_exit(err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN);
}

/*
 * Wait for COMMAND (pid > 0) or for a signal to stop (pid == 0), passing
 * on signals that someone sent us; reaps every child, as an init must.
 * Returns COMMAND's wait status, or the stopping signal's number as an
 * exit status 128 + sig.
 */
static int supervise(pid_t pid, const sigset_t *set)
{
	siginfo_t si;
	int st, sig;
	pid_t p;

	for (;;) {
		sig = sigwaitinfo(set, &si);
		if (sig < 0)
			continue;
		if (sig == SIGCHLD) {
			for (;;) {
				p = waitpid(-1, &st, WNOHANG);
				if (p <= 0)
					break;
				if (p == pid)
					return st;
			}
			continue;
		}
		if (!pid)
			return (128 + sig) << 8;
		/* A terminal's signal reaches COMMAND's process group by
		 * itself: pass on only those sent by a process. */
		if (si.si_code <= 0)
			kill(pid, sig);
	}
}

static const int forwarded[] = { SIGHUP,  SIGINT,  SIGQUIT,  SIGTERM,
				 SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM };

int exec_main(int argc, char **argv)
{
	static struct exec_opts o;
	static struct proxy px;
	struct sockaddr_in sa;
	sigset_t set, old;
	char url[64];
	int st = 0, err, errfd[2], code = EXIT_EXEC_FAILED;
	pthread_t acceptor;
	pid_t pid = 0;
	ssize_t n;

	/* No core dumps, no ptrace by the same uid; COMMAND gets neither
	 * setting: execve resets the first, and the second is not touched. */
	prctl(PR_SET_DUMPABLE, 0);
	/* The credentials main() would take are no business of ours, and
	 * must not reach COMMAND. */
	unsetenv("ZENML_STORE_API_KEY");
	unsetenv("ZENML_STORE_USERNAME");
	unsetenv("ZENML_STORE_PASSWORD");
	if (sodium_init() < 0 || http_global_init()) {
		fprintf(stderr, "zenmlfs: exec: cannot initialise\n");
		return EXIT_EXEC_FAILED;
	}
	err = parse(argc, argv, &o);
	if (err)
		return err > 0 ? 0 : EXIT_EXEC_FAILED;
	if (!o.url[0] && url_from_status(&o))
		return EXIT_EXEC_FAILED;
	px.url = o.url;
	for (size_t l = strlen(o.url); l && o.url[l - 1] == '/';)
		o.url[--l] = '\0';
	px.mount = o.mount;
	px.cafile = o.cafile;
	px.wait_ms = o.wait_s * 1000LL;
	snprintf(px.token_path, sizeof(px.token_path), "%s/token", o.mount);
	pthread_mutex_init(&px.lock, NULL);
	pthread_cond_init(&px.freed, NULL);
	px.value = new_value();
	if (!px.value) {
		fprintf(stderr, "zenmlfs: exec: out of memory\n");
		return EXIT_EXEC_FAILED;
	}
	px.lfd = listen_at(o.listen, &sa);
	if (px.lfd < 0) {
		fprintf(stderr, "zenmlfs: exec: cannot listen on '%s': %s\n",
			o.listen ? o.listen : DEFAULT_ADDR ":0",
			strerror(-px.lfd));
		return EXIT_EXEC_FAILED;
	}
	store_url(&sa, url, sizeof(url));
	if (o.env_file && !o.cmd) {
		err = write_env_file(o.env_file, url, px.value);
		if (err) {
			fprintf(stderr,
				"zenmlfs: exec: cannot write '%s': %s\n",
				o.env_file, strerror(-err));
			return EXIT_EXEC_FAILED;
		}
	}

	/* Every thread blocks the signals; the main thread waits for them. */
	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(&set, forwarded[i]);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);

	/* COMMAND first, while this process has one thread (the child may
	 * call setenv); its first request waits in the listen queue. */
	if (o.cmd) {
		if (pipe2(errfd, O_CLOEXEC)) {
			fprintf(stderr, "zenmlfs: exec: cannot make a pipe\n");
			return EXIT_EXEC_FAILED;
		}
		fflush(NULL);
		pid = fork();
		if (pid < 0) {
			fprintf(stderr, "zenmlfs: exec: cannot fork: %s\n",
				strerror(errno));
			return EXIT_EXEC_FAILED;
		}
		if (pid == 0) {
			close(errfd[0]);
			close(px.lfd);
			run_command(o.cmd, url, px.value, &old, errfd[1]);
		}
		close(errfd[1]);
		do
			n = read(errfd[0], &err, sizeof(err));
		while (n < 0 && errno == EINTR);
		close(errfd[0]);
		if (n == sizeof(err)) {
			fprintf(stderr, "zenmlfs: exec: cannot run '%s': %s\n",
				o.cmd[0], strerror(err));
			waitpid(pid, &st, 0);
			return err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
		}
	}
	if (pthread_create(&acceptor, NULL, accept_main, &px)) {
		fprintf(stderr, "zenmlfs: exec: cannot start a thread\n");
		if (pid)
			kill(pid, SIGTERM);
		goto out;
	}
	st = supervise(pid, &set);
	if (WIFEXITED(st))
		code = WEXITSTATUS(st);
	else if (WIFSIGNALED(st))
		code = 128 + WTERMSIG(st);
out:
	close(px.lfd);
	if (o.env_file && !o.cmd)
		unlink(o.env_file);
	fflush(NULL);
	if (pid && WIFSIGNALED(st)) {
		/* Die as COMMAND died, so a shell sees the same. */
		signal(WTERMSIG(st), SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		raise(WTERMSIG(st));
	}
	/* Not exit(): connection threads may be inside libcurl still. */
	_exit(code);
}
