// SPDX-License-Identifier: MIT
#include "backend/token.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/api.h"
#include "backend/flight.h"
#include "backend/log.h"
#include "backend/secret.h"
#include "backend/util.h"
#include "backend/zenml.h"

#include "backend/banned.h" /* always the last include */

/* A failed refresh or check is retried from 1 s, doubling up to a minute,
 * the wait drawn in the upper half of the bound (backoff_ms(), JITTER_HALF:
 * spread, and still doubling), never sooner than a Retry-After. */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
/* While the token is expired, whether the server is back is asked (GET
 * /health, no auth, no database) from 2 s on, the bound doubling up to
 * 14 s (probe_backoff()): a node whose server is down asks about every
 * 10 s, never in step, and serves within 15 s of the server's return. */
#define PROBE_MIN_MS 2000
#define PROBE_MAX_MS 14000
/* Where the server rejects a revoked credential's tokens itself (a minted
 * token names its API key or device), the check buys only an earlier
 * "unauthenticated" in status: the default interval grows to this. */
#define BOUND_CHECK 3600
/* Refresh early enough that a retry or two fit before the margin. */
#define REFRESH_MIN_LEFT (TOKEN_MARGIN + 15)
/* Never plan the next refresh sooner than this after a mint. */
#define REFRESH_FLOOR 10
/* The least a minted token must have left to be taken: the margin, the
 * floor, and a few seconds for a retry before it stops being served.  A
 * server whose tokens are shorter cannot be served from: each is refused
 * (a failed refresh, with backoff), not refreshed every second. */
#define TOKEN_SHORTEST (TOKEN_MARGIN + REFRESH_FLOOR + 5)
/* The schedule is in wall-clock seconds (a token's "exp" is), the waits
 * for it on CLOCK_MONOTONIC: the thread looks at the wall clock at least
 * this often (s), so a clock stepped or a machine resumed from suspend is
 * noticed within it. */
#define WALL_LOOK 60
/* A refresh asked this soon after a failed mint shares its failure. */
#define REFRESH_SHARE_MS 1000
/* A lifetime this far from the one asked for is worth a warning. */
#define LIFETIME_SLACK 60

struct token_engine {
	struct zen *zen;
	struct token_opts opts;
	pthread_t thread;
	bool started;

	/* lock protects everything below; cond wakes the thread and the
	 * callers waiting for a mint in flight. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop, kick;
	struct secret *tok;
	int64_t exp;
	time_t minted_at; /* 0: never */
	time_t next_refresh; /* 0: none planned */
	time_t next_check; /* 0: none planned (nobody read the token) */
	time_t last_check;
	bool used; /* read since the last check */
	time_t next_probe; /* 0: not probing */
	unsigned failures; /* consecutive, for backoff */
	unsigned probe_failures; /* consecutive, for the probe's backoff */
	unsigned long refreshes, refresh_failures, checks, check_failures;
	unsigned long probes, retries;
	unsigned long fail_network, fail_server, fail_auth, fail_token;
	time_t last_ok; /* last successful mint */
	bool bound; /* the server binds its tokens to their credential */
	enum token_state state;
	int auth_err; /* with TS_UNAUTH */
	bool announced_expiry; /* on_change sent for the current expiry */
	char last_error[512];
	time_t last_error_at;
	long long lifetime; /* of the current token (0: no exp) */
	unsigned server_max; /* the most the server allows (0: not said) */
	bool warned_lifetime;
	/* one mint at a time; the others wait for its result.  Once the
	 * thread runs, every mint is made on it (mint_wanted asks it): the
	 * secrets a mint leaves on a stack, and the stack it wipes, are
	 * that thread's alone, not one more of every FUSE worker's. */
	struct flight mint;
	bool mint_wanted;
	struct zen_err mint_err; /* the last mint's, beside mint.ret */
	long long mint_end; /* CLOCK_MONOTONIC ms */
};

struct token_engine *token_engine_new(struct zen *z,
				      const struct token_opts *opts)
{
	struct token_engine *te = calloc(1, sizeof(*te));

	if (!te)
		return NULL;
	te->zen = z;
	te->opts = *opts;
	pthread_mutex_init(&te->lock, NULL);
	cond_init_mono(&te->cond);
	return te;
}

void token_engine_free(struct token_engine *te)
{
	if (!te)
		return;
	token_engine_stop(te);
	secret_unref(te->tok);
	free(te);
}

static void changed(struct token_engine *te)
{
	if (te->opts.on_change)
		te->opts.on_change(te->opts.arg);
}

static bool is_auth_error(int err)
{
	return err == -EKEYREVOKED || err == -EKEYREJECTED ||
	       err == -EKEYEXPIRED || err == -ENOKEY;
}

/* When to refresh a token minted at t with expiry exp: when a third of
 * its lifetime is left, plus up to a twelfth of jitter so that nodes
 * sharing a server do not refresh in step; at least REFRESH_FLOOR after
 * t (validate() took it with TOKEN_SHORTEST left, so retries still fit
 * before the margin). */
static time_t plan_refresh(time_t t, int64_t exp)
{
	int64_t life, left;

	if (exp == TOKEN_NO_EXPIRY)
		return 0;
	life = exp - t;
	left = life / 3;
	if (life > 12)
		left += randombytes_uniform((uint32_t)(life / 12) + 1);
	if (left < REFRESH_MIN_LEFT)
		left = REFRESH_MIN_LEFT;
	if (exp - left < t + REFRESH_FLOOR)
		return t + REFRESH_FLOOR;
	return (time_t)(exp - left);
}

/* Seconds until retry number failures (rounded up: at least 1). */
static time_t backoff(unsigned failures, long retry_after)
{
	unsigned long ms = backoff_ms(failures, BACKOFF_MIN_MS, BACKOFF_MAX_MS,
				      JITTER_HALF, retry_after);

	return (time_t)((ms + 999) / 1000);
}

/* Seconds until probe number failures: the probe only notices the
 * server's return, so its wait is drawn in the upper half of its bound
 * (PROBE_MAX_MS at most: a node serves again within that of the return),
 * asking as seldom as that allows, never in step with the others. */
static time_t probe_backoff(unsigned failures)
{
	unsigned long ms = backoff_ms(failures, PROBE_MIN_MS, PROBE_MAX_MS,
				      JITTER_HALF, 0);

	return (time_t)((ms + 999) / 1000);
}

/* Seconds until the next probe of an expired token, never sooner than a
 * Retry-After.  Caller holds lock. */
static time_t expired_wait(struct token_engine *te, long retry_after)
{
	time_t w = probe_backoff(++te->probe_failures);

	return retry_after > w ? (time_t)retry_after : w;
}

/* The check interval in force.  Caller holds lock. */
static unsigned check_interval(struct token_engine *te)
{
	unsigned ci = te->opts.check_interval;

	if (ci && te->bound && te->opts.check_default && ci < BOUND_CHECK)
		ci = BOUND_CHECK;
	return ci;
}

/* Is tok a token we may serve?  Its expiry into *exp. */
static int validate(struct token_engine *te, const struct secret *tok,
		    time_t now, int64_t *exp, struct zen_err *e)
{
	struct jwt_info info;
	char me[64], why[256];

	if (jwt_parse(tok->buf, tok->len, &info)) {
		zen_err_set(e, "api token: the server sent a token that is "
			       "not a JWT");
		return -EIO;
	}
	zen_user_id(te->zen, me, sizeof(me));
	if (jwt_check_minted(&info, me, now, TOKEN_SHORTEST, why,
			     sizeof(why))) {
		zen_err_set(e, "api token: %s", why);
		return -EIO;
	}
	*exp = info.exp;
	/* Does the server tie its tokens to the credential they came from
	 * (ZenML 0.96.3 on)?  Then it refuses them itself once the key or
	 * device is gone. */
	pthread_mutex_lock(&te->lock);
	te->bound = info.api_key_id[0] || info.device_id[0];
	pthread_mutex_unlock(&te->lock);
	return 0;
}

/* Say once what is unusual about the server's tokens. */
static void note_lifetime(struct token_engine *te, int64_t exp, time_t now)
{
	long long got = exp == TOKEN_NO_EXPIRY ? 0 : (long long)(exp - now);
	bool asked = api_token_lifetime_asked(te->zen);
	bool odd = !got ||
		   (asked &&
		    (got < (long long)te->opts.lifetime - LIFETIME_SLACK ||
		     got > (long long)te->opts.lifetime + LIFETIME_SLACK));

	te->lifetime = got;
	if (!odd || te->warned_lifetime)
		return;
	te->warned_lifetime = true;
	if (!got)
		log_warn("the server issues tokens without an expiry ('exp'): "
			 "a leaked token stays valid until its key is "
			 "deactivated");
	else
		log_warn("the server issues tokens of %lld s, not the %u s "
			 "asked for (token_lifetime)",
			 got, te->opts.lifetime);
}

/*
 * A failed mint: backoff, state, log.  Caller holds no lock.  refused: the
 * server answered, with a token (or a lifetime) the daemon cannot serve;
 * it is up, so asking whether it is back (the probe of an expired token)
 * would only mint the same again at every probe: backoff alone.
 */
static void mint_failed(struct token_engine *te, int ret,
			const struct zen_err *e, time_t now, bool refused)
{
	bool announce = false;

	pthread_mutex_lock(&te->lock);
	te->refresh_failures++;
	te->failures++;
	te->retries++;
	if (is_auth_error(ret))
		te->fail_auth++;
	else if (refused)
		te->fail_token++;
	else if (e->status)
		te->fail_server++;
	else
		te->fail_network++;
	if (te->state == TS_EXPIRED && !refused) {
		/* The probe asks whether the server is back; the mint follows
		 * its answer (engine_main), not a schedule of its own. */
		te->next_refresh = 0;
		if (!te->next_probe)
			te->next_probe = now + expired_wait(te, e->retry_after);
	} else {
		te->next_refresh = now + backoff(te->failures, e->retry_after);
	}
	strlcpy_z(te->last_error, e->msg, sizeof(te->last_error));
	te->last_error_at = now;
	if (is_auth_error(ret)) {
		announce = te->state != TS_UNAUTH || te->auth_err != ret;
		te->state = TS_UNAUTH;
		te->auth_err = ret;
	} else if (te->state == TS_OK) {
		te->state = TS_DEGRADED;
	}
	pthread_cond_broadcast(&te->cond);
	pthread_mutex_unlock(&te->lock);
	/* Before the thread runs, the caller reports the failure itself
	 * (on the terminal, once). */
	if (!te->started)
		return;
	if (announce) {
		log_err("the server refused the daemon's credential: %s",
			e->msg);
		changed(te);
	} else {
		log_warn("token refresh failed: %s", e->msg);
	}
}

/* The lifetime to ask for: token_lifetime, or less if the server said
 * it allows no more. */
static unsigned lifetime_now(struct token_engine *te)
{
	unsigned l;

	pthread_mutex_lock(&te->lock);
	l = te->server_max && te->server_max < te->opts.lifetime ?
		    te->server_max :
		    te->opts.lifetime;
	pthread_mutex_unlock(&te->lock);
	return l;
}

/* Did the server refuse the lifetime, saying what it allows?  Then ask
 * for that from now on (said once in the log). */
static bool lower_lifetime(struct token_engine *te, const struct zen_err *e)
{
	unsigned long max;
	bool lower = false;

	if (max_lifetime_of(e->msg, &max) || max < TOKEN_LIFETIME_MIN ||
	    max >= lifetime_now(te))
		return false;
	pthread_mutex_lock(&te->lock);
	if (!te->server_max || max < te->server_max) {
		te->server_max = (unsigned)max;
		lower = true;
	}
	pthread_mutex_unlock(&te->lock);
	if (lower)
		log_warn(
			"the server allows tokens of at most %lu s: asking for "
			"that instead of token_lifetime %u",
			max, te->opts.lifetime);
	return lower;
}

/* Did the server refuse the lifetime, allowing less than the daemon can
 * serve from?  Then say so (*ret -EIO), instead of the server's bare
 * refusal. */
static bool max_too_short(int *ret, struct zen_err *e)
{
	unsigned long max;

	if (*ret != -EINVAL || max_lifetime_of(e->msg, &max) ||
	    max >= TOKEN_LIFETIME_MIN)
		return false;
	*ret = -EIO;
	zen_err_set(e,
		    "api token: the server allows tokens of at most %lu s: "
		    "too short to serve (a token is never served within "
		    "%d s of its expiry; allow %d s or more)",
		    max, TOKEN_MARGIN, TOKEN_LIFETIME_MIN);
	return true;
}

static int do_mint(struct token_engine *te, struct zen_err *e)
{
	struct secret *tok = NULL, *old;
	unsigned failures;
	int64_t exp = 0;
	bool refused;
	time_t now;
	int ret;

	ret = api_token(te->zen, lifetime_now(te), &tok, e);
	if (ret == -EINVAL && lower_lifetime(te, e))
		ret = api_token(te->zen, lifetime_now(te), &tok, e);
	refused = max_too_short(&ret, e);
	now = time(NULL);
	if (!ret) {
		ret = validate(te, tok, now, &exp, e);
		refused = ret != 0;
	}
	sodium_stackzero(STACK_WIPE); /* the token's way here, below us */
	if (ret) {
		secret_unref(tok);
		mint_failed(te, ret, e, now, refused);
		return ret;
	}
	pthread_mutex_lock(&te->lock);
	old = te->tok;
	te->tok = tok;
	te->exp = exp;
	te->minted_at = now;
	te->next_refresh = plan_refresh(now, exp);
	failures = te->failures;
	te->failures = 0;
	te->refreshes++;
	te->last_ok = now;
	te->probe_failures = 0;
	te->state = TS_OK;
	te->auth_err = 0;
	te->next_probe = 0;
	te->announced_expiry = false;
	note_lifetime(te, exp, now);
	pthread_cond_broadcast(&te->cond);
	pthread_mutex_unlock(&te->lock);
	secret_unref(old);
	if (failures)
		log_info("token refreshed again after %u failed attempts",
			 failures);
	log_debug("new token, expires in %lld s",
		  exp == TOKEN_NO_EXPIRY ? -1LL : (long long)(exp - now));
	changed(te);
	return 0;
}

int token_engine_mint(struct token_engine *te, struct zen_err *e)
{
	struct zen_err err = { 0 };
	unsigned long since;
	bool shared = true;
	int ret;

	pthread_mutex_lock(&te->lock);
	since = te->mint.landed;
	if (!te->mint.busy && te->started &&
	    !pthread_equal(pthread_self(), te->thread)) {
		/* Have the thread make one, started after we were asked. */
		te->mint_wanted = true;
		pthread_cond_broadcast(&te->cond);
		flight_wait(&te->mint, since, &te->lock, &te->cond, &te->stop,
			    &ret);
	} else {
		/* Share the mint in flight, or make it. */
		shared = flight_join(&te->mint, &te->lock, &te->cond, &te->stop,
				     &ret);
	}
	if (shared) {
		if (te->mint.landed == since)
			zen_err_set(e, "the daemon is stopping");
		else if (ret && e)
			*e = te->mint_err;
		pthread_mutex_unlock(&te->lock);
		return ret;
	}
	pthread_mutex_unlock(&te->lock);

	ret = do_mint(te, &err);

	pthread_mutex_lock(&te->lock);
	te->mint_err = err;
	te->mint_end = mono_ms();
	flight_land(&te->mint, &te->cond, ret);
	pthread_mutex_unlock(&te->lock);
	if (ret && e)
		*e = err;
	return ret;
}

int token_engine_refresh(struct token_engine *te, struct zen_err *e)
{
	int ret = 0;

	/*
	 * The kernel hands writes to one file over one at a time: writers
	 * that queued behind a mint that just failed arrive a moment after
	 * it.  When the server did not answer, they share that failure
	 * instead of each waiting out a timeout of their own.
	 */
	pthread_mutex_lock(&te->lock);
	if (!te->mint.busy && te->mint.landed &&
	    mono_ms() - te->mint_end < REFRESH_SHARE_MS &&
	    (te->mint.ret == -ETIMEDOUT || te->mint.ret == -ECONNREFUSED ||
	     te->mint.ret == -EHOSTUNREACH)) {
		ret = te->mint.ret;
		if (e)
			*e = te->mint_err;
	}
	pthread_mutex_unlock(&te->lock);
	return ret ? ret : token_engine_mint(te, e);
}

/* Caller holds lock. */
static int servable(struct token_engine *te, int64_t exp, time_t now)
{
	if (te->state == TS_UNAUTH)
		return te->auth_err;
	if (!te->tok)
		return -ENOKEY;
	if (exp != TOKEN_NO_EXPIRY && now >= exp - TOKEN_MARGIN)
		return -EKEYEXPIRED;
	return 0;
}

int token_engine_servable(struct token_engine *te, int64_t exp)
{
	int ret;

	pthread_mutex_lock(&te->lock);
	ret = servable(te, exp, time(NULL));
	pthread_mutex_unlock(&te->lock);
	return ret;
}

int token_engine_get(struct token_engine *te, struct secret **tok, int64_t *exp)
{
	int ret;

	pthread_mutex_lock(&te->lock);
	ret = servable(te, te->exp, time(NULL));
	if (!ret) {
		*tok = secret_ref(te->tok);
		*exp = te->exp;
	}
	pthread_mutex_unlock(&te->lock);
	return ret;
}

void token_engine_touch(struct token_engine *te)
{
	time_t now, at;

	unsigned ci;

	if (!te->opts.check_interval ||
	    __atomic_load_n(&te->used, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&te->lock);
	te->used = true;
	ci = check_interval(te);
	if (!te->next_check) {
		now = time(NULL);
		at = te->last_check + ci;
		if (at < now)
			at = now;
		/* nodes that start reading together do not check together */
		te->next_check = at + randombytes_uniform(ci / 5 + 1);
		pthread_cond_broadcast(&te->cond);
	}
	pthread_mutex_unlock(&te->lock);
}

void token_engine_kick(struct token_engine *te)
{
	pthread_mutex_lock(&te->lock);
	te->kick = true;
	pthread_cond_broadcast(&te->cond);
	pthread_mutex_unlock(&te->lock);
}

void token_engine_revoke(struct token_engine *te, int err, const char *why)
{
	time_t now = time(NULL);

	pthread_mutex_lock(&te->lock);
	if (err) {
		te->state = TS_UNAUTH;
		te->auth_err = err;
		strlcpy_z(te->last_error, why, sizeof(te->last_error));
		te->last_error_at = now;
	} else if (te->state == TS_UNAUTH) {
		te->state = te->tok ? TS_DEGRADED : TS_NONE;
	}
	te->next_refresh = now;
	pthread_cond_broadcast(&te->cond);
	pthread_mutex_unlock(&te->lock);
	if (err)
		log_err("%s", why);
	changed(te);
}

void token_engine_note_error(struct token_engine *te, const char *why)
{
	pthread_mutex_lock(&te->lock);
	strlcpy_z(te->last_error, why, sizeof(te->last_error));
	te->last_error_at = time(NULL);
	pthread_mutex_unlock(&te->lock);
}

/* Is the daemon's credential still good?  Asked with the session, which
 * a deactivated key, account or a locked device kills on every server
 * version (the generic token may outlive them on some). */
static void check_credential(struct token_engine *te)
{
	struct zen_err e = { 0 };
	bool announce = false, recover = false;
	int ret;

	ret = api_whoami(te->zen, NULL, &e);
	pthread_mutex_lock(&te->lock);
	te->checks++;
	if (is_auth_error(ret)) {
		announce = te->state != TS_UNAUTH || te->auth_err != ret;
		te->state = TS_UNAUTH;
		te->auth_err = ret;
		strlcpy_z(te->last_error, e.msg, sizeof(te->last_error));
		te->last_error_at = time(NULL);
		te->failures++;
		te->next_refresh = time(NULL) + backoff(te->failures, 0);
	} else if (!ret && te->state == TS_UNAUTH) {
		recover = true;
	}
	if (ret) {
		te->check_failures++;
		/* the next check waits at least what the server asked */
		if (e.retry_after > 0)
			te->last_check = time(NULL) + e.retry_after;
	}
	pthread_mutex_unlock(&te->lock);
	if (announce) {
		log_err("the server refused the daemon's credential: %s",
			e.msg);
		changed(te);
	} else if (ret && !is_auth_error(ret)) {
		log_debug("credential check failed: %s", e.msg);
	}
	if (recover)
		token_engine_mint(te, NULL);
}

/* Sleep until the wall-clock second wake (at most; a broadcast on cond
 * ends it sooner), now being the wall clock's time, on CLOCK_MONOTONIC.
 * Caller holds lock. */
static void sleep_until(struct token_engine *te, time_t now, time_t wake)
{
	struct timespec ts;

	mono_deadline((wake - now) * 1000LL, &ts);
	pthread_cond_timedwait(&te->cond, &te->lock, &ts);
}

/* When the token reaches its margin, if that is still to be announced;
 * 0 if not.  Caller holds lock. */
static time_t margin_at(const struct token_engine *te)
{
	if (!te->tok || te->exp == TOKEN_NO_EXPIRY || te->announced_expiry)
		return 0;
	return te->exp - TOKEN_MARGIN;
}

/* When the engine next has something to do: the earliest of its timers
 * and the token's margin, at most WALL_LOOK from now.  Caller holds
 * lock. */
static time_t next_wake(const struct token_engine *te, time_t now)
{
	const time_t at[] = { te->next_refresh, te->next_check, te->next_probe,
			      margin_at(te) };
	time_t wake = now + WALL_LOOK;

	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
		if (at[i] && at[i] < wake)
			wake = at[i];
	return wake;
}

/* What the engine is to do now. */
struct due {
	bool refresh, check, probe, expire;
};

/* Take what is due at now off the timers.  Caller holds lock. */
static struct due take_due(struct token_engine *te, time_t now)
{
	time_t margin = margin_at(te);
	struct due d = {
		.refresh = (te->next_refresh && te->next_refresh <= now) ||
			   te->mint_wanted,
		.check = te->kick || (te->next_check && te->next_check <= now),
		.probe = te->next_probe && te->next_probe <= now,
		.expire = margin && now >= margin,
	};

	te->mint_wanted = false;
	te->kick = false;
	if (d.check) {
		te->next_check = 0;
		te->used = false;
		te->last_check = now;
	}
	if (d.probe) {
		te->next_probe = 0;
		te->probes++;
	}
	if (d.expire) {
		te->announced_expiry = true;
		if (te->state != TS_UNAUTH) {
			/* From now on the probe, not the refresh's backoff,
			 * says when to mint again. */
			te->state = TS_EXPIRED;
			te->probe_failures = 0;
			te->next_refresh = 0;
			te->next_probe = now + expired_wait(te, 0);
		}
	}
	return d;
}

/* Do what take_due() found due at now.  Lock not held. */
static void run_due(struct token_engine *te, struct due d, time_t now)
{
	if (d.expire) {
		log_err("the token expired and could not be renewed: "
			"reads fail until the server answers again");
		changed(te);
	}
	if (d.probe && !d.refresh) {
		if (!zen_probe(te->zen)) {
			d.refresh = true;
		} else {
			pthread_mutex_lock(&te->lock);
			if (te->state == TS_EXPIRED)
				te->next_probe = now + expired_wait(te, 0);
			pthread_mutex_unlock(&te->lock);
		}
	}
	if (d.refresh)
		token_engine_mint(te, NULL);
	else if (d.check)
		check_credential(te);
}

static void *engine_main(void *arg)
{
	struct token_engine *te = arg;
	struct due d;
	time_t now, wake;

	pthread_mutex_lock(&te->lock);
	while (!te->stop) {
		now = time(NULL);
		wake = next_wake(te, now);
		if (wake > now && !te->kick && !te->mint_wanted) {
			sleep_until(te, now, wake);
			continue;
		}
		d = take_due(te, now);
		pthread_mutex_unlock(&te->lock);
		run_due(te, d, now);
		pthread_mutex_lock(&te->lock);
	}
	pthread_mutex_unlock(&te->lock);
	return NULL;
}

int token_engine_start(struct token_engine *te)
{
	int ret;

	/* The thread starts by taking the lock: it sees thread and started
	 * set (token_engine_mint compares them). */
	pthread_mutex_lock(&te->lock);
	ret = pthread_create(&te->thread, NULL, engine_main, te);
	te->started = !ret;
	pthread_mutex_unlock(&te->lock);
	return -ret;
}

void token_engine_stop(struct token_engine *te)
{
	if (!te->started)
		return;
	pthread_mutex_lock(&te->lock);
	te->stop = true;
	pthread_cond_broadcast(&te->cond);
	pthread_mutex_unlock(&te->lock);
	pthread_join(te->thread, NULL);
	te->started = false;
}

/* Caller holds lock. */
static enum token_state state_now(struct token_engine *te, time_t now)
{
	enum token_state st = te->state;

	/* The thread may not have noticed the expiry yet. */
	if ((st == TS_OK || st == TS_DEGRADED) && te->tok &&
	    te->exp != TOKEN_NO_EXPIRY && now >= te->exp - TOKEN_MARGIN)
		st = TS_EXPIRED;
	return st;
}

enum token_state token_engine_state(struct token_engine *te)
{
	enum token_state st;

	pthread_mutex_lock(&te->lock);
	st = state_now(te, time(NULL));
	pthread_mutex_unlock(&te->lock);
	return st;
}

const char *token_state_name(enum token_state st)
{
	static const char *const names[] = {
		[TS_NONE] = "unauthenticated",	 [TS_OK] = "ok",
		[TS_DEGRADED] = "degraded",	 [TS_EXPIRED] = "expired",
		[TS_UNAUTH] = "unauthenticated",
	};

	return names[st];
}

static void fmt_time(time_t t, char *buf, size_t size)
{
	if (!t || time_format_rfc3339(t, buf, size))
		strlcpy_z(buf, "-", size);
}

size_t token_engine_status(struct token_engine *te, char *buf, size_t size)
{
	char exp[32], next[32], last[32], err_at[32], check[32], err[512];
	char life[64];
	time_t now = time(NULL);
	enum token_state st;
	int n;

	pthread_mutex_lock(&te->lock);
	st = state_now(te, now);
	if (te->tok && te->exp != TOKEN_NO_EXPIRY)
		fmt_time((time_t)te->exp, exp, sizeof(exp));
	else
		strlcpy_z(exp, te->tok ? "never" : "-", sizeof(exp));
	fmt_time(te->next_refresh, next, sizeof(next));
	fmt_time(te->minted_at, last, sizeof(last));
	fmt_time(te->last_error_at, err_at, sizeof(err_at));
	fmt_time(te->last_check, check, sizeof(check));
	strlcpy_z(err, te->last_error[0] ? te->last_error : "-", sizeof(err));
	if (!te->tok)
		strlcpy_z(life, "-", sizeof(life));
	else if (!te->lifetime)
		strlcpy_z(life, "never expires", sizeof(life));
	else if (!api_token_lifetime_asked(te->zen))
		snprintf(life, sizeof(life), "%lld", te->lifetime);
	else if (te->lifetime < (long long)te->opts.lifetime - LIFETIME_SLACK ||
		 te->lifetime > (long long)te->opts.lifetime + LIFETIME_SLACK)
		snprintf(life, sizeof(life), "%lld (asked %u)", te->lifetime,
			 te->opts.lifetime);
	else
		snprintf(life, sizeof(life), "%u", te->opts.lifetime);
	n = snprintf(buf, size,
		     "state: %s\nserver: %s\nauth: %s\n"
		     "token_expires_at: %s\ntoken_lifetime: %s\n"
		     "next_refresh_at: %s\nlast_refresh_at: %s\n"
		     "last_error: %s\nlast_error_at: %s\n"
		     "refreshes: %lu\nrefresh_failures: %lu\n"
		     "credential_checks: %lu\nlast_check_at: %s\n",
		     token_state_name(st), zen_url(te->zen),
		     cred_kind_name(zen_cred_kind(te->zen)), exp, life, next,
		     last, err, err_at, te->refreshes, te->refresh_failures,
		     te->checks, check);
	pthread_mutex_unlock(&te->lock);
	if (n < 0)
		return 0;
	return (size_t)n < size ? (size_t)n : size - 1;
}

static void __attribute__((format(printf, 4, 5)))
out(char *buf, size_t size, size_t *n, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (*n + 1 >= size)
		return;
	va_start(ap, fmt);
	r = vsnprintf(buf + *n, size - *n, fmt, ap);
	va_end(ap);
	if (r > 0)
		*n = (size_t)r < size - *n ? *n + (size_t)r : size - 1;
}

size_t token_engine_metrics(struct token_engine *te, char *buf, size_t size)
{
	static const char *const states[] = { "ok", "degraded", "expired",
					      "unauthenticated", "starting" };
	struct zen_counts c;
	enum token_state st;
	const char *cur;
	size_t n = 0;

	zen_get_counts(te->zen, &c);
	pthread_mutex_lock(&te->lock);
	st = state_now(te, time(NULL));
	cur = st == TS_NONE ? "starting" : token_state_name(st);
	out(buf, size, &n,
	    "# HELP zenmlfs_refreshes_total Tokens minted.\n"
	    "# TYPE zenmlfs_refreshes_total counter\n"
	    "zenmlfs_refreshes_total %lu\n",
	    te->refreshes);
	out(buf, size, &n,
	    "# HELP zenmlfs_refresh_failures_total Failed mints, by cause.\n"
	    "# TYPE zenmlfs_refresh_failures_total counter\n"
	    "zenmlfs_refresh_failures_total{cause=\"network\"} %lu\n"
	    "zenmlfs_refresh_failures_total{cause=\"server\"} %lu\n"
	    "zenmlfs_refresh_failures_total{cause=\"auth\"} %lu\n"
	    "zenmlfs_refresh_failures_total{cause=\"token\"} %lu\n",
	    te->fail_network, te->fail_server, te->fail_auth, te->fail_token);
	out(buf, size, &n,
	    "# HELP zenmlfs_retries_total Refreshes planned again after a "
	    "failure.\n"
	    "# TYPE zenmlfs_retries_total counter\n"
	    "zenmlfs_retries_total %lu\n",
	    te->retries);
	out(buf, size, &n,
	    "# HELP zenmlfs_credential_checks_total Checks of the daemon's "
	    "credential.\n"
	    "# TYPE zenmlfs_credential_checks_total counter\n"
	    "zenmlfs_credential_checks_total %lu\n"
	    "# HELP zenmlfs_credential_check_failures_total Checks that "
	    "failed.\n"
	    "# TYPE zenmlfs_credential_check_failures_total counter\n"
	    "zenmlfs_credential_check_failures_total %lu\n",
	    te->checks, te->check_failures);
	out(buf, size, &n,
	    "# HELP zenmlfs_credential_check_interval_seconds The check "
	    "interval in force.\n"
	    "# TYPE zenmlfs_credential_check_interval_seconds gauge\n"
	    "zenmlfs_credential_check_interval_seconds %u\n",
	    check_interval(te));
	out(buf, size, &n,
	    "# HELP zenmlfs_last_refresh_success_timestamp_seconds When the "
	    "last token was minted (0: never).\n"
	    "# TYPE zenmlfs_last_refresh_success_timestamp_seconds gauge\n"
	    "zenmlfs_last_refresh_success_timestamp_seconds %lld\n",
	    (long long)te->last_ok);
	out(buf, size, &n,
	    "# HELP zenmlfs_token_expiry_timestamp_seconds When the token "
	    "served expires (0: none, or it never does).\n"
	    "# TYPE zenmlfs_token_expiry_timestamp_seconds gauge\n"
	    "zenmlfs_token_expiry_timestamp_seconds %lld\n",
	    te->tok && te->exp != TOKEN_NO_EXPIRY ? (long long)te->exp : 0LL);
	out(buf, size, &n,
	    "# HELP zenmlfs_state The daemon's state (status's \"state\").\n"
	    "# TYPE zenmlfs_state gauge\n");
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		out(buf, size, &n, "zenmlfs_state{state=\"%s\"} %d\n",
		    states[i], !strcmp(states[i], cur));
	pthread_mutex_unlock(&te->lock);
	out(buf, size, &n,
	    "# HELP zenmlfs_requests_total Requests to the server, by kind.\n"
	    "# TYPE zenmlfs_requests_total counter\n"
	    "zenmlfs_requests_total{kind=\"login\"} %lu\n"
	    "zenmlfs_requests_total{kind=\"token\"} %lu\n"
	    "zenmlfs_requests_total{kind=\"check\"} %lu\n"
	    "zenmlfs_requests_total{kind=\"probe\"} %lu\n"
	    "zenmlfs_requests_total{kind=\"other\"} %lu\n",
	    c.logins, c.tokens, c.checks, c.probes, c.others);
	out(buf, size, &n,
	    "# HELP zenmlfs_logins_total Logins with the credential.\n"
	    "# TYPE zenmlfs_logins_total counter\n"
	    "zenmlfs_logins_total %lu\n"
	    "# HELP zenmlfs_login_failures_total Logins that failed.\n"
	    "# TYPE zenmlfs_login_failures_total counter\n"
	    "zenmlfs_login_failures_total %lu\n"
	    "# HELP zenmlfs_sessions_resumed_total Starts that used the kept "
	    "session instead of a login.\n"
	    "# TYPE zenmlfs_sessions_resumed_total counter\n"
	    "zenmlfs_sessions_resumed_total %lu\n",
	    c.logins, c.login_failures, c.resumed);
	return n;
}
