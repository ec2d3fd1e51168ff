// SPDX-License-Identifier: MIT
/*
 * The token engine (backend/token.c) without a server: the calls it makes
 * out (api_token, api_whoami, zen_user_id, ...) and the wall clock (time)
 * are replaced at link time (-Wl,--wrap, tests/meson.build) by the fakes
 * below.  The fake clock runs years ahead of the real one, so the engine's
 * thread, which sleeps until a wall-clock time, wakes only when kicked.
 *
 * What is checked: a token is refreshed when a third of its lifetime is
 * left (less a twelfth of jitter), and the thread does so when that time
 * comes; a failed refresh is retried after a capped exponential backoff,
 * or after what the server's Retry-After asks, the token still served
 * until TOKEN_MARGIN before it expires; a success resets the backoff; one
 * mint however many callers ask at once, its failure too.
 */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/api.h"
#include "backend/secret.h"
#include "backend/token.h"
#include "backend/util.h"
#include "backend/zenml.h"

#include "tests/unit/check.h"

#define LIFE 3600 /* token_lifetime asked, and given */

/* ---- the fakes ------------------------------------------------------- */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static time_t now_s; /* the fake wall clock */
static int n_token; /* api_token calls */
static int fail; /* -errno: api_token fails so */
static int fail_status; /* and the server's status (0: no answer) */
static long fail_retry_after;
static bool holding, held; /* api_token waits until !holding */
static int n_waits; /* token.c's pthread_cond_wait calls */
static int n_changes; /* on_change calls */

time_t __wrap_time(time_t *t);
int __wrap_api_token(struct zen *z, unsigned lifetime, struct secret **out,
		     struct zen_err *e);
bool __wrap_api_token_lifetime_asked(struct zen *z);
int __wrap_api_whoami(struct zen *z, struct zrec **out, struct zen_err *e);
void __wrap_zen_user_id(struct zen *z, char *id, size_t idsz);
int __wrap_zen_probe(struct zen *z);
const char *__wrap_zen_url(const struct zen *z);
enum cred_kind __wrap_zen_cred_kind(struct zen *z);
int __wrap_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
int __real_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);

static time_t now(void)
{
	time_t t;

	pthread_mutex_lock(&lock);
	t = now_s;
	pthread_mutex_unlock(&lock);
	return t;
}

static void set_now(time_t t)
{
	pthread_mutex_lock(&lock);
	now_s = t;
	pthread_mutex_unlock(&lock);
}

time_t __wrap_time(time_t *t)
{
	time_t v = now();

	if (t)
		*t = v;
	return v;
}

static void b64(const char *in, char *out, size_t size)
{
	sodium_bin2base64(out, size, (const unsigned char *)in, strlen(in),
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int __wrap_api_token(struct zen *z, unsigned lifetime, struct secret **out,
		     struct zen_err *e)
{
	char hdr[128], pay[256], claims[192], jwt[512];
	int ret;

	pthread_mutex_lock(&lock);
	n_token++;
	held = true;
	pthread_cond_broadcast(&cond);
	while (holding)
		__real_pthread_cond_wait(&cond, &lock);
	ret = fail;
	if (ret) {
		zen_err_set(e, "api token: server said %d", fail_status);
		e->status = fail_status;
		e->retry_after = fail_retry_after;
	}
	snprintf(claims, sizeof(claims),
		 "{\"sub\":\"me\",\"iat\":%lld,\"exp\":%lld}", (long long)now_s,
		 (long long)now_s + lifetime);
	pthread_mutex_unlock(&lock);
	if (ret)
		return ret;
	b64("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", hdr, sizeof(hdr));
	b64(claims, pay, sizeof(pay));
	snprintf(jwt, sizeof(jwt), "%s.%s.c2ln", hdr, pay);
	*out = secret_new(jwt, strlen(jwt));
	return *out ? 0 : -ENOMEM;
}

bool __wrap_api_token_lifetime_asked(struct zen *z)
{
	return true;
}

int __wrap_api_whoami(struct zen *z, struct zrec **out, struct zen_err *e)
{
	return 0;
}

void __wrap_zen_user_id(struct zen *z, char *id, size_t idsz)
{
	snprintf(id, idsz, "me");
}

int __wrap_zen_probe(struct zen *z)
{
	return 0;
}

const char *__wrap_zen_url(const struct zen *z)
{
	return "http://zenml.invalid";
}

enum cred_kind __wrap_zen_cred_kind(struct zen *z)
{
	return (enum cred_kind)0;
}

/* token.c waits here only for a mint in flight (token_engine_mint). */
int __wrap_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
	pthread_mutex_lock(&lock);
	n_waits++;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	return __real_pthread_cond_wait(c, m);
}

static void on_change(void *arg)
{
	pthread_mutex_lock(&lock);
	n_changes++;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

/* ---- helpers ---------------------------------------------------------- */

static struct token_engine *engine(void)
{
	struct token_opts o = { .lifetime = LIFE, .on_change = on_change };

	pthread_mutex_lock(&lock);
	fail = fail_status = 0;
	fail_retry_after = 0;
	n_token = n_waits = n_changes = 0;
	pthread_mutex_unlock(&lock);
	return token_engine_new(NULL, &o);
}

/* A time line of the status file ("-": none, 0). */
static time_t status_time(struct token_engine *te, const char *key)
{
	char buf[2048], *p;
	time_t t = 0;

	token_engine_status(te, buf, sizeof(buf));
	p = strstr(buf, key);
	if (!p)
		return 0;
	p += strlen(key) + 2;
	*strchr(p, '\n') = '\0';
	if (time_parse_iso(p, &t))
		return 0;
	return t;
}

static bool status_has(struct token_engine *te, const char *line)
{
	char buf[2048];

	token_engine_status(te, buf, sizeof(buf));
	return strstr(buf, line) != NULL;
}

/* Is the planned refresh as a token minted at t asks (a third of LIFE
 * left, up to a twelfth more early)? */
static bool planned_for(struct token_engine *te, time_t t)
{
	time_t next = status_time(te, "next_refresh_at");

	return next >= t + LIFE - LIFE / 3 - LIFE / 12 &&
	       next <= t + LIFE - LIFE / 3;
}

static void wait_changes(int n)
{
	pthread_mutex_lock(&lock);
	while (n_changes < n)
		__real_pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
}

/* ---- the schedule ----------------------------------------------------- */

static void schedule(void)
{
	struct token_engine *te = engine();
	struct zen_err e = { 0 };
	time_t t0 = now(), next;

	CHECK(token_engine_state(te) == TS_NONE);
	CHECK(token_engine_mint(te, &e) == 0);
	CHECK(n_token == 1 && n_changes == 1);
	CHECK(token_engine_state(te) == TS_OK);
	CHECK(status_time(te, "token_expires_at") == t0 + LIFE);
	CHECK(planned_for(te, t0));

	/* The thread refreshes when that time comes (woken by a kick: its
	 * real-time sleep would last years). */
	CHECK(token_engine_start(te) == 0);
	next = status_time(te, "next_refresh_at");
	set_now(next);
	token_engine_kick(te);
	wait_changes(2);
	CHECK(n_token == 2);
	CHECK(status_time(te, "token_expires_at") == next + LIFE);
	CHECK(planned_for(te, next));
	CHECK(status_has(te, "refreshes: 2\n"));
	token_engine_free(te);
}

/* ---- backoff ---------------------------------------------------------- */

/* After failure number n (no Retry-After): at most the step, 1 s doubled
 * per failure up to 60 s, and at least half of it (the delay is drawn in
 * the step's upper half, rounded up to whole seconds). */
static bool backed_off(struct token_engine *te, unsigned n)
{
	unsigned long step = 1000;
	time_t next = status_time(te, "next_refresh_at") - now();

	for (unsigned i = 1; i < n && step < 60000; i++)
		step *= 2;
	if (step > 60000)
		step = 60000;
	return next >= 1 && next >= (time_t)(step / 2000) &&
	       next <= (time_t)((step + 999) / 1000);
}

static void backoff(void)
{
	struct token_engine *te = engine();
	struct zen_err e = { 0 };
	struct secret *tok = NULL;
	time_t t0 = now();
	int64_t exp;

	CHECK(token_engine_mint(te, &e) == 0);
	fail = -EIO;
	fail_status = 503;
	for (unsigned n = 1; n <= 9; n++) {
		set_now(now() + 1);
		CHECK(token_engine_mint(te, &e) == -EIO);
		CHECK(e.status == 503);
		CHECK(backed_off(te, n));
		CHECK(token_engine_state(te) == TS_DEGRADED);
	}
	CHECK(status_has(te, "refresh_failures: 9\n"));
	/* the step is capped */
	CHECK(status_time(te, "next_refresh_at") - now() <= 60);

	/* Retry-After: at least what the server asked, the backoff's
	 * step at most when that is longer (it is 60 s by now). */
	fail_retry_after = 30;
	CHECK(token_engine_mint(te, &e) == -EIO);
	CHECK(status_time(te, "next_refresh_at") - now() >= 30);
	CHECK(status_time(te, "next_refresh_at") - now() <= 60);

	/* Still served while refreshes fail, until TOKEN_MARGIN before
	 * it expires. */
	set_now(t0 + LIFE - TOKEN_MARGIN - 1);
	CHECK(token_engine_get(te, &tok, &exp) == 0);
	CHECK(exp == t0 + LIFE);
	secret_unref(tok);
	tok = NULL;
	set_now(t0 + LIFE - TOKEN_MARGIN);
	CHECK(token_engine_get(te, &tok, &exp) == -EKEYEXPIRED);
	CHECK(!tok);

	/* A success resets it all: a new token, the usual plan. */
	fail = 0;
	fail_retry_after = 0;
	CHECK(token_engine_mint(te, &e) == 0);
	CHECK(token_engine_state(te) == TS_OK);
	CHECK(planned_for(te, now()));
	fail = -EIO;
	CHECK(token_engine_mint(te, &e) == -EIO);
	CHECK(backed_off(te, 1));
	/* Retry-After after one failure: what the server asked, and a
	 * quarter more at most. */
	fail_retry_after = 30;
	CHECK(token_engine_mint(te, &e) == -EIO);
	CHECK(status_time(te, "next_refresh_at") - now() >= 30);
	CHECK(status_time(te, "next_refresh_at") - now() <= 38);
	token_engine_free(te);
}

/* ---- one mint for every caller ------------------------------------------ */

#define NTHREADS 6

struct minter {
	pthread_t t;
	struct token_engine *te;
	int ret;
};

static void *mint(void *arg)
{
	struct minter *m = arg;
	struct zen_err e = { 0 };

	m->ret = token_engine_mint(m->te, &e);
	return NULL;
}

/*
 * NTHREADS callers at once: the first one's request is held until every
 * other waits for it (token.c's pthread_cond_wait, entered with the
 * engine's lock held, which the mint needs to land), then let go.
 */
static void single_flight(int with)
{
	struct token_engine *te = engine();
	struct minter m[NTHREADS];

	fail = with;
	fail_status = with ? 502 : 0;
	pthread_mutex_lock(&lock);
	holding = true;
	held = false;
	pthread_mutex_unlock(&lock);
	m[0].te = te;
	pthread_create(&m[0].t, NULL, mint, &m[0]);
	pthread_mutex_lock(&lock);
	while (!held)
		__real_pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
	for (int i = 1; i < NTHREADS; i++) {
		m[i].te = te;
		pthread_create(&m[i].t, NULL, mint, &m[i]);
	}
	pthread_mutex_lock(&lock);
	while (n_waits < NTHREADS - 1)
		__real_pthread_cond_wait(&cond, &lock);
	holding = false;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(m[i].t, NULL);
		CHECK(m[i].ret == with);
	}
	CHECK(n_token == 1);
	CHECK(status_has(te,
			 with ? "refresh_failures: 1\n" : "refreshes: 1\n"));
	token_engine_free(te);
}

int main(void)
{
	struct timespec ts;

	if (sodium_init() < 0)
		return 1;
	/* years ahead of the real clock (see above); time() is the fake */
	clock_gettime(CLOCK_REALTIME, &ts);
	set_now(ts.tv_sec + 10 * 365 * 86400L);
	schedule();
	backoff();
	single_flight(0);
	single_flight(-EIO);
	return CHECK_DONE();
}
