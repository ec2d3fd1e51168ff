// SPDX-License-Identifier: MIT
#define _GNU_SOURCE /* pthread_setname_np */
#include "fs/notify.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/flight.h"
#include "backend/log.h"
#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

#define BUCKETS 1024

struct item {
	struct item *next; /* in the queue */
	struct item *hnext; /* in its bucket, while queued (merge) */
	uint64_t seq;
	notify_fn *fn; /* or a notification */
	void *arg;
	/* parent 0: an inode invalidation; ino 0: an entry's */
	uint64_t parent, ino;
	char name[];
};

/* lock protects everything below it; wake wakes the thread, done the
 * waiters. */
struct notifier {
	pthread_mutex_t lock;
	pthread_cond_t wake, done;
	struct item *head, **tail;
	struct item **buckets; /* merge only */
	uint64_t queued, sent;
	notify_fn *timer_fn;
	void *timer_arg;
	long long timer_at;
	bool started, stopping;
	struct fuse_session *se;
	pthread_t thread;
	char name[16];
};

struct notifier *notifier_new(const char *name, bool merge)
{
	struct notifier *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	if (merge) {
		q->buckets = calloc(BUCKETS, sizeof(*q->buckets));
		if (!q->buckets) {
			free(q);
			return NULL;
		}
	}
	pthread_mutex_init(&q->lock, NULL);
	cond_init_mono(&q->wake);
	cond_init_mono(&q->done);
	q->tail = &q->head;
	snprintf(q->name, sizeof(q->name), "%s", name);
	return q;
}

static size_t bucket_of(uint64_t parent, uint64_t ino, const char *name)
{
	uint64_t h = parent * 0x9e3779b97f4a7c15ULL ^ ino;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ULL;
	return (size_t)(h % BUCKETS);
}

/* An identical notification still queued.  Caller holds lock. */
static struct item *queued_twin(struct notifier *q, size_t b, uint64_t parent,
				uint64_t ino, const char *name)
{
	for (struct item *it = q->buckets[b]; it; it = it->hnext)
		if (it->parent == parent && it->ino == ino &&
		    !strcmp(it->name, name))
			return it;
	return NULL;
}

static void unhash(struct notifier *q, struct item *it)
{
	struct item **p;

	if (!q->buckets || it->fn)
		return;
	p = &q->buckets[bucket_of(it->parent, it->ino, it->name)];
	while (*p && *p != it)
		p = &(*p)->hnext;
	if (*p)
		*p = it->hnext;
}

static uint64_t enqueue(struct notifier *q, uint64_t parent, uint64_t ino,
			const char *name, notify_fn *fn, void *arg)
{
	size_t len = name ? strlen(name) : 0, b = 0;
	struct item *it, *twin;
	uint64_t seq;

	name = name ? name : "";
	pthread_mutex_lock(&q->lock);
	if (q->stopping) {
		pthread_mutex_unlock(&q->lock);
		return 0;
	}
	if (q->buckets && !fn) {
		b = bucket_of(parent, ino, name);
		twin = queued_twin(q, b, parent, ino, name);
		if (twin) {
			seq = twin->seq;
			pthread_mutex_unlock(&q->lock);
			return seq;
		}
	}
	it = calloc(1, sizeof(*it) + len + 1);
	if (!it) {
		/* nothing we can do but say so; a later one may work */
		pthread_mutex_unlock(&q->lock);
		log_warn("cannot queue a kernel notification: out of memory");
		return 0;
	}
	it->parent = parent;
	it->ino = ino;
	it->fn = fn;
	it->arg = arg;
	memcpy(it->name, name, len + 1);
	/* under lock, and atomic for notify_last() */
	it->seq = seq = __atomic_add_fetch(&q->queued, 1, __ATOMIC_RELEASE);
	*q->tail = it;
	q->tail = &it->next;
	if (q->buckets && !fn) {
		it->hnext = q->buckets[b];
		q->buckets[b] = it;
	}
	pthread_cond_signal(&q->wake);
	pthread_mutex_unlock(&q->lock);
	return seq;
}

uint64_t notify_delete(struct notifier *q, uint64_t parent, uint64_t child,
		       const char *name)
{
	return enqueue(q, parent, child, name, NULL, NULL);
}

uint64_t notify_entry(struct notifier *q, uint64_t parent, const char *name)
{
	return enqueue(q, parent, 0, name, NULL, NULL);
}

uint64_t notify_inval(struct notifier *q, uint64_t ino)
{
	return enqueue(q, 0, ino, NULL, NULL, NULL);
}

uint64_t notify_call(struct notifier *q, notify_fn *fn, void *arg)
{
	return enqueue(q, 0, 0, NULL, fn, arg);
}

uint64_t notify_last(struct notifier *q)
{
	return __atomic_load_n(&q->queued, __ATOMIC_ACQUIRE);
}

bool notify_wait(struct notifier *q, uint64_t seq, int timeout_ms)
{
	struct timespec until;
	bool sent;

	mono_deadline(timeout_ms, &until);
	pthread_mutex_lock(&q->lock);
	while (q->started && !q->stopping && q->sent < seq &&
	       !pthread_cond_timedwait(&q->done, &q->lock, &until))
		;
	sent = q->sent >= seq;
	pthread_mutex_unlock(&q->lock);
	return sent;
}

void notify_timer(struct notifier *q, notify_fn *fn, void *arg, long long at_ms)
{
	pthread_mutex_lock(&q->lock);
	q->timer_fn = at_ms ? fn : NULL;
	q->timer_arg = arg;
	q->timer_at = at_ms;
	pthread_cond_signal(&q->wake);
	pthread_mutex_unlock(&q->lock);
}

static void send_one(struct fuse_session *se, const struct item *it)
{
	int ret;

	if (it->fn) {
		it->fn(se, it->arg);
		return;
	}
	if (it->parent && !it->ino)
		ret = fuse_lowlevel_notify_inval_entry(se, it->parent, it->name,
						       strlen(it->name));
	else if (it->parent)
		ret = fuse_lowlevel_notify_delete(se, it->parent, it->ino,
						  it->name, strlen(it->name));
	else
		ret = fuse_lowlevel_notify_inval_inode(se, it->ino, 0, 0);
	/* ENOENT: the kernel holds no such entry or inode: nothing to do */
	if (ret && ret != -ENOENT)
		log_debug("kernel notification for inode %llu failed: %s",
			  (unsigned long long)it->ino, strerror(-ret));
}

static void *notifier_main(void *arg)
{
	struct notifier *q = arg;
	struct timespec at;
	notify_fn *fn;
	struct item *it;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		if (q->stopping)
			break;
		if (q->timer_fn && q->timer_at <= mono_ms()) {
			fn = q->timer_fn;
			q->timer_fn = NULL;
			pthread_mutex_unlock(&q->lock);
			fn(q->se, q->timer_arg);
			pthread_mutex_lock(&q->lock);
			continue;
		}
		if (!q->head) {
			if (q->timer_fn) {
				mono_deadline(q->timer_at - mono_ms(), &at);
				pthread_cond_timedwait(&q->wake, &q->lock, &at);
			} else {
				pthread_cond_wait(&q->wake, &q->lock);
			}
			continue;
		}
		it = q->head;
		q->head = it->next;
		if (!q->head)
			q->tail = &q->head;
		unhash(q, it);
		pthread_mutex_unlock(&q->lock);
		send_one(q->se, it);
		pthread_mutex_lock(&q->lock);
		q->sent = it->seq;
		free(it);
		pthread_cond_broadcast(&q->done);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

int notifier_start(struct notifier *q, struct fuse_session *se)
{
	int ret;

	q->se = se;
	ret = pthread_create(&q->thread, NULL, notifier_main, q);
	if (ret)
		return -ret;
	pthread_setname_np(q->thread, q->name);
	pthread_mutex_lock(&q->lock);
	q->started = true;
	pthread_mutex_unlock(&q->lock);
	return 0;
}

void notifier_stop(struct notifier *q)
{
	struct item *it;
	bool join;

	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	join = q->started && !q->stopping;
	q->stopping = true;
	pthread_cond_broadcast(&q->wake);
	pthread_cond_broadcast(&q->done);
	pthread_mutex_unlock(&q->lock);
	if (join)
		pthread_join(q->thread, NULL);
	for (it = q->head; it; it = q->head) {
		q->head = it->next;
		free(it);
	}
	q->tail = &q->head;
	if (q->buckets)
		memset(q->buckets, 0, BUCKETS * sizeof(*q->buckets));
	q->started = false;
}

void notifier_free(struct notifier *q)
{
	if (!q)
		return;
	notifier_stop(q);
	pthread_cond_destroy(&q->wake);
	pthread_cond_destroy(&q->done);
	pthread_mutex_destroy(&q->lock);
	free(q->buckets);
	free(q);
}
