// SPDX-License-Identifier: MIT
/*
 * The notify thread.  It owns every call into the kernel's caches
 * (fuse_lowlevel_notify_*), and the published token.
 *
 * Replacing the token.  Readers take the token from the page cache and
 * its length from the inode's i_size, which the kernel reads separately,
 * and a reader may read() more than once before EOF.  Swapping the content
 * of one inode in place lets a reader holding the old size cut the new
 * token, or read the old token and then the tail of a longer new one (the
 * server's tokens carry a float "iat", so lengths change often); and with
 * readers hammering the page, an invalidation can leave the old page in
 * the cache.  So every new token gets a new inode, like a rename over the
 * old file: the name "token" is invalidated and looked up anew (once per
 * reader per refresh), while the old inode keeps the old token for a short
 * grace period, so readers that hold it finish consistently, and then
 * follows the current token (a single-file bind mount holds it forever).
 */
#include "fs/notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/log.h"
#include "backend/secret.h"
#include "backend/token.h"
#include "fs/model.h"
#include "fs/ops.h"
#include "fs/tree.h"

#define QUEUE_MAX 256
#define SYNC_WAIT_MS 2000
#define TOKEN_INOS_MAX 64
#define REINVAL_DELAY_US 20000

static struct fuse_session *g_se;
static struct fs *g_fs;
static pthread_t g_thread;
static bool g_started;

/* q_lock protects the queue, the flags and the publish counters; q_cond
 * wakes the thread, done_cond the callers of notify_token_sync(). */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static char *queue[QUEUE_MAX];
static int q_n;
static bool q_token, q_stop, q_all;
static uint64_t pub_req, pub_done;

/* tok_lock protects the published token. */
static pthread_mutex_t tok_lock = PTHREAD_MUTEX_INITIALIZER;
static struct secret *tok_pub;
static int64_t tok_exp;
static uint64_t tok_gen;

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
	pub_req++;
	pthread_cond_signal(&q_cond);
	pthread_mutex_unlock(&q_lock);
}

void notify_token_sync(void)
{
	struct timespec until;
	uint64_t want;

	if (!g_started)
		return;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += SYNC_WAIT_MS / 1000;
	pthread_mutex_lock(&q_lock);
	want = pub_req;
	while (pub_done < want && !q_stop &&
	       !pthread_cond_timedwait(&done_cond, &q_lock, &until))
		;
	pthread_mutex_unlock(&q_lock);
}

size_t notify_token_len(void)
{
	size_t n;

	/* Never 0: a read of an unservable token must reach us to fail. */
	pthread_mutex_lock(&tok_lock);
	n = tok_pub ? tok_pub->len : 1;
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
	struct secret *cur;
	int64_t exp;
	int ret;

	/* The engine decides whether any token may be served now. */
	ret = token_engine_get(fs->te, &cur, &exp);
	if (ret)
		return ret;
	pthread_mutex_lock(&tok_lock);
	/* Serve what the kernel was told about; before the first publish,
	 * or if the published one is too close to expiry while its successor
	 * waits to be published, the engine's current token. */
	if (tok_pub &&
	    (tok_exp == TOKEN_NO_EXPIRY || time(NULL) < tok_exp - TOKEN_MARGIN))
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
		log_debug("cannot invalidate inode %lu: %s", (unsigned long)ino,
			  strerror(-ret));
}

/* Drop the kernel's copy of path and of everything below it. */
static void inval_under(const char *path)
{
	fuse_ino_t *inos;
	size_t n = ops_inos_under(path, &inos);

	for (size_t i = 0; i < n; i++)
		inval(inos[i]);
	free(inos);
}

/* Drop the kernel's copy of every live inode of path. */
static void inval_all(const char *path)
{
	fuse_ino_t inos[TOKEN_INOS_MAX];
	size_t n = ops_inos_of(path, inos, TOKEN_INOS_MAX);

	for (size_t i = 0; i < n; i++)
		inval(inos[i]);
}

/*
 * Drop the name's dentry if it points to ino, and mark ino deleted (nlink
 * 0), so the kernel evicts it once nobody holds it and we hear FORGET.
 */
static void delete_entry(const char *name, fuse_ino_t ino)
{
	int ret = fuse_lowlevel_notify_delete(g_se, FUSE_ROOT_ID, ino, name,
					      strlen(name));

	if (ret && ret != -ENOENT)
		log_debug("cannot invalidate '%s': %s", name, strerror(-ret));
}

/* Give the name a new inode; returns the old one (0: none). */
static fuse_ino_t rename_over(const char *name, struct content *keep)
{
	char path[32];
	fuse_ino_t old;

	snprintf(path, sizeof(path), "/%s", name);
	old = ops_ino_of(path);
	if (!old || ops_retire(path, keep))
		return 0;
	delete_entry(name, old);
	return old;
}

static void publish_token(void)
{
	struct secret *cur = NULL, *old = NULL;
	struct content *keep = NULL;
	bool renamed = false;
	int64_t exp = 0;
	int ret;

	ret = token_engine_get(g_fs->te, &cur, &exp);
	pthread_mutex_lock(&tok_lock);
	if (!ret && !secret_equal(cur, tok_pub)) {
		if (tok_pub) {
			keep = content_new(tok_pub->len, true);
			if (keep) {
				memcpy(keep->data, tok_pub->buf, tok_pub->len);
				renamed = true;
			}
		}
		old = tok_pub;
		tok_pub = secret_ref(cur);
		tok_exp = exp;
	}
	/* Also when it is not servable: the next read must come here to
	 * fail, not find the old token in the page cache. */
	tok_gen++;
	pthread_mutex_unlock(&tok_lock);
	secret_unref(cur);
	secret_unref(old);

	log_debug("token published (gen %llu, %zu bytes%s, inode %lu)",
		  (unsigned long long)tok_gen, notify_token_len(),
		  renamed ? ", new inode" : "",
		  (unsigned long)ops_ino_of("/token"));
	if (renamed) {
		fuse_ino_t old_tok = rename_over("token", keep);
		fuse_ino_t old_json = rename_over("token.json", NULL);

		content_unref(keep);
		/* A lookup answered just before the rename can land after
		 * the first invalidation and pin the old inode again: drop
		 * it once more when that has surely happened. */
		usleep(REINVAL_DELAY_US);
		if (old_tok)
			delete_entry("token", old_tok);
		if (old_json)
			delete_entry("token.json", old_json);
	}
	inval_all("/token");
	inval_all("/token.json");
}

static void *notify_main(void *arg)
{
	struct timespec ts;
	fuse_ino_t thawed[TOKEN_INOS_MAX];
	char *paths[QUEUE_MAX];
	bool token, all;
	uint64_t seq;
	size_t nthaw;
	int n;

	pthread_mutex_lock(&q_lock);
	while (!q_stop) {
		if (!q_token && !q_n && !q_all) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&q_cond, &q_lock, &ts);
		}
		token = q_token;
		seq = pub_req;
		all = q_all;
		n = q_n;
		memcpy(paths, queue, sizeof(char *) * n);
		q_token = q_all = false;
		q_n = 0;
		pthread_mutex_unlock(&q_lock);

		if (token) {
			publish_token();
			pthread_mutex_lock(&q_lock);
			pub_done = seq;
			pthread_cond_broadcast(&done_cond);
			pthread_mutex_unlock(&q_lock);
		}
		/* Retired inodes whose grace ended follow the current content
		 * from now on. */
		nthaw = ops_thaw(thawed, TOKEN_INOS_MAX);
		for (size_t i = 0; i < nthaw; i++)
			inval(thawed[i]);
		/* A path stands for itself and everything below it. */
		if (all)
			inval_under("/");
		for (int i = 0; i < n; i++) {
			if (!all)
				inval_under(paths[i]);
			free(paths[i]);
		}
		/* New key values are readable for key_window only. */
		keys_expire(g_fs);
		pthread_mutex_lock(&q_lock);
	}
	pthread_mutex_unlock(&q_lock);
	return NULL;
}

int notify_start(struct fuse_session *se, struct fs *fs)
{
	struct secret *cur;
	int64_t exp;
	int ret;

	g_se = se;
	g_fs = fs;
	/* The first token, before any request can ask for its size (the
	 * kernel has cached nothing yet, so there is nothing to notify). */
	if (!token_engine_get(fs->te, &cur, &exp)) {
		pthread_mutex_lock(&tok_lock);
		tok_pub = cur;
		tok_exp = exp;
		pthread_mutex_unlock(&tok_lock);
	}
	ret = pthread_create(&g_thread, NULL, notify_main, NULL);
	if (ret)
		return -ret;
	g_started = true;
	return 0;
}

void notify_stop(void)
{
	if (g_started) {
		pthread_mutex_lock(&q_lock);
		q_stop = true;
		pthread_cond_signal(&q_cond);
		pthread_cond_broadcast(&done_cond);
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
