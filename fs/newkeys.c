// SPDX-License-Identifier: MIT
#include "fs/newkeys.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
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
	char id[40]; /* the key's id: a key re-created elsewhere is another */
	struct secret *value;
	long long at; /* CLOCK_MONOTONIC ms */
};

/* lock protects keys[] and n. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct new_key keys[NEW_KEYS_MAX];
static int n;

/* Caller holds lock. */
static void drop(int i)
{
	secret_unref(keys[i].value);
	keys[i] = keys[--n];
	memset(&keys[n], 0, sizeof(keys[n]));
}

/* Caller holds lock. */
static void forget(const char *account, const char *key)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(keys[i].account, account) &&
		    (!key || !strcmp(keys[i].key, key)))
			drop(i--);
}

void newkey_forget(const char *account, const char *key)
{
	pthread_mutex_lock(&lock);
	forget(account, key);
	pthread_mutex_unlock(&lock);
}

void newkey_put(const char *account, const char *key, const char *key_id,
		struct secret *value)
{
	pthread_mutex_lock(&lock);
	forget(account, key);
	if (n == NEW_KEYS_MAX)
		drop(0);
	strlcpy_z(keys[n].account, account, sizeof(keys[n].account));
	strlcpy_z(keys[n].key, key, sizeof(keys[n].key));
	strlcpy_z(keys[n].id, key_id, sizeof(keys[n].id));
	keys[n].value = secret_ref(value);
	keys[n].at = mono_ms();
	n++;
	pthread_mutex_unlock(&lock);
}

/* The live value of account/key for key_id.  Caller holds lock. */
static struct new_key *find(const char *account, const char *key,
			    const char *key_id, unsigned window)
{
	for (int i = 0; i < n; i++) {
		struct new_key *k = &keys[i];

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

int newkey_get(const char *account, const char *key, const char *key_id,
	       unsigned window, struct content **out)
{
	struct new_key *k;
	int ret = -ENOENT;

	pthread_mutex_lock(&lock);
	k = find(account, key, key_id, window);
	if (k) {
		*out = content_text(k->value->buf, k->value->len, true, true);
		ret = *out ? 0 : -ENOMEM;
	}
	pthread_mutex_unlock(&lock);
	return ret;
}

bool newkey_has(const char *account, const char *key, const char *key_id,
		unsigned window)
{
	bool ret;

	pthread_mutex_lock(&lock);
	ret = find(account, key, key_id, window) != NULL;
	pthread_mutex_unlock(&lock);
	return ret;
}

long long newkey_expire(unsigned window,
			void (*gone)(const char *path, void *arg), void *arg)
{
	char path[2 * TREE_PARAM_MAX + 40];
	long long now = mono_ms(), next = 0;

	pthread_mutex_lock(&lock);
	for (int i = 0; i < n; i++) {
		long long due = keys[i].at + window * 1000LL;

		if (now <= due) {
			if (!next || due < next)
				next = due;
			continue;
		}
		snprintf(path, sizeof(path), "/service-accounts/%s/keys/%s/key",
			 keys[i].account, keys[i].key);
		log_info("the new value of key '%s/%s' was wiped (key_window)",
			 keys[i].account, keys[i].key);
		drop(i--);
		/* the kernel may hold it in the page cache: drop that too */
		if (gone)
			gone(path, arg);
	}
	pthread_mutex_unlock(&lock);
	return next ? next + 1 : 0;
}

void newkey_release(void)
{
	pthread_mutex_lock(&lock);
	while (n)
		drop(0);
	pthread_mutex_unlock(&lock);
}
