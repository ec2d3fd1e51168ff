// SPDX-License-Identifier: MIT
/*
 * The notification queue (fs/notify.c) without a kernel: the libfuse
 * calls it makes are replaced at link time (-Wl,--wrap,
 * tests/meson.build) by fakes that write what they were asked into a
 * log, which the tests compare with what was queued.
 *
 * What is checked: notifications and calls are sent in the order they
 * were queued, each once, from the notifier's thread; a merging notifier
 * folds a notification into an identical one still queued (same sequence
 * number) but not into one already sent, nor different ones; a plain
 * notifier sends duplicates; a due timer runs ahead of the queue; waiting
 * for a sequence number returns once it was sent; a stopped notifier
 * queues nothing.
 */
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "backend/util.h"
#include "fs/notify.h"

#include "tests/unit/check.h"

#define WAIT_MS 60000 /* a bound for a hung thread, never reached */

/* ---- the fakes ------------------------------------------------------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char sent[1024]; /* what was sent, "E1/a I5 ..." */
static pthread_t main_thread;
static bool on_main; /* a notification was sent from the caller's thread */

int __wrap_fuse_lowlevel_notify_inval_entry(struct fuse_session *se,
					    fuse_ino_t parent, const char *name,
					    size_t namelen);
int __wrap_fuse_lowlevel_notify_delete(struct fuse_session *se,
				       fuse_ino_t parent, fuse_ino_t child,
				       const char *name, size_t namelen);
int __wrap_fuse_lowlevel_notify_inval_inode(struct fuse_session *se,
					    fuse_ino_t ino, off_t off,
					    off_t len);

static void record(const char *one)
{
	size_t n;

	pthread_mutex_lock(&lock);
	if (pthread_equal(pthread_self(), main_thread))
		on_main = true;
	n = strlen(sent);
	snprintf(sent + n, sizeof(sent) - n, "%s%s", n ? " " : "", one);
	pthread_mutex_unlock(&lock);
}

int __wrap_fuse_lowlevel_notify_inval_entry(struct fuse_session *se,
					    fuse_ino_t parent, const char *name,
					    size_t namelen)
{
	char one[128];

	CHECK(strlen(name) == namelen);
	snprintf(one, sizeof(one), "E%llu/%s", (unsigned long long)parent,
		 name);
	record(one);
	return 0;
}

int __wrap_fuse_lowlevel_notify_delete(struct fuse_session *se,
				       fuse_ino_t parent, fuse_ino_t child,
				       const char *name, size_t namelen)
{
	char one[128];

	CHECK(strlen(name) == namelen);
	snprintf(one, sizeof(one), "D%llu/%llu:%s", (unsigned long long)parent,
		 (unsigned long long)child, name);
	record(one);
	return 0;
}

int __wrap_fuse_lowlevel_notify_inval_inode(struct fuse_session *se,
					    fuse_ino_t ino, off_t off,
					    off_t len)
{
	char one[32];

	CHECK(off == 0 && len == 0);
	snprintf(one, sizeof(one), "I%llu", (unsigned long long)ino);
	record(one);
	/* ENOENT: the kernel has no such inode; not an error */
	return ino == 404 ? -ENOENT : 0;
}

static void call(struct fuse_session *se, void *arg)
{
	char one[32];

	snprintf(one, sizeof(one), "C%llu", (unsigned long long)(uintptr_t)arg);
	record(one);
}

static bool sent_is(const char *want)
{
	bool same;

	pthread_mutex_lock(&lock);
	same = !strcmp(sent, want);
	if (!same)
		fprintf(stderr, "sent '%s', wanted '%s'\n", sent, want);
	sent[0] = '\0';
	pthread_mutex_unlock(&lock);
	return same;
}

/* Any non-NULL session: the fakes do not look at it. */
static int session_stub;
#define SE ((struct fuse_session *)&session_stub)

/* ---- order and merge ---------------------------------------------------- */

static void order_and_merge(void)
{
	struct notifier *q = notifier_new("test", true);
	uint64_t a, b, c, d, e, last;

	CHECK(q != NULL);
	/* Queued before the thread starts: nothing is sent yet. */
	a = notify_entry(q, 1, "a");
	b = notify_inval(q, 5);
	c = notify_delete(q, 1, 7, "b");
	CHECK(notify_entry(q, 1, "a") == a); /* the same: merged */
	d = notify_call(q, call, (void *)1);
	CHECK(notify_inval(q, 5) == b);
	CHECK(notify_delete(q, 1, 7, "b") == c);
	e = notify_entry(q, 2, "a"); /* another directory */
	CHECK(notify_delete(q, 1, 8, "b") == e + 1); /* another inode */
	CHECK(notify_call(q, call, (void *)1) == e + 2); /* calls: never */
	last = notify_last(q);
	CHECK(a < b && b < c && c < d && d < e && last == e + 2);
	CHECK(notify_wait(q, last, WAIT_MS) == false); /* not started */
	CHECK(sent_is(""));

	CHECK(notifier_start(q, SE) == 0);
	CHECK(notify_wait(q, last, WAIT_MS));
	CHECK(sent_is("E1/a I5 D1/7:b C1 E2/a D1/8:b C1"));
	CHECK(!on_main);

	/* Once sent, the same is queued again, and sent again; an inode
	 * the kernel does not hold is no failure. */
	CHECK(notify_entry(q, 1, "a") == last + 1);
	CHECK(notify_inval(q, 404) == last + 2);
	CHECK(notify_wait(q, last + 2, WAIT_MS));
	CHECK(sent_is("E1/a I404"));

	/* Stopped: nothing is queued, a wait returns. */
	notifier_stop(q);
	CHECK(notify_entry(q, 3, "c") == 0);
	CHECK(notify_wait(q, last + 3, WAIT_MS) == false);
	CHECK(sent_is(""));
	notifier_free(q);
}

static void no_merge(void)
{
	struct notifier *q = notifier_new("test", false);
	uint64_t a, b;

	a = notify_entry(q, 1, "a");
	b = notify_entry(q, 1, "a");
	CHECK(b == a + 1);
	CHECK(notifier_start(q, SE) == 0);
	CHECK(notify_wait(q, b, WAIT_MS));
	CHECK(sent_is("E1/a E1/a"));
	notifier_free(q);
}

static void timer_first(void)
{
	struct notifier *q = notifier_new("test", true);
	uint64_t a;

	a = notify_entry(q, 1, "a");
	notify_timer(q, call, (void *)9, mono_ms());
	CHECK(notifier_start(q, SE) == 0);
	CHECK(notify_wait(q, a, WAIT_MS));
	CHECK(sent_is("C9 E1/a"));
	/* Cancelled: it does not run. */
	notify_timer(q, call, (void *)8, 0);
	a = notify_call(q, call, (void *)7);
	CHECK(notify_wait(q, a, WAIT_MS));
	CHECK(sent_is("C7"));
	notifier_free(q);
}

int main(void)
{
	main_thread = pthread_self();
	order_and_merge();
	no_merge();
	timer_first();
	return CHECK_DONE();
}
