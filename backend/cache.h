/* SPDX-License-Identifier: MIT */
/*
 * The metadata cache: server replies (JSON) by key (the API path), each
 * kept at most ttl seconds.  Writes through the tree invalidate by key
 * prefix at once.  Thread-safe; values are shared references.
 */
#ifndef ZENMLFS_CACHE_H
#define ZENMLFS_CACHE_H

#include <jansson.h>

struct cache;

struct cache *cache_new(unsigned ttl);
void cache_free(struct cache *c);

/* A fresh entry: a new reference in *out (json_decref it), or -ENOENT. */
int cache_get(struct cache *c, const char *key, json_t **out);
/* Store val under key (takes a new reference). */
void cache_put(struct cache *c, const char *key, json_t *val);
/* Drop every entry whose key starts with prefix ("" drops all). */
void cache_invalidate(struct cache *c, const char *prefix);

#endif
