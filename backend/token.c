// SPDX-License-Identifier: MIT
#include "backend/token.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/log.h"
#include "backend/secret.h"
#include "backend/util.h"
#include "backend/zenml.h"

#define BACKOFF_MIN 1
#define BACKOFF_MAX 60
/* Refresh early enough that a retry or two fit before the margin. */
#define REFRESH_MIN_LEFT (TOKEN_MARGIN + 15)

enum state { ST_NONE, ST_OK, ST_DEGRADED, ST_EXPIRED, ST_UNAUTH };

struct token_engine {
	struct zen *zen;
	struct token_opts opts;
	pthread_t thread;
	bool started;

	/* mint_lock serializes mints (held across the network call; it
	 * protects only their order). */
	pthread_mutex_t mint_lock;

	/* lock protects everything below; cond wakes the thread. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop, kick;
	struct secret *tok;
	int64_t exp;
	time_t minted_at; /* 0: never */
	time_t next_refresh; /* 0: none planned */
	time_t next_check;
	unsigned failures; /* consecutive, for backoff */
	unsigned long refreshes, refresh_failures;
	enum state state;
	int auth_err; /* set with ST_UNAUTH */
	bool announced_expiry; /* on_change sent for the current expiry */
	char last_error[512];
};

struct token_engine *token_engine_new(struct zen *z,
				      const struct token_opts *opts)
{
	struct token_engine *te = calloc(1, sizeof(*te));
	pthread_condattr_t ca;

	if (!te)
		return NULL;
	te->zen = z;
	te->opts = *opts;
	pthread_mutex_init(&te->lock, NULL);
	pthread_mutex_init(&te->mint_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_REALTIME);
	pthread_cond_init(&te->cond, &ca);
	pthread_condattr_destroy(&ca);
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
 * sharing a server do not refresh in step. */
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
	if (exp - left <= t)
		return t + 1;
	return (time_t)(exp - left);
}

static time_t backoff(unsigned failures)
{
	unsigned s = BACKOFF_MIN;

	for (unsigned i = 1; i < failures && s < BACKOFF_MAX; i++)
		s *= 2;
	if (s > BACKOFF_MAX)
		s = BACKOFF_MAX;
	/* +-25% jitter */
	return s * 3 / 4 + randombytes_uniform(s / 2 + 1);
}

int token_engine_mint(struct token_engine *te)
{
	struct secret *tok = NULL, *old;
	char err[512];
	int64_t exp;
	time_t now;
	int ret;

	pthread_mutex_lock(&te->mint_lock);
	ret = zen_api_token(te->zen, te->opts.lifetime, &tok);
	now = time(NULL);
	if (!ret) {
		ret = jwt_exp(tok->buf, tok->len, &exp);
		if (ret == -ENOENT) {
			exp = TOKEN_NO_EXPIRY;
			ret = 0;
		} else if (ret) {
			zen_set_error(te->zen, "api token: the server sent a "
					       "token that is not a JWT");
			ret = -EIO;
		} else if (exp - TOKEN_MARGIN <= now) {
			zen_set_error(te->zen, "api token: the server sent a "
					       "token that expires at once "
					       "(clock skew?)");
			ret = -EKEYEXPIRED;
		}
	}
	if (ret) {
		secret_unref(tok);
		zen_last_error(te->zen, err, sizeof(err));
		pthread_mutex_lock(&te->lock);
		te->refresh_failures++;
		te->failures++;
		te->next_refresh = now + backoff(te->failures);
		strlcpy_z(te->last_error, err, sizeof(te->last_error));
		if (is_auth_error(ret)) {
			bool was = te->state == ST_UNAUTH;

			te->state = ST_UNAUTH;
			te->auth_err = ret;
			pthread_mutex_unlock(&te->lock);
			if (!was) {
				log_err("the server refused the daemon's "
					"credential: %s",
					err);
				changed(te);
			}
		} else {
			if (te->state == ST_OK)
				te->state = ST_DEGRADED;
			pthread_mutex_unlock(&te->lock);
			log_warn("token refresh failed: %s", err);
		}
		goto out;
	}
	pthread_mutex_lock(&te->lock);
	old = te->tok;
	te->tok = tok;
	te->exp = exp;
	te->minted_at = now;
	te->next_refresh = plan_refresh(now, exp);
	te->failures = 0;
	te->refreshes++;
	te->state = ST_OK;
	te->auth_err = 0;
	te->announced_expiry = false;
	pthread_cond_signal(&te->cond);
	pthread_mutex_unlock(&te->lock);
	secret_unref(old);
	log_debug("new token, expires in %lld s",
		  exp == TOKEN_NO_EXPIRY ? -1LL : (long long)(exp - now));
	changed(te);
out:
	pthread_mutex_unlock(&te->mint_lock);
	return ret;
}

int token_engine_get(struct token_engine *te, struct secret **tok, int64_t *exp)
{
	time_t now = time(NULL);
	int ret = 0;

	pthread_mutex_lock(&te->lock);
	if (te->state == ST_UNAUTH)
		ret = te->auth_err;
	else if (!te->tok)
		ret = -ENOKEY;
	else if (te->exp != TOKEN_NO_EXPIRY && now >= te->exp - TOKEN_MARGIN)
		ret = -EKEYEXPIRED;
	if (!ret) {
		*tok = secret_ref(te->tok);
		*exp = te->exp;
	}
	pthread_mutex_unlock(&te->lock);
	return ret;
}

void token_engine_revoke(struct token_engine *te, int err, const char *why)
{
	pthread_mutex_lock(&te->lock);
	if (err) {
		te->state = ST_UNAUTH;
		te->auth_err = err;
		strlcpy_z(te->last_error, why, sizeof(te->last_error));
	} else if (te->state == ST_UNAUTH) {
		te->state = te->tok ? ST_DEGRADED : ST_NONE;
	}
	te->next_refresh = time(NULL);
	pthread_cond_signal(&te->cond);
	pthread_mutex_unlock(&te->lock);
	if (err)
		log_err("%s", why);
	changed(te);
}

void token_engine_kick(struct token_engine *te)
{
	pthread_mutex_lock(&te->lock);
	te->kick = true;
	pthread_cond_signal(&te->cond);
	pthread_mutex_unlock(&te->lock);
}

/* Is the served token still accepted by the server?  A 401 means it was
 * killed (key deactivated, device locked...): mint again at once, which
 * logs in again and finds out why. */
static void check_token(struct token_engine *te)
{
	struct secret *tok = NULL;
	int64_t exp;
	int ret;

	if (token_engine_get(te, &tok, &exp)) {
		pthread_mutex_lock(&te->lock);
		bool unauth = te->state == ST_UNAUTH;
		pthread_mutex_unlock(&te->lock);
		/* A refused credential may have been restored meanwhile. */
		if (unauth)
			token_engine_mint(te);
		return;
	}
	ret = zen_call_as(te->zen, tok, "GET", "/api/v1/current-user", NULL);
	secret_unref(tok);
	if (ret == -EKEYREJECTED || ret == -EKEYREVOKED) {
		log_warn("the served token is no longer accepted by the "
			 "server: minting a new one");
		token_engine_mint(te);
	}
}

static void *engine_main(void *arg)
{
	struct token_engine *te = arg;
	struct timespec ts = { 0 };
	time_t now, wake;
	bool do_refresh, do_check, expire;

	pthread_mutex_lock(&te->lock);
	te->next_check = time(NULL) + te->opts.check_interval;
	while (!te->stop) {
		now = time(NULL);
		wake = now + 3600;
		if (te->next_refresh && te->next_refresh < wake)
			wake = te->next_refresh;
		if (te->opts.check_interval && te->next_check < wake)
			wake = te->next_check;
		if (te->tok && te->exp != TOKEN_NO_EXPIRY &&
		    !te->announced_expiry && te->exp - TOKEN_MARGIN < wake)
			wake = te->exp - TOKEN_MARGIN;
		if (wake > now && !te->kick) {
			ts.tv_sec = wake;
			pthread_cond_timedwait(&te->cond, &te->lock, &ts);
			continue;
		}
		do_refresh = te->next_refresh && te->next_refresh <= now;
		do_check = te->kick ||
			   (te->opts.check_interval && te->next_check <= now);
		expire = te->tok && te->exp != TOKEN_NO_EXPIRY &&
			 !te->announced_expiry && now >= te->exp - TOKEN_MARGIN;
		te->kick = false;
		if (do_check)
			te->next_check = now + te->opts.check_interval;
		if (expire) {
			te->announced_expiry = true;
			if (te->state != ST_UNAUTH)
				te->state = ST_EXPIRED;
		}
		pthread_mutex_unlock(&te->lock);

		if (expire) {
			log_err("the token expired and could not be renewed: "
				"reads fail until the server answers again");
			changed(te);
		}
		if (do_refresh)
			token_engine_mint(te);
		else if (do_check)
			check_token(te);
		pthread_mutex_lock(&te->lock);
	}
	pthread_mutex_unlock(&te->lock);
	return NULL;
}

int token_engine_start(struct token_engine *te)
{
	int ret = pthread_create(&te->thread, NULL, engine_main, te);

	if (ret)
		return -ret;
	te->started = true;
	return 0;
}

void token_engine_stop(struct token_engine *te)
{
	if (!te->started)
		return;
	pthread_mutex_lock(&te->lock);
	te->stop = true;
	pthread_cond_signal(&te->cond);
	pthread_mutex_unlock(&te->lock);
	pthread_join(te->thread, NULL);
	te->started = false;
}

static void fmt_time(time_t t, char *buf, size_t size)
{
	if (!t || time_format_rfc3339(t, buf, size))
		strlcpy_z(buf, "-", size);
}

size_t token_engine_status(struct token_engine *te, char *buf, size_t size)
{
	static const char *const names[] = {
		[ST_NONE] = "unauthenticated",	 [ST_OK] = "ok",
		[ST_DEGRADED] = "degraded",	 [ST_EXPIRED] = "expired",
		[ST_UNAUTH] = "unauthenticated",
	};
	char exp[32], next[32], last[32], err[512];
	enum state st;
	time_t now = time(NULL);
	int n;

	pthread_mutex_lock(&te->lock);
	st = te->state;
	/* The thread may not have noticed the expiry yet. */
	if ((st == ST_OK || st == ST_DEGRADED) && te->tok &&
	    te->exp != TOKEN_NO_EXPIRY && now >= te->exp - TOKEN_MARGIN)
		st = ST_EXPIRED;
	if (te->tok && te->exp != TOKEN_NO_EXPIRY)
		fmt_time((time_t)te->exp, exp, sizeof(exp));
	else
		strlcpy_z(exp, te->tok ? "never" : "-", sizeof(exp));
	fmt_time(te->next_refresh, next, sizeof(next));
	fmt_time(te->minted_at, last, sizeof(last));
	strlcpy_z(err, te->last_error[0] ? te->last_error : "-", sizeof(err));
	n = snprintf(buf, size,
		     "state: %s\nserver: %s\nauth: %s\n"
		     "token_expires_at: %s\nnext_refresh_at: %s\n"
		     "last_refresh_at: %s\nlast_error: %s\n"
		     "refreshes: %lu\nrefresh_failures: %lu\n",
		     names[st], zen_url(te->zen),
		     cred_kind_name(zen_cred_kind(te->zen)), exp, next, last,
		     err, te->refreshes, te->refresh_failures);
	pthread_mutex_unlock(&te->lock);
	if (n < 0)
		return 0;
	return (size_t)n < size ? (size_t)n : size - 1;
}
