/* SPDX-License-Identifier: MIT */
/*
 * Threads waiting on each other: one call in flight whose result every
 * caller that arrives meanwhile shares (a login, a mint, a fetch), and
 * condition variables on CLOCK_MONOTONIC, so a timed wait is moved neither
 * way by a step of the wall clock (deadlines: mono_deadline() in util.h).
 *
 * A flight has no lock or condition variable of its own: it lives inside
 * the caller's object, under that object's lock, and lands with a
 * broadcast on that object's condition variable (shared with other
 * waiters, which then recheck what they wait for).  Usage, lock held:
 *
 *	if (flight_join(&o->f, &o->lock, &o->cond, &o->stop, &ret)) {
 *		... ret (and what the caller kept beside it) is the result
 *	} else {
 *		unlock; ret = the call; lock;
 *		... keep what the waiters need beside it;
 *		flight_land(&o->f, &o->cond, ret);
 *	}
 */
#ifndef ZENMLFS_FLIGHT_H
#define ZENMLFS_FLIGHT_H

#include <pthread.h>
#include <stdbool.h>

struct flight {
	bool busy; /* a call is in flight */
	unsigned long landed; /* calls ended so far */
	int ret; /* the last call's result */
};

/*
 * Caller holds lock.  When a call is in flight, wait for it to land and
 * return true with its result in *ret (-ECANCELED when *stop, if stop is
 * not NULL, turned true first); else mark a call in flight and return
 * false: the caller makes it, then calls flight_land().
 */
bool flight_join(struct flight *f, pthread_mutex_t *lock, pthread_cond_t *cond,
		 const bool *stop, int *ret);

/*
 * Caller holds lock.  Wait until a call that lands after since (a value of
 * f->landed read under the same lock) has landed: 0 and its result in
 * *ret, or -ECANCELED (in *ret too) when *stop (if stop is not NULL)
 * turned true first; f->landed == since tells that case from a call that
 * returned -ECANCELED.
 * For a caller that asked another thread to make the call.
 */
int flight_wait(struct flight *f, unsigned long since, pthread_mutex_t *lock,
		pthread_cond_t *cond, const bool *stop, int *ret);

/* Caller holds lock.  The call in flight ended with ret: wake its waiters
 * (a broadcast on cond). */
void flight_land(struct flight *f, pthread_cond_t *cond, int ret);

/* Initialize c to wait on CLOCK_MONOTONIC (pthread_cond_timedwait takes a
 * deadline from mono_deadline()). */
void cond_init_mono(pthread_cond_t *c);

#endif
