// SPDX-License-Identifier: MIT
#include "fs/newkeys.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "backend/log.h"
#include "backend/secret.h"
#include "backend/util.h"
#include "fs/content.h"
#include "fs/fs.h"

#include "backend/banned.h" /* always the last include */

#define NEW_KEYS_MAX 64

struct new_key {
	char account[TREE_PARAM_MAX], key[TREE_PARAM_MAX];
	/* the key's id: a key re-created elsewhere is another */
	char id[UUID_BUF];
	struct secret *value;
	long long at; /* CLOCK_MONOTONIC ms */
};

/* New key values of one mount (fs->newkeys). */
struct newkeys {
	pthread_mutex_t lock; /* protects keys[] and n */
	struct new_key keys[NEW_KEYS_MAX];
	int n;
};

/* Caller holds lock. */
static void drop(struct newkeys *nk, int i)
{
	secret_unref(nk->keys[i].value);
	nk->keys[i] = nk->keys[--nk->n];
	memset(&nk->keys[nk->n], 0, sizeof(nk->keys[nk->n]));
}

/* Caller holds lock. */
static void forget(struct newkeys *nk, const char *account, const char *key)
{
	for (int i = 0; i < nk->n; i++)
		if (!strcmp(nk->keys[i].account, account) &&
		    (!key || !strcmp(nk->keys[i].key, key)))
			drop(nk, i--);
}

void newkey_forget(struct newkeys *nk, const char *account, const char *key)
{
	pthread_mutex_lock(&nk->lock);
	forget(nk, account, key);
	pthread_mutex_unlock(&nk->lock);
}

void newkey_put(struct newkeys *nk, const char *account, const char *key,
		const char *key_id, struct secret *value)
{
	struct new_key *k;

	pthread_mutex_lock(&nk->lock);
	forget(nk, account, key);
	if (nk->n == NEW_KEYS_MAX)
		drop(nk, 0);
	k = &nk->keys[nk->n++];
	strlcpy_z(k->account, account, sizeof(k->account));
	strlcpy_z(k->key, key, sizeof(k->key));
	strlcpy_z(k->id, key_id, sizeof(k->id));
	k->value = secret_ref(value);
	k->at = mono_ms();
	pthread_mutex_unlock(&nk->lock);
}

/* The live value of account/key for key_id.  Caller holds lock. */
static struct new_key *find(struct newkeys *nk, const char *account,
			    const char *key, const char *key_id,
			    unsigned window)
{
	for (int i = 0; i < nk->n; i++) {
		struct new_key *k = &nk->keys[i];

		if (strcmp(k->account, account) || strcmp(k->key, key))
			continue;
		/* readable for the whole window, not a moment more */
		if (mono_ms() - k->at > window * 1000LL ||
		    strcasecmp(k->id, key_id))
			return NULL;
		return k;
	}
	return NULL;
}

int newkey_get(struct newkeys *nk, const char *account, const char *key,
	       const char *key_id, unsigned window, struct content **out)
{
	struct new_key *k;
	int ret = -ENOENT;

	pthread_mutex_lock(&nk->lock);
	k = find(nk, account, key, key_id, window);
	if (k) {
		*out = content_text(k->value->buf, k->value->len, true, true);
		ret = *out ? 0 : -ENOMEM;
	}
	pthread_mutex_unlock(&nk->lock);
	return ret;
}

bool newkey_has(struct newkeys *nk, const char *account, const char *key,
		const char *key_id, unsigned window)
{
	bool ret;

	pthread_mutex_lock(&nk->lock);
	ret = find(nk, account, key, key_id, window) != NULL;
	pthread_mutex_unlock(&nk->lock);
	return ret;
}

long long newkey_expire(struct newkeys *nk, unsigned window,
			void (*gone)(const char *account, const char *key,
				     void *arg),
			void *arg)
{
	char account[TREE_PARAM_MAX], key[TREE_PARAM_MAX];
	long long now = mono_ms(), next = 0;

	pthread_mutex_lock(&nk->lock);
	for (int i = 0; i < nk->n; i++) {
		long long due = nk->keys[i].at + window * 1000LL;

		if (now <= due) {
			if (!next || due < next)
				next = due;
			continue;
		}
		log_info("the new value of key '%s/%s' was wiped (key_window)",
			 nk->keys[i].account, nk->keys[i].key);
		strlcpy_z(account, nk->keys[i].account, sizeof(account));
		strlcpy_z(key, nk->keys[i].key, sizeof(key));
		drop(nk, i--);
		/* the kernel may hold it in the page cache: drop that too */
		if (gone)
			gone(account, key, arg);
	}
	pthread_mutex_unlock(&nk->lock);
	return next ? next + 1 : 0;
}

struct newkeys *newkeys_new(void)
{
	struct newkeys *nk = calloc(1, sizeof(*nk));

	if (nk)
		pthread_mutex_init(&nk->lock, NULL);
	return nk;
}

void newkeys_free(struct newkeys *nk)
{
	if (!nk)
		return;
	while (nk->n)
		drop(nk, 0);
	pthread_mutex_destroy(&nk->lock);
	free(nk);
}
