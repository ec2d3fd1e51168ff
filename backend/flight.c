// SPDX-License-Identifier: MIT
#include "backend/flight.h"

#include <errno.h>
#include <time.h>

#include "backend/banned.h" /* always the last include */

static bool stopped(const bool *stop)
{
	return stop && *stop;
}

int flight_wait(struct flight *f, unsigned long since, pthread_mutex_t *lock,
		pthread_cond_t *cond, const bool *stop, int *ret)
{
	while (f->landed == since && !stopped(stop))
		pthread_cond_wait(cond, lock);
	*ret = f->landed == since ? -ECANCELED : f->ret;
	return f->landed == since ? -ECANCELED : 0;
}

bool flight_join(struct flight *f, pthread_mutex_t *lock, pthread_cond_t *cond,
		 const bool *stop, int *ret)
{
	if (!f->busy) {
		f->busy = true;
		return false;
	}
	flight_wait(f, f->landed, lock, cond, stop, ret);
	return true;
}

void flight_land(struct flight *f, pthread_cond_t *cond, int ret)
{
	f->busy = false;
	f->ret = ret;
	f->landed++;
	pthread_cond_broadcast(cond);
}

void cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}
