// SPDX-License-Identifier: MIT
/*
 * The notify thread.  It owns every call into the kernel's caches
 * (fuse_lowlevel_notify_*), and the published token.
 *
 * Replacing the token.  Readers take the token from the page cache and
 * its length from the inode's i_size, which the kernel reads separately.
 * With the same length, swap then invalidate: a reader sees old or new.
 * A shorter token is also safe: the kernel shrinks i_size itself on the
 * short READ that refills the page.  A longer one is not: a reader still
 * holding the old i_size would cut the new token.  So for a longer token:
 *   1. drop the pages (readers refill them with the old token, old size);
 *   2. close the gate: READs of the token wait (briefly) here;
 *   3. swap, then grow i_size with an empty store at the new length;
 *   4. open the gate: the waiting READs get the new token, whose length
 *      i_size now has;
 *   5. drop the pages again (anything cached between 1 and 2).
 * Step 3 touches no page, so it cannot deadlock with a READ held at the
 * gate (that READ holds the page's lock).
 */
#include "fs/notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/log.h"
#include "backend/secret.h"
#include "backend/token.h"
#include "fs/model.h"
#include "fs/ops.h"
#include "fs/tree.h"

#define QUEUE_MAX 256
#define GATE_WAIT_MS 200

static struct fuse_session *g_se;
static struct fs *g_fs;
static pthread_t g_thread;
static bool g_started;

/* q_lock protects the queue, the flags and wakes the thread via q_cond. */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static char *queue[QUEUE_MAX];
static int q_n;
static bool q_token, q_stop, q_all;

/* tok_lock protects the published token and the gate. */
static pthread_mutex_t tok_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tok_cond = PTHREAD_COND_INITIALIZER;
static struct secret *tok_pub;
static int64_t tok_exp;
static size_t tok_len = 1;
static uint64_t tok_gen;
static bool tok_gate_closed;

void notify_path(const char *path)
{
	pthread_mutex_lock(&q_lock);
	for (int i = 0; i < q_n; i++)
		if (!strcmp(queue[i], path))
			goto out;
	if (q_n == QUEUE_MAX) {
		q_all = true; /* overflow: invalidate everything known */
	} else {
		queue[q_n] = strdup(path);
		if (queue[q_n])
			q_n++;
		else
			q_all = true;
	}
	pthread_cond_signal(&q_cond);
out:
	pthread_mutex_unlock(&q_lock);
}

void notify_token_changed(void *arg)
{
	pthread_mutex_lock(&q_lock);
	q_token = true;
	pthread_cond_signal(&q_cond);
	pthread_mutex_unlock(&q_lock);
}

size_t notify_token_len(void)
{
	size_t n;

	pthread_mutex_lock(&tok_lock);
	n = tok_len;
	pthread_mutex_unlock(&tok_lock);
	return n;
}

uint64_t notify_token_gen(void)
{
	uint64_t g;

	pthread_mutex_lock(&tok_lock);
	g = tok_gen;
	pthread_mutex_unlock(&tok_lock);
	return g;
}

int notify_token_get(struct fs *fs, struct secret **out)
{
	struct timespec until;
	struct secret *cur;
	int64_t exp;
	int ret;

	/* The engine decides whether any token may be served now. */
	ret = token_engine_get(fs->te, &cur, &exp);
	if (ret)
		return ret;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += GATE_WAIT_MS * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&tok_lock);
	while (tok_gate_closed &&
	       pthread_cond_timedwait(&tok_cond, &tok_lock, &until) == 0)
		;
	/* Serve what the kernel was told about; before the first publish,
	 * or if the published one is too close to expiry while its successor
	 * waits to be published, the engine's current token. */
	if (tok_pub && (tok_exp == TOKEN_NO_EXPIRY ||
			time(NULL) < tok_exp - TOKEN_MARGIN))
		*out = secret_ref(tok_pub);
	else
		*out = secret_ref(cur);
	pthread_mutex_unlock(&tok_lock);
	secret_unref(cur);
	return 0;
}

static void inval(fuse_ino_t ino)
{
	int ret = fuse_lowlevel_notify_inval_inode(g_se, ino, 0, 0);

	if (ret && ret != -ENOENT)
		log_debug("cannot invalidate inode %lu: %s",
			  (unsigned long)ino, strerror(-ret));
}

static void publish_token(void)
{
	struct fuse_bufvec empty = FUSE_BUFVEC_INIT(0);
	struct secret *cur = NULL, *old;
	size_t old_len;
	int64_t exp;
	int ret;

	ret = token_engine_get(g_fs->te, &cur, &exp);
	pthread_mutex_lock(&tok_lock);
	if (ret || secret_equal(cur, tok_pub)) {
		/* Not servable (the READ will say why), or nothing new. */
		tok_gen++;
		pthread_mutex_unlock(&tok_lock);
		secret_unref(cur);
		inval(INO_TOKEN);
		inval(INO_TOKEN_JSON);
		return;
	}
	old_len = tok_pub ? tok_pub->len : 0;
	if (!tok_pub || cur->len <= old_len) {
		old = tok_pub;
		tok_pub = cur;
		tok_exp = exp;
		tok_len = cur->len;
		tok_gen++;
		pthread_mutex_unlock(&tok_lock);
		secret_unref(old);
		inval(INO_TOKEN);
		inval(INO_TOKEN_JSON);
		return;
	}
	pthread_mutex_unlock(&tok_lock);

	/* Longer: see the top of this file. */
	inval(INO_TOKEN);
	pthread_mutex_lock(&tok_lock);
	tok_gate_closed = true;
	old = tok_pub;
	tok_pub = cur;
	tok_exp = exp;
	tok_len = cur->len;
	tok_gen++;
	pthread_mutex_unlock(&tok_lock);
	ret = fuse_lowlevel_notify_store(g_se, INO_TOKEN, (off_t)cur->len,
					 &empty, 0);
	if (ret && ret != -ENOENT)
		log_debug("cannot grow the token's size: %s", strerror(-ret));
	pthread_mutex_lock(&tok_lock);
	tok_gate_closed = false;
	pthread_cond_broadcast(&tok_cond);
	pthread_mutex_unlock(&tok_lock);
	secret_unref(old);
	inval(INO_TOKEN);
	inval(INO_TOKEN_JSON);
}

static void *notify_main(void *arg)
{
	struct timespec ts;
	char *paths[QUEUE_MAX];
	bool token, all;
	int n;

	pthread_mutex_lock(&q_lock);
	while (!q_stop) {
		if (!q_token && !q_n && !q_all) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&q_cond, &q_lock, &ts);
		}
		token = q_token;
		all = q_all;
		n = q_n;
		memcpy(paths, queue, sizeof(char *) * n);
		q_token = q_all = false;
		q_n = 0;
		pthread_mutex_unlock(&q_lock);

		if (token)
			publish_token();
		for (int i = 0; i < n; i++) {
			fuse_ino_t ino = ops_ino_of(paths[i]);

			if (ino && !all)
				inval(ino);
			free(paths[i]);
		}
		if (all)
			for (fuse_ino_t ino = 1; ino <= ops_inode_count();
			     ino++)
				inval(ino);
		/* New key values are readable for key_window only. */
		keys_expire(g_fs);
		pthread_mutex_lock(&q_lock);
	}
	pthread_mutex_unlock(&q_lock);
	return NULL;
}

int notify_start(struct fuse_session *se, struct fs *fs)
{
	int ret;

	g_se = se;
	g_fs = fs;
	ret = pthread_create(&g_thread, NULL, notify_main, NULL);
	if (ret)
		return -ret;
	g_started = true;
	/* Publish the first token. */
	notify_token_changed(NULL);
	return 0;
}

void notify_stop(void)
{
	if (g_started) {
		pthread_mutex_lock(&q_lock);
		q_stop = true;
		pthread_cond_signal(&q_cond);
		pthread_mutex_unlock(&q_lock);
		pthread_join(g_thread, NULL);
		g_started = false;
	}
	for (int i = 0; i < q_n; i++)
		free(queue[i]);
	q_n = 0;
	pthread_mutex_lock(&tok_lock);
	secret_unref(tok_pub);
	tok_pub = NULL;
	pthread_mutex_unlock(&tok_lock);
}
