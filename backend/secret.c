// SPDX-License-Identifier: MIT
#include "backend/secret.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/banned.h" /* always the last include */

#define SECRET_MAX (16 * 1024)

struct secret *secret_new(const char *s, size_t len)
{
	struct secret *sec;

	sec = malloc(sizeof(*sec));
	if (!sec)
		return NULL;
	sec->buf = sodium_malloc(len + 1);
	if (!sec->buf) {
		free(sec);
		return NULL;
	}
	if (len)
		memcpy(sec->buf, s, len);
	sec->buf[len] = '\0';
	sec->len = len;
	ref_init(&sec->refs);
	return sec;
}

struct secret *secret_ref(struct secret *s)
{
	if (s)
		ref_get(&s->refs);
	return s;
}

void secret_unref(struct secret *s)
{
	if (!s || !ref_put(&s->refs))
		return;
	sodium_free(s->buf); /* wipes */
	free(s);
}

int secret_equal(const struct secret *a, const struct secret *b)
{
	if (!a || !b)
		return a == b;
	return a->len == b->len && !sodium_memcmp(a->buf, b->buf, a->len);
}

int secret_read_fd(int fd, struct secret **out)
{
	char *buf;
	size_t len = 0;
	ssize_t n;
	int ret = 0;

	buf = sodium_malloc(SECRET_MAX + 1);
	if (!buf)
		return -ENOMEM;
	while (len < SECRET_MAX) {
		n = read(fd, buf + len, SECRET_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		if (n == 0)
			break;
		if (memchr(buf + len, '\n', n)) {
			len += n;
			break;
		}
		len += n;
	}
	buf[len] = '\0';
	len = strcspn(buf, "\r\n");
	if (len == SECRET_MAX) {
		ret = -E2BIG;
		goto out;
	}
	if (len == 0) {
		ret = -ENODATA;
		goto out;
	}
	*out = secret_new(buf, len);
	if (!*out)
		ret = -ENOMEM;
out:
	sodium_free(buf);
	return ret;
}

/* jansson does not tell free() the size: keep it in a header. */
static void *json_zalloc(size_t size)
{
	size_t *p = malloc(size + sizeof(size_t) * 2);

	if (!p)
		return NULL;
	p[0] = size;
	return p + 2; /* keep 16-byte alignment */
}

static void json_zfree(void *ptr)
{
	size_t *p;

	if (!ptr)
		return;
	p = (size_t *)ptr - 2;
	sodium_memzero(ptr, p[0]);
	free(p);
}

void secret_json_allocator(void)
{
	json_set_alloc_funcs(json_zalloc, json_zfree);
}

void json_str_free(char *s)
{
	json_malloc_t m;
	json_free_t f;

	if (!s)
		return;
	json_get_alloc_funcs(&m, &f);
	f(s);
}
