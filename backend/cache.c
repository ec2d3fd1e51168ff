// SPDX-License-Identifier: MIT
#include "backend/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CACHE_MAX 512

struct entry {
	char *key;
	json_t *val;
	struct timespec at;
};

struct cache {
	unsigned ttl;
	/* lock protects e[] and n. */
	pthread_mutex_t lock;
	struct entry e[CACHE_MAX];
	int n;
};

struct cache *cache_new(unsigned ttl)
{
	struct cache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->ttl = ttl;
	pthread_mutex_init(&c->lock, NULL);
	return c;
}

static void drop(struct cache *c, int i)
{
	free(c->e[i].key);
	json_decref(c->e[i].val);
	c->e[i] = c->e[--c->n];
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	while (c->n)
		drop(c, 0);
	free(c);
}

static double age(const struct timespec *at)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - at->tv_sec) + (now.tv_nsec - at->tv_nsec) / 1e9;
}

int cache_get(struct cache *c, const char *key, json_t **out)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < c->n; i++) {
		if (strcmp(c->e[i].key, key))
			continue;
		if (age(&c->e[i].at) < c->ttl) {
			*out = json_incref(c->e[i].val);
			ret = 0;
		} else {
			drop(c, i);
		}
		break;
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}

void cache_put(struct cache *c, const char *key, json_t *val)
{
	char *k;
	int i;

	if (!c->ttl)
		return;
	k = strdup(key);
	if (!k)
		return;
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < c->n; i++)
		if (!strcmp(c->e[i].key, key)) {
			drop(c, i);
			break;
		}
	/* Full: evict the oldest. */
	if (c->n == CACHE_MAX) {
		int old = 0;

		for (i = 1; i < c->n; i++)
			if (age(&c->e[i].at) > age(&c->e[old].at))
				old = i;
		drop(c, old);
	}
	c->e[c->n].key = k;
	c->e[c->n].val = json_incref(val);
	clock_gettime(CLOCK_MONOTONIC, &c->e[c->n].at);
	c->n++;
	pthread_mutex_unlock(&c->lock);
}

void cache_invalidate(struct cache *c, const char *prefix)
{
	size_t n = strlen(prefix);

	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < c->n;)
		if (!strncmp(c->e[i].key, prefix, n))
			drop(c, i);
		else
			i++;
	pthread_mutex_unlock(&c->lock);
}
