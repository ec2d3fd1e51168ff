// SPDX-License-Identifier: MIT
#define _GNU_SOURCE /* pthread_setname_np */
#include "fs/defer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/banned.h" /* always the last include */

/* lock protects the queue and the flags; wake wakes the threads. */
struct defer {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct defer_job *head, **tail;
	defer_fn *run, *cancel;
	bool stopping;
	unsigned want, nthreads;
	pthread_t threads[DEFER_THREADS_MAX];
	char name[16];
};

static __thread bool on_pool;

struct defer *defer_new(const char *name, unsigned threads, defer_fn *run,
			defer_fn *cancel)
{
	struct defer *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->want = threads < DEFER_THREADS_MAX ? threads : DEFER_THREADS_MAX;
	snprintf(d->name, sizeof(d->name), "%s", name);
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->wake, NULL);
	d->tail = &d->head;
	d->run = run;
	d->cancel = cancel;
	return d;
}

bool defer_on_pool(void)
{
	return on_pool;
}

static void *defer_main(void *arg)
{
	struct defer *d = arg;
	struct defer_job *j;

	on_pool = true;
	pthread_mutex_lock(&d->lock);
	for (;;) {
		while (!d->head && !d->stopping)
			pthread_cond_wait(&d->wake, &d->lock);
		if (d->stopping)
			break;
		j = d->head;
		d->head = j->next;
		if (!d->head)
			d->tail = &d->head;
		pthread_mutex_unlock(&d->lock);
		d->run(j);
		pthread_mutex_lock(&d->lock);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

int defer_start(struct defer *d)
{
	int ret;

	for (unsigned i = 0; i < d->want; i++) {
		ret = pthread_create(&d->threads[i], NULL, defer_main, d);
		if (ret)
			return -ret;
		pthread_setname_np(d->threads[i], d->name);
		d->nthreads++;
	}
	return 0;
}

bool defer_push(struct defer *d, struct defer_job *job)
{
	pthread_mutex_lock(&d->lock);
	if (d->stopping || !d->nthreads) {
		pthread_mutex_unlock(&d->lock);
		return false;
	}
	job->next = NULL;
	*d->tail = job;
	d->tail = &job->next;
	pthread_cond_signal(&d->wake);
	pthread_mutex_unlock(&d->lock);
	return true;
}

void defer_stop(struct defer *d)
{
	struct defer_job *j, *next;

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	d->stopping = true;
	j = d->head;
	d->head = NULL;
	d->tail = &d->head;
	pthread_cond_broadcast(&d->wake);
	pthread_mutex_unlock(&d->lock);
	for (; j; j = next) {
		next = j->next;
		d->cancel(j);
	}
	for (unsigned i = 0; i < d->nthreads; i++)
		pthread_join(d->threads[i], NULL);
	d->nthreads = 0;
}

void defer_free(struct defer *d)
{
	if (!d)
		return;
	defer_stop(d);
	pthread_cond_destroy(&d->wake);
	pthread_mutex_destroy(&d->lock);
	free(d);
}
