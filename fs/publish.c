// SPDX-License-Identifier: MIT
#include "fs/publish.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/log.h"
#include "backend/secret.h"
#include "backend/token.h"
#include "backend/util.h"
#include "fs/content.h"
#include "fs/inode.h"
#include "fs/notify.h"
#include "fs/self.h"

#include "backend/banned.h" /* always the last include */

/* A writer of refresh waits this long at most for the names to switch:
 * more than the helper's rename timeout, after which the publisher
 * switches them itself (fs/self.h). */
#define SYNC_WAIT_MS 5000
#define TOKEN_INOS_MAX 256

/*
 * A new token reaches the names by a rename through the mount, done by
 * the daemon itself from the notify thread: the kernel swaps the dentry
 * atomically and tells inotify (IN_MOVED_TO "token" on the folder: the
 * change notification watchers rely on, docs/containers.md).  token.json
 * goes first, token last.  When the rename cannot be done (the mount point
 * is covered, or the daemon may not write the root directory), the table
 * is switched directly and the old dentry dropped: readers see the same,
 * watchers see nothing.
 */
struct rename_job {
	struct fs *fs;
	const char *staged, *name;
};

#define NJOBS 2

/* The token as published: one per mount (fs->pub). */
struct publisher {
	/* The token's own notifier: publication and the drop of a token
	 * near expiry never queue behind metadata work (fs/notify.h). */
	struct notifier *tq;
	/* lock protects current (the token the names point to) and
	 * last_seq, and orders publications. */
	pthread_mutex_t lock;
	struct secret *current;
	uint64_t last_seq;
	bool first_done; /* nothing is published before publish_first() */
	bool withdrawn; /* the daemon is stopping (atomic access) */
	/* token.json first, token last */
	struct rename_job jobs[NJOBS];
	/* our mount, once up: where to rename, and how to know it is ours */
	char *mount_path;
	dev_t mount_dev;
	bool warned_rename;
};

static void rename_job(struct fuse_session *se, void *arg)
{
	const struct rename_job *j = arg;
	struct fs *fs = j->fs;
	struct publisher *pub = fs->pub;
	char from[PATH_MAX], to[PATH_MAX];
	const char *mnt;
	uint64_t old = 0;
	int err = ENODEV;
	dev_t dev;

	/* Set once by the readiness thread (publish_mounted), freed only
	 * after this notifier has stopped. */
	pthread_mutex_lock(&pub->lock);
	mnt = pub->mount_path;
	dev = pub->mount_dev;
	pthread_mutex_unlock(&pub->lock);
	if (mnt) {
		snprintf(from, sizeof(from), "%s/%s", mnt, j->staged);
		snprintf(to, sizeof(to), "%s/%s", mnt, j->name);
		err = -self_rename(fs->self, mnt, dev, from, to);
		if (!err)
			return;
	}
	/* warned_rename: this notifier's thread only */
	if (!pub->warned_rename && mnt) {
		pub->warned_rename = true;
		log_warn("cannot publish the token by a rename in '%s' (%s): "
			 "watchers of the folder get no event",
			 mnt, strerror(err));
	}
	if (err == ETIMEDOUT || err == EBUSY)
		log_warn("the mount helper did not rename '%s' in time: the "
			 "name is switched without an event for watchers",
			 j->name);
	snprintf(from, sizeof(from), "/%s", j->staged);
	snprintf(to, sizeof(to), "/%s", j->name);
	if (!itab_rename(fs->itab, from, to, &old) && old)
		fuse_lowlevel_notify_delete(se, ITAB_ROOT, old, j->name,
					    strlen(j->name));
}

static void expire_due(struct fuse_session *se, void *arg);

/* Arm the timer for the next token inode to reach its margin. */
static void arm_expiry(struct fs *fs)
{
	struct publisher *pub = fs->pub;
	time_t next = itab_tokens_next(fs->itab, TOKEN_MARGIN),
	       now = time(NULL);

	if (pub->tq)
		notify_timer(pub->tq, expire_due, fs,
			     next ? mono_ms() + (next > now ? next - now : 0) *
							1000LL :
				    0);
}

/* On the token's notifier: drop the pages of token inodes whose token is
 * now within TOKEN_MARGIN of expiry, so no reader is served it from the
 * page cache; reads then come to the daemon and fail with the reason. */
static void expire_due(struct fuse_session *se, void *arg)
{
	struct fs *fs = arg;
	uint64_t inos[TOKEN_INOS_MAX];
	size_t n;

	n = itab_tokens_expiring(fs->itab, time(NULL), TOKEN_MARGIN, inos,
				 TOKEN_INOS_MAX);
	for (size_t i = 0; i < n; i++)
		fuse_lowlevel_notify_inval_inode(se, inos[i], 0, 0);
	arm_expiry(fs);
}

int publish_new(struct fs *fs)
{
	struct publisher *pub = calloc(1, sizeof(*pub));

	if (!pub)
		return -ENOMEM;
	pthread_mutex_init(&pub->lock, NULL);
	pub->jobs[0] =
		(struct rename_job){ fs, TOKEN_JSON_STAGED, TOKEN_JSON_NAME };
	pub->jobs[1] = (struct rename_job){ fs, TOKEN_STAGED, TOKEN_NAME };
	fs->pub = pub;
	return 0;
}

int publish_start(struct fs *fs, struct fuse_session *se)
{
	struct publisher *pub = fs->pub;
	int ret;

	pub->tq = notifier_new("zenmlfs-token", false);
	if (!pub->tq)
		return -ENOMEM;
	ret = notifier_start(pub->tq, se);
	if (ret)
		return ret;
	arm_expiry(fs);
	return 0;
}

void publish_stop(struct fs *fs)
{
	struct publisher *pub = fs->pub;

	notifier_stop(pub->tq);
}

/* Bind the names to tok.  Caller holds lock. */
static int publish(struct fs *fs, struct secret *tok, int64_t exp,
		   bool tell_kernel)
{
	struct publisher *pub = fs->pub;
	uint64_t old = 0;
	int ret;

	if (!tell_kernel) {
		ret = itab_publish(fs->itab, "/" TOKEN_NAME, tok, exp, &old);
		if (!ret)
			ret = itab_publish(fs->itab, "/" TOKEN_JSON_NAME, tok,
					   exp, &old);
	} else {
		ret = itab_publish(fs->itab, "/" TOKEN_JSON_STAGED, tok, exp,
				   &old);
		if (!ret)
			ret = itab_publish(fs->itab, "/" TOKEN_STAGED, tok, exp,
					   &old);
	}
	if (ret)
		return ret;
	secret_unref(pub->current);
	pub->current = secret_ref(tok);
	log_debug("token published: %zu bytes", tok->len);
	for (size_t i = 0; tell_kernel && i < NJOBS; i++)
		pub->last_seq =
			notify_call(pub->tq, rename_job, (void *)&pub->jobs[i]);
	arm_expiry(fs);
	return 0;
}

void publish_mounted(struct fs *fs, const char *path, dev_t dev)
{
	struct publisher *pub = fs->pub;

	pthread_mutex_lock(&pub->lock);
	if (!pub->mount_path) {
		pub->mount_path = strdup(path);
		pub->mount_dev = dev;
	}
	pthread_mutex_unlock(&pub->lock);
}

int publish_renamed(struct fs *fs, const struct caller *who, uint64_t parent,
		    const char *name, uint64_t newparent, const char *newname)
{
	struct publisher *pub = fs->pub;
	uint64_t old;

	/* only the daemon's helper, only the staged names */
	if (!self_is(fs->self, who->pid) || parent != ITAB_ROOT ||
	    newparent != ITAB_ROOT)
		return -EPERM;
	for (size_t i = 0; i < NJOBS; i++) {
		char from[64], to[64];

		if (strcmp(name, pub->jobs[i].staged) ||
		    strcmp(newname, pub->jobs[i].name))
			continue;
		snprintf(from, sizeof(from), "/%s", pub->jobs[i].staged);
		snprintf(to, sizeof(to), "/%s", pub->jobs[i].name);
		return itab_rename(fs->itab, from, to, &old);
	}
	return -EPERM;
}

int publish_first(struct fs *fs)
{
	struct publisher *pub = fs->pub;
	struct secret *tok;
	int64_t exp;
	int ret;

	ret = token_engine_get(fs->te, &tok, &exp);
	if (ret)
		return ret;
	pthread_mutex_lock(&pub->lock);
	ret = publish(fs, tok, exp, false);
	pub->first_done = !ret;
	pthread_mutex_unlock(&pub->lock);
	secret_unref(tok);
	return ret;
}

void publish_changed(void *arg)
{
	struct fs *fs = arg;
	struct publisher *pub = fs->pub;
	uint64_t inos[TOKEN_INOS_MAX];
	struct secret *tok = NULL;
	int64_t exp;
	size_t n;
	int ret;

	ret = token_engine_get(fs->te, &tok, &exp);
	pthread_mutex_lock(&pub->lock);
	if (!pub->first_done) {
		/* the first token: publish_first() comes next */
	} else if (!ret && !secret_equal(tok, pub->current)) {
		if (publish(fs, tok, exp, true))
			log_err("cannot publish the new token: out of memory");
	} else if (ret) {
		/* Nothing may be served: every read must come here to
		 * fail, none may find a token in the page cache. */
		n = itab_tokens(fs->itab, inos, TOKEN_INOS_MAX);
		for (size_t i = 0; i < n; i++)
			pub->last_seq = notify_inval(pub->tq, inos[i]);
	}
	pthread_mutex_unlock(&pub->lock);
	secret_unref(tok);
}

bool publish_sync(struct fs *fs)
{
	struct publisher *pub = fs->pub;
	uint64_t seq;

	pthread_mutex_lock(&pub->lock);
	seq = pub->last_seq;
	pthread_mutex_unlock(&pub->lock);
	return !pub->tq || notify_wait(pub->tq, seq, SYNC_WAIT_MS);
}

int publish_read(struct fs *fs, uint64_t ino, struct secret **tok)
{
	int64_t exp;
	int ret;

	if (__atomic_load_n(&fs->pub->withdrawn, __ATOMIC_ACQUIRE))
		return -ENOTCONN;
	ret = itab_token(fs->itab, ino, tok, &exp, NULL);
	if (ret)
		return ret;
	ret = token_engine_servable(fs->te, exp);
	if (ret) {
		secret_unref(*tok);
		*tok = NULL;
	}
	return ret;
}

int publish_stat(struct fs *fs, uint64_t ino, size_t *len, struct timespec *at,
		 bool *retired)
{
	struct secret *tok;
	int64_t exp;
	int ret;

	ret = itab_token(fs->itab, ino, &tok, &exp, at);
	if (ret)
		return ret;
	*len = tok->len;
	*retired = itab_retired(fs->itab, ino);
	secret_unref(tok);
	return 0;
}

int publish_render_json(struct fs *fs, uint64_t ino, struct content **out)
{
	char exp_s[RFC3339_LEN] = "";
	struct secret *tok;
	struct content *c;
	int64_t exp;
	int ret, n;

	if (__atomic_load_n(&fs->pub->withdrawn, __ATOMIC_ACQUIRE))
		return -ENOTCONN;
	ret = itab_token(fs->itab, ino, &tok, &exp, NULL);
	if (!ret) {
		ret = token_engine_servable(fs->te, exp);
		if (ret)
			secret_unref(tok);
	}
	if (ret)
		return ret;
	c = content_new(tok->len + 160, true);
	if (!c) {
		secret_unref(tok);
		return -ENOMEM;
	}
	/* The token is base64url and dots: no JSON escaping needed. */
	if (exp == TOKEN_NO_EXPIRY) {
		n = snprintf(c->data, c->len + 1,
			     "{\"access_token\":\"%s\",\"token_type\":"
			     "\"bearer\",\"expires_at\":null,"
			     "\"expires_in\":null}\n",
			     tok->buf);
	} else {
		time_format_rfc3339((time_t)exp, exp_s, sizeof(exp_s));
		n = snprintf(c->data, c->len + 1,
			     "{\"access_token\":\"%s\",\"token_type\":"
			     "\"bearer\",\"expires_at\":\"%s\","
			     "\"expires_in\":%lld}\n",
			     tok->buf, exp_s, (long long)(exp - time(NULL)));
	}
	secret_unref(tok);
	c->len = n > 0 && (size_t)n <= c->len ? (size_t)n : 0;
	*out = c;
	return 0;
}

bool publish_withdraw(struct fs *fs)
{
	struct publisher *pub = fs->pub;
	uint64_t inos[TOKEN_INOS_MAX];
	size_t n;

	__atomic_store_n(&pub->withdrawn, true, __ATOMIC_RELEASE);
	if (!pub->tq)
		return true;
	pthread_mutex_lock(&pub->lock);
	n = itab_tokens(fs->itab, inos, TOKEN_INOS_MAX);
	for (size_t i = 0; i < n; i++)
		pub->last_seq = notify_inval(pub->tq, inos[i]);
	pthread_mutex_unlock(&pub->lock);
	return publish_sync(fs);
}

void publish_free(struct fs *fs)
{
	struct publisher *pub = fs->pub;

	if (!pub)
		return;
	secret_unref(pub->current);
	notifier_free(pub->tq);
	free(pub->mount_path);
	pthread_mutex_destroy(&pub->lock);
	free(pub);
	fs->pub = NULL;
}
