// SPDX-License-Identifier: MIT
/* Rendered file content (fs/content.h). */
#include "fs/content.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "backend/banned.h" /* always the last include */

struct content *content_new(size_t len, bool secret)
{
	struct content *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->data = secret ? sodium_malloc(len + 1) : malloc(len + 1);
	if (!c->data) {
		free(c);
		return NULL;
	}
	c->data[len] = '\0';
	c->len = len;
	c->secret = secret;
	ref_init(&c->refs);
	return c;
}

struct content *content_text(const char *s, size_t len, bool nl, bool secret)
{
	struct content *c = content_new(len + (nl ? 1 : 0), secret);

	if (!c)
		return NULL;
	if (len)
		memcpy(c->data, s, len);
	if (nl)
		c->data[len] = '\n';
	return c;
}

struct content *content_ref(struct content *c)
{
	if (c)
		ref_get(&c->refs);
	return c;
}

void content_unref(struct content *c)
{
	if (!c || !ref_put(&c->refs))
		return;
	if (c->secret)
		sodium_free(c->data);
	else
		free(c->data);
	free(c);
}
