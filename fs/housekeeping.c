// SPDX-License-Identifier: MIT
#define _GNU_SOURCE /* sem_clockwait */
#include "fs/housekeeping.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <time.h>

#include "backend/log.h"
#include "backend/util.h"
#include "backend/store.h"
#include "fs/inode.h"
#include "fs/newkeys.h"
#include "fs/notify.h"
#include "fs/tree.h"

#include "backend/banned.h" /* always the last include */

/* Freed cache memory worth handing back to the system at once. */
#define TRIM_MIN (64 * 1024)
/* As many inodes forgotten since the last look (a swept listing's). */
#define TRIM_INODES 256
/* How long after an expiry the sweep runs. */
#define SWEEP_SLACK_MS 50
/* How soon to look again once a sweep let the kernel forget entries. */
#define FORGET_WAIT_MS 200

static struct fs *hk_fs;
static void (*hup_fn)(void *arg);
static void *hup_arg;
static pthread_t thread;
static bool started;
static sem_t sem; /* posted from signal handlers too */
static volatile sig_atomic_t hup_pending, stopping;
static size_t inodes_high; /* the most inodes seen since the last trim */

/* A new key value's page may be in the kernel: drop it. */
static void key_gone(const char *account, const char *key, void *arg)
{
	const char *const names[] = { account, key };
	char path[PATH_MAX];
	uint64_t ino;

	if (tree_kind_path(ZK_KEY, "key", names, 2, path, sizeof(path)))
		return;
	ino = itab_ino_of(path);
	if (ino) {
		itab_snap_stale(ino);
		notify_inval(hk_fs->meta, ino);
	}
}

/* Do what is due; returns how long to sleep (ms). */
static long long tick(void)
{
	long long now = mono_ms(), sleep_ms, due;
	size_t freed, inodes;
	uint64_t seq;

	sleep_ms = (hk_fs->meta_ttl ? hk_fs->meta_ttl : 1) * 1000LL;
	if (sleep_ms > 60000)
		sleep_ms = 60000;
	due = newkey_expire(hk_fs->key_window, key_gone, NULL);
	if (due && due - now < sleep_ms)
		sleep_ms = due - now;
	seq = notify_last(hk_fs->meta);
	freed = store_sweep(hk_fs->store);
	/* Wake when the next thing cached expires: a big listing goes,
	 * and its memory with it, within moments of its meta_ttl. */
	due = store_next_expiry(hk_fs->store);
	if (due && due + SWEEP_SLACK_MS - now < sleep_ms)
		sleep_ms = due + SWEEP_SLACK_MS - now;
	/* A swept listing dropped the kernel's entries of its names
	 * (ops_object_gone): the kernel forgets their inodes, and the
	 * table frees them, just after. */
	if (notify_last(hk_fs->meta) != seq && sleep_ms > FORGET_WAIT_MS)
		sleep_ms = FORGET_WAIT_MS;
	inodes = itab_count();
	if (inodes > inodes_high)
		inodes_high = inodes;
	if (freed >= TRIM_MIN || inodes_high - inodes >= TRIM_INODES) {
		malloc_trim(0);
		inodes_high = inodes;
	}
	return sleep_ms < 10 ? 10 : sleep_ms;
}

static void *hk_main(void *arg)
{
	struct timespec ts;
	long long ms;

	while (!stopping) {
		if (hup_pending) {
			hup_pending = 0;
			if (hup_fn)
				hup_fn(hup_arg);
		}
		ms = tick();
		/* On the monotonic clock: a step back of the wall clock
		 * must not put the next tick off by as much. */
		mono_deadline(ms, &ts);
		while (sem_clockwait(&sem, CLOCK_MONOTONIC, &ts) &&
		       errno == EINTR)
			;
	}
	return NULL;
}

int hk_start(struct fs *fs, void (*on_hup)(void *arg), void *arg)
{
	int ret;

	hk_fs = fs;
	hup_fn = on_hup;
	hup_arg = arg;
	stopping = 0;
	if (sem_init(&sem, 0, 0))
		return -errno;
	ret = pthread_create(&thread, NULL, hk_main, NULL);
	if (ret)
		return -ret;
	started = true;
	return 0;
}

void hk_stop(void)
{
	if (!started)
		return;
	stopping = 1;
	sem_post(&sem);
	pthread_join(thread, NULL);
	sem_destroy(&sem);
	started = false;
}

void hk_wake(void)
{
	if (started)
		sem_post(&sem);
}

void hk_hup(void)
{
	hup_pending = 1;
	if (started)
		sem_post(&sem);
}
