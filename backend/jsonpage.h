/* SPDX-License-Identifier: MIT */
/*
 * A page of a ZenML list reply, {"index": 1, ..., "items": [...]}, parsed
 * one item at a time: each element of "items" is parsed alone, handed to
 * the caller and freed before the next, so a page of 10,000 objects is
 * never one JSON tree (about ten times its wire size).  Pure code.
 */
#ifndef ZENMLFS_JSONPAGE_H
#define ZENMLFS_JSONPAGE_H

#include <jansson.h>
#include <stddef.h>

/* Called with each item (borrowed: the parser frees it after).  A
 * non-zero return stops the parse and is returned. */
typedef int (*jsonpage_item_fn)(json_t *item, void *arg);

/*
 * Parse buf[0..len), a JSON object with one "items" array.  Each element
 * of "items" goes to each(); *rest (when rest is not NULL) gets a new
 * object with every other member.  0; -EIO when buf is not such an
 * object (or not JSON); -ENOMEM; or what each() returned.
 */
int jsonpage_parse(const char *buf, size_t len, jsonpage_item_fn each,
		   void *arg, json_t **rest);

#endif
