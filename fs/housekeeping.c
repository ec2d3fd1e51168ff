// SPDX-License-Identifier: MIT
#define _GNU_SOURCE /* sem_clockwait */
#include "fs/housekeeping.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
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

/* The housekeeping of one mount (fs->hk). */
struct hk {
	struct fs *fs;
	void (*hup_fn)(void *arg);
	void *hup_arg;
	pthread_t thread;
	bool started;
	sem_t sem; /* posted from signal handlers too */
	volatile sig_atomic_t hup_pending, stopping;
	size_t inodes_high; /* the most inodes seen since the last trim */
};

/* A new key value's page may be in the kernel: drop it. */
static void key_gone(const char *account, const char *key, void *arg)
{
	struct fs *fs = arg;
	const char *const names[] = { account, key };
	char path[PATH_MAX];
	uint64_t ino;

	if (tree_kind_path(ZK_KEY, "key", names, 2, path, sizeof(path)))
		return;
	ino = itab_ino_of(fs->itab, path);
	if (ino) {
		itab_snap_stale(fs->itab, ino);
		notify_inval(fs->meta, ino);
	}
}

/* Do what is due; returns how long to sleep (ms). */
static long long tick(struct hk *hk)
{
	struct fs *fs = hk->fs;
	long long now = mono_ms(), sleep_ms, due;
	size_t freed, inodes;
	uint64_t seq;

	sleep_ms = (fs->meta_ttl ? fs->meta_ttl : 1) * 1000LL;
	if (sleep_ms > 60000)
		sleep_ms = 60000;
	due = newkey_expire(fs->newkeys, fs->key_window, key_gone, fs);
	if (due && due - now < sleep_ms)
		sleep_ms = due - now;
	seq = notify_last(fs->meta);
	freed = store_sweep(fs->store);
	/* Wake when the next thing cached expires: a big listing goes,
	 * and its memory with it, within moments of its meta_ttl. */
	due = store_next_expiry(fs->store);
	if (due && due + SWEEP_SLACK_MS - now < sleep_ms)
		sleep_ms = due + SWEEP_SLACK_MS - now;
	/* A swept listing dropped the kernel's entries of its names
	 * (ops_object_gone): the kernel forgets their inodes, and the
	 * table frees them, just after. */
	if (notify_last(fs->meta) != seq && sleep_ms > FORGET_WAIT_MS)
		sleep_ms = FORGET_WAIT_MS;
	inodes = itab_count(fs->itab);
	if (inodes > hk->inodes_high)
		hk->inodes_high = inodes;
	if (freed >= TRIM_MIN || hk->inodes_high - inodes >= TRIM_INODES) {
		malloc_trim(0);
		hk->inodes_high = inodes;
	}
	return sleep_ms < 10 ? 10 : sleep_ms;
}

static void *hk_main(void *arg)
{
	struct hk *hk = arg;
	struct timespec ts;
	long long ms;

	while (!hk->stopping) {
		if (hk->hup_pending) {
			hk->hup_pending = 0;
			if (hk->hup_fn)
				hk->hup_fn(hk->hup_arg);
		}
		ms = tick(hk);
		/* On the monotonic clock: a step back of the wall clock
		 * must not put the next tick off by as much. */
		mono_deadline(ms, &ts);
		while (sem_clockwait(&hk->sem, CLOCK_MONOTONIC, &ts) &&
		       errno == EINTR)
			;
	}
	return NULL;
}

struct hk *hk_new(struct fs *fs)
{
	struct hk *hk = calloc(1, sizeof(*hk));

	if (!hk)
		return NULL;
	if (sem_init(&hk->sem, 0, 0)) {
		free(hk);
		return NULL;
	}
	hk->fs = fs;
	return hk;
}

void hk_free(struct hk *hk)
{
	if (!hk)
		return;
	hk_stop(hk);
	sem_destroy(&hk->sem);
	free(hk);
}

int hk_start(struct hk *hk, void (*on_hup)(void *arg), void *arg)
{
	int ret;

	hk->hup_fn = on_hup;
	hk->hup_arg = arg;
	hk->stopping = 0;
	ret = pthread_create(&hk->thread, NULL, hk_main, hk);
	if (ret)
		return -ret;
	__atomic_store_n(&hk->started, true, __ATOMIC_RELEASE);
	return 0;
}

void hk_stop(struct hk *hk)
{
	if (!hk->started)
		return;
	hk->stopping = 1;
	sem_post(&hk->sem);
	pthread_join(hk->thread, NULL);
	__atomic_store_n(&hk->started, false, __ATOMIC_RELEASE);
}

void hk_wake(struct hk *hk)
{
	sem_post(&hk->sem);
}

void hk_hup(struct hk *hk)
{
	hk->hup_pending = 1;
	sem_post(&hk->sem);
}
