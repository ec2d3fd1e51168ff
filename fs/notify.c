// SPDX-License-Identifier: MIT
#define FUSE_USE_VERSION 314
#include "fs/notify.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/log.h"

struct item {
	struct item *next;
	uint64_t seq;
	void (*fn)(struct fuse_session *se, void *arg); /* or a notification */
	void *arg;
	/* parent 0: an inode invalidation; ino 0: an entry's */
	uint64_t parent, ino;
	char name[];
};

/* lock protects the queue, the sequence numbers and the flags; wake
 * wakes the thread, done the waiters. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static struct item *head, **tail = &head;
static uint64_t queued, sent;
static bool started, stopping;
static struct fuse_session *session;
static pthread_t thread;
static __thread uint64_t last_queued;

static uint64_t enqueue(uint64_t parent, uint64_t ino, const char *name,
			void (*fn)(struct fuse_session *se, void *arg),
			void *arg)
{
	size_t len = name ? strlen(name) : 0;
	struct item *it = calloc(1, sizeof(*it) + len + 1);
	uint64_t seq;

	pthread_mutex_lock(&lock);
	if (!it) {
		/* nothing we can do but say so; a later one may work */
		pthread_mutex_unlock(&lock);
		log_warn("cannot queue a kernel notification: out of memory");
		return 0;
	}
	it->parent = parent;
	it->ino = ino;
	it->fn = fn;
	it->arg = arg;
	if (len)
		memcpy(it->name, name, len + 1);
	it->seq = seq = ++queued;
	last_queued = seq;
	*tail = it;
	tail = &it->next;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	return seq;
}

uint64_t notify_delete(uint64_t parent, uint64_t child, const char *name)
{
	return enqueue(parent, child, name, NULL, NULL);
}

uint64_t notify_entry(uint64_t parent, const char *name)
{
	return enqueue(parent, 0, name, NULL, NULL);
}

uint64_t notify_last_queued(void)
{
	return last_queued;
}

uint64_t notify_inval(uint64_t ino)
{
	return enqueue(0, ino, NULL, NULL, NULL);
}

uint64_t notify_call(void (*fn)(struct fuse_session *se, void *arg), void *arg)
{
	return enqueue(0, 0, NULL, fn, arg);
}

void notify_wait(uint64_t seq, int timeout_ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&lock);
	while (started && !stopping && sent < seq &&
	       !pthread_cond_timedwait(&done, &lock, &until))
		;
	pthread_mutex_unlock(&lock);
}

static void send_one(const struct item *it)
{
	int ret;

	if (it->fn) {
		it->fn(session, it->arg);
		return;
	}
	if (it->parent && !it->ino)
		ret = fuse_lowlevel_notify_inval_entry(
			session, it->parent, it->name, strlen(it->name));
	else if (it->parent)
		ret = fuse_lowlevel_notify_delete(session, it->parent, it->ino,
						  it->name, strlen(it->name));
	else
		ret = fuse_lowlevel_notify_inval_inode(session, it->ino, 0, 0);
	/* ENOENT: the kernel holds no such entry or inode: nothing to do */
	if (ret && ret != -ENOENT)
		log_debug("kernel notification for inode %llu failed: %s",
			  (unsigned long long)it->ino, strerror(-ret));
}

static void *notify_main(void *arg)
{
	struct item *it;

	pthread_mutex_lock(&lock);
	for (;;) {
		while (!head && !stopping)
			pthread_cond_wait(&wake, &lock);
		if (stopping)
			break;
		it = head;
		head = it->next;
		if (!head)
			tail = &head;
		pthread_mutex_unlock(&lock);
		send_one(it);
		pthread_mutex_lock(&lock);
		sent = it->seq;
		free(it);
		pthread_cond_broadcast(&done);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

int notify_start(struct fuse_session *se)
{
	int ret;

	session = se;
	ret = pthread_create(&thread, NULL, notify_main, NULL);
	if (ret)
		return -ret;
	pthread_mutex_lock(&lock);
	started = true;
	pthread_mutex_unlock(&lock);
	return 0;
}

void notify_stop(void)
{
	bool join;

	pthread_mutex_lock(&lock);
	join = started;
	stopping = true;
	pthread_cond_broadcast(&wake);
	pthread_cond_broadcast(&done);
	pthread_mutex_unlock(&lock);
	if (join)
		pthread_join(thread, NULL);
	while (head) {
		struct item *it = head;

		head = it->next;
		free(it);
	}
	tail = &head;
	started = false;
}
