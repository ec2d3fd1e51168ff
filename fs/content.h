/* SPDX-License-Identifier: MIT */
/*
 * Rendered file content: what a read serves, made by the tree (attribute
 * files, info.json), the token publisher and the new-key slots, kept by
 * inodes as their snapshot.
 */
#ifndef ZENMLFS_CONTENT_H
#define ZENMLFS_CONTENT_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/util.h"

/* Rendered file content, reference-counted so a reply can use it without
 * holding a lock. */
struct content {
	struct ref refs;
	bool secret; /* data in guarded memory */
	size_t len;
	char *data;
};

struct content *content_new(size_t len, bool secret);
/* A copy of s[0..len) with a newline appended when nl. */
struct content *content_text(const char *s, size_t len, bool nl, bool secret);
struct content *content_ref(struct content *c);
void content_unref(struct content *c);

#endif
