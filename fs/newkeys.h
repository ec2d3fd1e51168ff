/* SPDX-License-Identifier: MIT */
/*
 * New API key values (from mkdir or rotate), kept in guarded memory and
 * readable in keys/<key>/key for key_window seconds, then wiped.  A value
 * belongs to one key id: a key deleted and re-created elsewhere under the
 * same name does not show it.  Thread-safe.
 */
#ifndef ZENMLFS_NEWKEYS_H
#define ZENMLFS_NEWKEYS_H

#include <stdbool.h>

struct newkeys;
struct secret;
struct content;

/* Keep value (a reference is taken) for account/key, id key_id. */
void newkey_put(struct newkeys *nk, const char *account, const char *key,
		const char *key_id, struct secret *value);
/* The value and a newline (guarded memory), if it is there for key_id
 * and younger than window seconds; else -ENOENT. */
int newkey_get(struct newkeys *nk, const char *account, const char *key,
	       const char *key_id, unsigned window, struct content **out);
bool newkey_has(struct newkeys *nk, const char *account, const char *key,
		const char *key_id, unsigned window);
/* Forget account/key's value (key NULL: all of the account's). */
void newkey_forget(struct newkeys *nk, const char *account, const char *key);
/*
 * Wipe the values older than window; for each, gone(its account, its key,
 * arg).  Returns when the next one is due (CLOCK_MONOTONIC ms), 0 when
 * none is kept.
 */
long long newkey_expire(struct newkeys *nk, unsigned window,
			void (*gone)(const char *account, const char *key,
				     void *arg),
			void *arg);
struct newkeys *newkeys_new(void);
void newkeys_free(struct newkeys *nk);

#endif
