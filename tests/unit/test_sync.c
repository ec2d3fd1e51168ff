// SPDX-License-Identifier: MIT
/*
 * Unit tests for the helpers threads share (backend/util.h: the hash, the
 * reference count, the monotonic deadline; backend/flight.h: one call in
 * flight, condition variables on CLOCK_MONOTONIC).  The threads meet
 * through the code under test and a counter, never through a sleep.
 */
#include "backend/flight.h"
#include "backend/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tests/unit/check.h"

static void test_hash(void)
{
	/* the published FNV-1a 64-bit test vectors */
	CHECK(hash_fnv1a("", 0) == 0xcbf29ce484222325ULL);
	CHECK(hash_fnv1a("a", 1) == 0xaf63dc4c8601ec8cULL);
	CHECK(hash_fnv1a("foobar", 6) == 0x85944171f73967e8ULL);
	CHECK(hash_str("foobar") == hash_fnv1a("foobar", 6));
	CHECK(hash_str("") == hash_fnv1a("", 0));
	/* bytes past n do not count; a NUL inside does */
	CHECK(hash_fnv1a("foobarX", 6) == hash_fnv1a("foobar", 6));
	CHECK(hash_fnv1a("a\0b", 3) != hash_fnv1a("a\0c", 3));
	/* high bytes are taken unsigned */
	CHECK(hash_fnv1a("\xff", 1) ==
	      ((0xcbf29ce484222325ULL ^ 0xff) * 1099511628211ULL));
}

#define REF_THREADS 4
#define REF_ROUNDS 200000

static struct ref shared_ref;

static void *ref_worker(void *arg)
{
	bool last = false;

	for (int i = 0; i < REF_ROUNDS; i++) {
		ref_get(&shared_ref);
		last = last || ref_put(&shared_ref);
	}
	*(bool *)arg = last;
	return NULL;
}

static void test_ref(void)
{
	pthread_t t[REF_THREADS];
	bool last[REF_THREADS];
	struct ref r;

	ref_init(&r);
	ref_get(&r);
	CHECK(!ref_put(&r));
	CHECK(ref_put(&r));

	/* gets and puts from several threads at once: none of them is
	 * ever the last while the creator's reference stands */
	ref_init(&shared_ref);
	for (int i = 0; i < REF_THREADS; i++)
		pthread_create(&t[i], NULL, ref_worker, &last[i]);
	for (int i = 0; i < REF_THREADS; i++) {
		pthread_join(t[i], NULL);
		CHECK(!last[i]);
	}
	CHECK(shared_ref.n == 1);
	CHECK(ref_put(&shared_ref));
}

/* ---- one call in flight ------------------------------------------------ */

#define FLIGHT_THREADS 8

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct flight f;
	bool stop;
	int arrived; /* callers that went through flight_join */
	int want; /* the call returns once this many arrived */
	int calls; /* calls made */
	int result; /* what the next call returns */
} fl = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* The call: it lasts until every caller has arrived, so that each of
 * them finds it in flight. */
static int slow_call(void)
{
	int ret;

	pthread_mutex_lock(&fl.lock);
	fl.calls++;
	while (fl.arrived < fl.want)
		pthread_cond_wait(&fl.cond, &fl.lock);
	ret = fl.result;
	pthread_mutex_unlock(&fl.lock);
	return ret;
}

static void *flight_caller(void *arg)
{
	int *out = arg, ret;

	pthread_mutex_lock(&fl.lock);
	fl.arrived++;
	pthread_cond_broadcast(&fl.cond);
	if (flight_join(&fl.f, &fl.lock, &fl.cond, &fl.stop, &ret)) {
		*out = ret;
		pthread_mutex_unlock(&fl.lock);
		return NULL;
	}
	pthread_mutex_unlock(&fl.lock);
	ret = slow_call();
	pthread_mutex_lock(&fl.lock);
	flight_land(&fl.f, &fl.cond, ret);
	pthread_mutex_unlock(&fl.lock);
	*out = ret;
	return NULL;
}

static void flight_round(int result, int *calls)
{
	pthread_t t[FLIGHT_THREADS];
	int got[FLIGHT_THREADS];
	bool same = true;

	pthread_mutex_lock(&fl.lock);
	fl.arrived = 0;
	fl.want = FLIGHT_THREADS;
	fl.calls = 0;
	fl.result = result;
	pthread_mutex_unlock(&fl.lock);
	for (int i = 0; i < FLIGHT_THREADS; i++)
		pthread_create(&t[i], NULL, flight_caller, &got[i]);
	for (int i = 0; i < FLIGHT_THREADS; i++) {
		pthread_join(t[i], NULL);
		same = same && got[i] == result;
	}
	CHECK(same);
	*calls = fl.calls;
}

/* A caller that stops waiting when the owner stops. */
static void *stopped_caller(void *arg)
{
	int *out = arg, ret = 0;

	pthread_mutex_lock(&fl.lock);
	fl.arrived++;
	pthread_cond_broadcast(&fl.cond);
	CHECK(flight_join(&fl.f, &fl.lock, &fl.cond, &fl.stop, &ret));
	pthread_mutex_unlock(&fl.lock);
	*out = ret;
	return NULL;
}

static void test_flight(void)
{
	unsigned long since;
	pthread_t t;
	int calls, ret = 0;

	pthread_mutex_init(&fl.lock, NULL);
	cond_init_mono(&fl.cond);

	/* every caller that came while the call was in flight shares it:
	 * one call, one result for all, an error too */
	flight_round(42, &calls);
	CHECK(calls == 1);
	CHECK(fl.f.landed == 1 && !fl.f.busy && fl.f.ret == 42);
	flight_round(-EIO, &calls);
	CHECK(calls == 1);
	CHECK(fl.f.landed == 2 && fl.f.ret == -EIO);

	/* alone: the caller makes the call */
	pthread_mutex_lock(&fl.lock);
	CHECK(!flight_join(&fl.f, &fl.lock, &fl.cond, NULL, &ret));
	CHECK(fl.f.busy);
	since = fl.f.landed;

	/* a waiter leaves, cancelled, when the owner stops; the call in
	 * flight is still the caller's to land */
	fl.arrived = 0;
	pthread_mutex_unlock(&fl.lock);
	pthread_create(&t, NULL, stopped_caller, &ret);
	pthread_mutex_lock(&fl.lock);
	while (fl.arrived < 1)
		pthread_cond_wait(&fl.cond, &fl.lock);
	fl.stop = true;
	pthread_cond_broadcast(&fl.cond);
	pthread_mutex_unlock(&fl.lock);
	pthread_join(t, NULL);
	CHECK(ret == -ECANCELED);
	pthread_mutex_lock(&fl.lock);
	CHECK(fl.f.busy && fl.f.landed == since);
	flight_land(&fl.f, &fl.cond, 7);
	CHECK(!fl.f.busy && fl.f.landed == since + 1);

	/* waiting for a landing after one already seen: stopped, it does
	 * not wait at all; a landing already there is taken at once */
	ret = 0;
	CHECK(flight_wait(&fl.f, fl.f.landed, &fl.lock, &fl.cond, &fl.stop,
			  &ret) == -ECANCELED);
	CHECK(ret == -ECANCELED);
	CHECK(flight_wait(&fl.f, since, &fl.lock, &fl.cond, &fl.stop, &ret) ==
	      0);
	CHECK(ret == 7);
	fl.stop = false;
	pthread_mutex_unlock(&fl.lock);
}

/* ---- deadlines on the monotonic clock ---------------------------------- */

static void test_deadline(void)
{
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	struct timespec ts;
	pthread_cond_t c;
	long long until;
	int ret;

	/* A condvar set to CLOCK_MONOTONIC waits out a deadline from
	 * mono_deadline(): not less (a condvar on the wall clock would take
	 * it as long past and return at once). */
	cond_init_mono(&c);
	pthread_mutex_lock(&m);
	until = mono_ms() + 30;
	mono_deadline(30, &ts);
	do
		ret = pthread_cond_timedwait(&c, &m, &ts);
	while (ret == 0);
	CHECK(ret == ETIMEDOUT);
	CHECK(mono_ms() >= until);
	/* a deadline in the past ends the wait at once */
	mono_deadline(-1000, &ts);
	CHECK(pthread_cond_timedwait(&c, &m, &ts) == ETIMEDOUT);
	pthread_mutex_unlock(&m);
	pthread_cond_destroy(&c);
}

int main(void)
{
	test_hash();
	test_ref();
	test_flight();
	test_deadline();
	return CHECK_DONE();
}
