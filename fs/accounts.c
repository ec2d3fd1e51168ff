// SPDX-License-Identifier: MIT
/*
 * /service-accounts: service accounts by name, their API keys by name.
 * Key routes take the account's UUID, so every key call looks the account
 * up first (through the cache).
 *
 * A new key value (from mkdir or rotate) is kept in guarded memory and
 * readable in keys/<key>/key for key_window seconds, then wiped.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cache.h"
#include "backend/log.h"
#include "backend/secret.h"
#include "backend/token.h"
#include "backend/util.h"
#include "backend/zenml.h"
#include "fs/model.h"

#define SAS "/api/v1/service_accounts"
#define NAME_MAX_LEN 255
#define RETAIN_MAX (366UL * 24 * 60) /* a year, in minutes */
#define NEW_KEYS_MAX 64

/* ---- new key values -------------------------------------------------- */

struct new_key {
	char sa[TREE_PARAM_MAX], key[TREE_PARAM_MAX];
	char id[40]; /* the key's id: a key re-created elsewhere is another */
	struct secret *value;
	struct timespec at; /* CLOCK_MONOTONIC */
};

/* nk_lock protects new_keys[] and nk_n. */
static pthread_mutex_t nk_lock = PTHREAD_MUTEX_INITIALIZER;
static struct new_key new_keys[NEW_KEYS_MAX];
static int nk_n;

static void nk_drop(int i)
{
	secret_unref(new_keys[i].value);
	new_keys[i] = new_keys[--nk_n];
}

static void nk_forget(const char *sa, const char *key)
{
	pthread_mutex_lock(&nk_lock);
	for (int i = 0; i < nk_n; i++)
		if (!strcmp(new_keys[i].sa, sa) &&
		    (!key || !strcmp(new_keys[i].key, key))) {
			nk_drop(i);
			i--;
		}
	pthread_mutex_unlock(&nk_lock);
}

static bool nk_expired(const struct new_key *k, unsigned window)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	/* readable for at least the whole window */
	return (now.tv_sec - k->at.tv_sec) * 1000000000LL +
		       (now.tv_nsec - k->at.tv_nsec) >
	       (long long)window * 1000000000LL;
}

static void nk_put(const char *sa, const char *key, const char *id,
		   struct secret *value)
{
	nk_forget(sa, key);
	pthread_mutex_lock(&nk_lock);
	if (nk_n == NEW_KEYS_MAX)
		nk_drop(0);
	strlcpy_z(new_keys[nk_n].sa, sa, TREE_PARAM_MAX);
	strlcpy_z(new_keys[nk_n].key, key, TREE_PARAM_MAX);
	strlcpy_z(new_keys[nk_n].id, id, sizeof(new_keys[nk_n].id));
	new_keys[nk_n].value = secret_ref(value);
	clock_gettime(CLOCK_MONOTONIC, &new_keys[nk_n].at);
	nk_n++;
	pthread_mutex_unlock(&nk_lock);
}

void keys_expire(struct fs *fs)
{
	char path[2 * TREE_PARAM_MAX + 40];

	pthread_mutex_lock(&nk_lock);
	for (int i = 0; i < nk_n; i++) {
		if (!nk_expired(&new_keys[i], fs->key_window))
			continue;
		snprintf(path, sizeof(path), "/service-accounts/%s/keys/%s",
			 new_keys[i].sa, new_keys[i].key);
		nk_drop(i);
		i--;
		/* the kernel may hold it in the page cache: drop that too */
		fs->invalidate(path);
		log_info("the new value of key '%s' was wiped (key_window)",
			 path + 18);
	}
	pthread_mutex_unlock(&nk_lock);
}

void keys_release(void)
{
	pthread_mutex_lock(&nk_lock);
	while (nk_n)
		nk_drop(0);
	pthread_mutex_unlock(&nk_lock);
}

static int key_fetch(struct fs *fs, const struct match *m, json_t **out);

int key_secret_render(struct fs *fs, const struct match *m,
		      struct content **out)
{
	char id[40] = "";
	const char *s;
	json_t *obj;
	int ret = -ENOENT;

	/* The value belongs to one key id: if the name now stands for
	 * another key (deleted and re-created elsewhere), it is not its. */
	if (!key_fetch(fs, m, &obj)) {
		s = json_string_value(json_object_get(obj, "id"));
		strlcpy_z(id, s ? s : "", sizeof(id));
		json_decref(obj);
	}
	pthread_mutex_lock(&nk_lock);
	for (int i = 0; i < nk_n; i++) {
		struct new_key *k = &new_keys[i];

		if (strcmp(k->sa, m->params[0]) || strcmp(k->key, m->params[1]))
			continue;
		if (nk_expired(k, fs->key_window) || strcasecmp(k->id, id))
			break;
		*out = content_new(k->value->len + 1, true);
		if (!*out) {
			ret = -ENOMEM;
			break;
		}
		memcpy((*out)->data, k->value->buf, k->value->len);
		(*out)->data[k->value->len] = '\n';
		ret = 0;
		break;
	}
	pthread_mutex_unlock(&nk_lock);
	return ret;
}

/* ---- names ----------------------------------------------------------- */

/* A name we create: what the server accepts and a path can carry. */
static int check_name(const char *what, const char *name,
		      const struct caller *who)
{
	size_t n = strlen(name);
	const char *why = NULL;

	if (n == 0)
		why = "it is empty";
	else if (n > NAME_MAX_LEN)
		why = "it is longer than 255 bytes";
	else if (name[0] == ' ' || name[n - 1] == ' ')
		why = "it starts or ends with a space";
	for (size_t i = 0; !why && i < n; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			why = "it has a control character";
	if (!why)
		return 0;
	log_warn("uid %u pid %d: invalid %s name: %s", (unsigned)who->uid,
		 (int)who->pid, what, why);
	return -EINVAL;
}

/* ---- service accounts ------------------------------------------------ */

static int sa_fetch(struct fs *fs, const struct match *m, json_t **out)
{
	json_t *items, *it;
	size_t i;
	int ret;

	ret = model_list(fs, SAS, &items);
	if (ret)
		return ret;
	ret = -ENOENT;
	json_array_foreach (items, i, it) {
		json_t *name = json_object_get(it, "name");

		if (json_is_string(name) &&
		    !strcmp(json_string_value(name), m->params[0])) {
			*out = json_incref(it);
			ret = 0;
			break;
		}
	}
	json_decref(items);
	return ret;
}

/* The account's UUID, for key routes. */
static int sa_id(struct fs *fs, const struct match *m, char *id, size_t size)
{
	json_t *sa, *v;
	int ret = sa_fetch(fs, m, &sa);

	if (ret)
		return ret;
	v = json_object_get(sa, "id");
	if (json_is_string(v) && uuid_valid(json_string_value(v)))
		strlcpy_z(id, json_string_value(v), size);
	else
		ret = -EIO;
	json_decref(sa);
	return ret;
}

int sa_list(struct fs *fs, const struct match *m, struct names *out)
{
	json_t *items, *it;
	size_t i;
	int ret;

	ret = model_list(fs, SAS, &items);
	if (ret)
		return ret;
	json_array_foreach (items, i, it) {
		json_t *name = json_object_get(it, "name");
		const char *s = json_string_value(name);

		/* A name that cannot be a path component is not shown. */
		if (s && *s && !strchr(s, '/') && strcmp(s, ".") &&
		    strcmp(s, "..") && strlen(s) < TREE_PARAM_MAX &&
		    (ret = names_add(out, s, true)))
			break;
	}
	json_decref(items);
	return ret;
}

int sa_exists(struct fs *fs, const struct match *m)
{
	json_t *sa;
	int ret = sa_fetch(fs, m, &sa);

	if (!ret)
		json_decref(sa);
	return ret;
}

static const struct attr sa_attrs[] = {
	{ "id", "id", AT_STR },
	{ "full_name", "body.full_name", AT_STR },
	{ "description", "metadata.description", AT_STR },
	{ "created", "body.created", AT_TIME },
	{ "updated", "body.updated", AT_TIME },
	{ NULL },
};

const struct model model_sa = { sa_attrs, sa_fetch };

static void sa_changed(struct fs *fs, const char *sa)
{
	char path[TREE_PARAM_MAX + 32];

	cache_invalidate(fs->cache, SAS);
	snprintf(path, sizeof(path), "/service-accounts/%s", sa);
	fs->invalidate(path);
	fs->invalidate("/service-accounts");
	/* The daemon's own key may belong to it. */
	token_engine_kick(fs->te);
}

static int server_failed(struct fs *fs, int ret, const char *what,
			 const char *name)
{
	char err[512];

	zen_last_error(fs->zen, err, sizeof(err));
	log_err("cannot %s '%s': %s", what, name, err);
	return ret;
}

int sa_mkdir(struct fs *fs, const struct match *m, const struct caller *who)
{
	json_t *body;
	int ret;

	ret = check_name("service account", m->params[0], who);
	if (ret)
		return ret;
	log_info("uid %u pid %d: create service account '%s'",
		 (unsigned)who->uid, (int)who->pid, m->params[0]);
	body = json_pack("{s:s,s:s,s:b}", "name", m->params[0], "full_name", "",
			 "active", 1);
	ret = zen_call(fs->zen, "POST", SAS, body, false, NULL);
	json_decref(body);
	if (ret)
		server_failed(fs, ret, "create service account", m->params[0]);
	sa_changed(fs, m->params[0]);
	return ret;
}

int sa_rmdir(struct fs *fs, const struct match *m, const struct caller *who)
{
	char id[40], path[128];
	int ret;

	log_info("uid %u pid %d: delete service account '%s'",
		 (unsigned)who->uid, (int)who->pid, m->params[0]);
	ret = sa_id(fs, m, id, sizeof(id));
	if (ret)
		return ret;
	snprintf(path, sizeof(path), SAS "/%s", id);
	ret = zen_call(fs->zen, "DELETE", path, NULL, false, NULL);
	if (ret)
		server_failed(fs, ret, "delete service account", m->params[0]);
	else
		nk_forget(m->params[0], NULL);
	sa_changed(fs, m->params[0]);
	return ret;
}

int sa_active_render(struct fs *fs, const struct match *m, struct content **out)
{
	json_t *sa;
	int ret = sa_fetch(fs, m, &sa);

	if (ret)
		return ret;
	ret = content_bool(json_is_true(model_value(sa, "body.active")), out);
	json_decref(sa);
	return ret;
}

int sa_active_write(struct fs *fs, const struct match *m, const char *buf,
		    size_t len, const struct caller *who)
{
	char id[40], path[128];
	json_t *body;
	bool on;
	int ret;

	if (parse_bool(buf, len, &on)) {
		log_warn("uid %u pid %d: invalid value for "
			 "'service-accounts/%s/active': write 1 or 0",
			 (unsigned)who->uid, (int)who->pid, m->params[0]);
		return -EINVAL;
	}
	ret = sa_id(fs, m, id, sizeof(id));
	if (ret)
		return ret;
	log_info("uid %u pid %d: %s service account '%s'", (unsigned)who->uid,
		 (int)who->pid, on ? "activate" : "deactivate", m->params[0]);
	snprintf(path, sizeof(path), SAS "/%s", id);
	body = json_pack("{s:b}", "active", on);
	ret = zen_call(fs->zen, "PUT", path, body, false, NULL);
	json_decref(body);
	if (ret)
		server_failed(fs, ret,
			      on ? "activate service account" :
				   "deactivate service account",
			      m->params[0]);
	sa_changed(fs, m->params[0]);
	return ret;
}

/* ---- API keys -------------------------------------------------------- */

static int keys_path(struct fs *fs, const struct match *m, char *path,
		     size_t size)
{
	char id[40];
	int ret = sa_id(fs, m, id, sizeof(id));

	if (!ret)
		snprintf(path, size, SAS "/%s/api_keys", id);
	return ret;
}

int key_list(struct fs *fs, const struct match *m, struct names *out)
{
	char path[128];
	json_t *items, *it;
	size_t i;
	int ret;

	ret = keys_path(fs, m, path, sizeof(path));
	if (!ret)
		ret = model_list(fs, path, &items);
	if (ret)
		return ret;
	json_array_foreach (items, i, it) {
		const char *s = json_string_value(json_object_get(it, "name"));

		if (s && *s && !strchr(s, '/') && strcmp(s, ".") &&
		    strcmp(s, "..") && strlen(s) < TREE_PARAM_MAX &&
		    (ret = names_add(out, s, true)))
			break;
	}
	json_decref(items);
	return ret;
}

static int key_fetch(struct fs *fs, const struct match *m, json_t **out)
{
	char path[128];
	json_t *items, *it;
	size_t i;
	int ret;

	ret = keys_path(fs, m, path, sizeof(path));
	if (!ret)
		ret = model_list(fs, path, &items);
	if (ret)
		return ret;
	ret = -ENOENT;
	json_array_foreach (items, i, it) {
		const char *s = json_string_value(json_object_get(it, "name"));

		if (s && !strcmp(s, m->params[1])) {
			*out = json_incref(it);
			ret = 0;
			break;
		}
	}
	json_decref(items);
	return ret;
}

int key_exists(struct fs *fs, const struct match *m)
{
	json_t *k;
	int ret = key_fetch(fs, m, &k);

	if (!ret)
		json_decref(k);
	return ret;
}

static const struct attr key_attrs[] = {
	{ "id", "id", AT_STR },
	{ "description", "metadata.description", AT_STR },
	{ "created", "body.created", AT_TIME },
	{ "updated", "body.updated", AT_TIME },
	{ "last_login", "metadata.last_login", AT_TIME },
	{ "last_rotated", "metadata.last_rotated", AT_TIME },
	{ "retain_period_minutes", "metadata.retain_period_minutes", AT_INT },
	{ NULL },
};

const struct model model_key = { key_attrs, key_fetch };

/* The key's UUID and its API path. */
static int key_route(struct fs *fs, const struct match *m, char *id,
		     size_t idsz, char *path, size_t size)
{
	json_t *k;
	const char *s;
	char base[128];
	int ret;

	ret = keys_path(fs, m, base, sizeof(base));
	if (!ret)
		ret = key_fetch(fs, m, &k);
	if (ret)
		return ret;
	s = json_string_value(json_object_get(k, "id"));
	if (s && uuid_valid(s)) {
		strlcpy_z(id, s, idsz);
		snprintf(path, size, "%s/%s", base, s);
	} else {
		ret = -EIO;
	}
	json_decref(k);
	return ret;
}

/* Is this key the one the daemon itself logged in with? */
static bool is_own_key(struct fs *fs, const char *key_id)
{
	char own[40];

	zen_api_key_id(fs->zen, own, sizeof(own));
	return own[0] && !strcasecmp(own, key_id);
}

static void key_changed(struct fs *fs, const struct match *m)
{
	char path[2 * TREE_PARAM_MAX + 40];

	cache_invalidate(fs->cache, SAS);
	snprintf(path, sizeof(path), "/service-accounts/%s/keys/%s",
		 m->params[0], m->params[1]);
	fs->invalidate(path);
	snprintf(path, sizeof(path), "/service-accounts/%s/keys", m->params[0]);
	fs->invalidate(path);
}

/* The new key value in a create or rotate reply, into guarded memory. */
static int new_key_value(json_t *reply, struct secret **out)
{
	json_t *v = model_value(reply, "body.key");

	if (!json_is_string(v) || strncmp(json_string_value(v), "ZENKEY_", 7))
		return -EIO;
	*out = secret_new(json_string_value(v), json_string_length(v));
	return *out ? 0 : -ENOMEM;
}

int key_mkdir(struct fs *fs, const struct match *m, const struct caller *who)
{
	struct secret *value = NULL;
	json_t *body, *reply = NULL;
	char path[128];
	int ret;

	ret = check_name("API key", m->params[1], who);
	if (ret)
		return ret;
	ret = keys_path(fs, m, path, sizeof(path));
	if (ret)
		return ret;
	log_info("uid %u pid %d: create API key '%s/%s'", (unsigned)who->uid,
		 (int)who->pid, m->params[0], m->params[1]);
	body = json_pack("{s:s,s:s}", "name", m->params[1], "description", "");
	ret = zen_call(fs->zen, "POST", path, body, true, &reply);
	json_decref(body);
	if (ret) {
		server_failed(fs, ret, "create API key", m->params[1]);
		goto out;
	}
	ret = new_key_value(reply, &value);
	if (ret || !json_is_string(json_object_get(reply, "id"))) {
		log_err("cannot create API key '%s/%s': the reply has no key",
			m->params[0], m->params[1]);
		ret = -EIO;
		goto out;
	}
	nk_put(m->params[0], m->params[1],
	       json_string_value(json_object_get(reply, "id")), value);
out:
	secret_unref(value);
	json_decref(reply);
	key_changed(fs, m);
	return ret;
}

int key_rmdir(struct fs *fs, const struct match *m, const struct caller *who)
{
	char id[40], path[256], why[600];
	int ret;

	ret = key_route(fs, m, id, sizeof(id), path, sizeof(path));
	if (ret)
		return ret;
	log_info("uid %u pid %d: delete API key '%s/%s'", (unsigned)who->uid,
		 (int)who->pid, m->params[0], m->params[1]);
	ret = zen_call(fs->zen, "DELETE", path, NULL, false, NULL);
	if (ret) {
		server_failed(fs, ret, "delete API key", m->params[1]);
	} else {
		nk_forget(m->params[0], m->params[1]);
		if (is_own_key(fs, id)) {
			snprintf(why, sizeof(why),
				 "the daemon's own API key '%s/%s' (%s) was "
				 "deleted",
				 m->params[0], m->params[1], id);
			token_engine_revoke(fs->te, -EKEYREVOKED, why);
		}
	}
	key_changed(fs, m);
	return ret;
}

int key_active_render(struct fs *fs, const struct match *m,
		      struct content **out)
{
	json_t *k;
	int ret = key_fetch(fs, m, &k);

	if (ret)
		return ret;
	ret = content_bool(json_is_true(model_value(k, "body.active")), out);
	json_decref(k);
	return ret;
}

int key_active_write(struct fs *fs, const struct match *m, const char *buf,
		     size_t len, const struct caller *who)
{
	char id[40], path[256], why[600];
	json_t *body;
	bool on;
	int ret;

	if (parse_bool(buf, len, &on)) {
		log_warn("uid %u pid %d: invalid value for "
			 "'service-accounts/%s/keys/%s/active': write 1 or 0",
			 (unsigned)who->uid, (int)who->pid, m->params[0],
			 m->params[1]);
		return -EINVAL;
	}
	ret = key_route(fs, m, id, sizeof(id), path, sizeof(path));
	if (ret)
		return ret;
	log_info("uid %u pid %d: %s API key '%s/%s'", (unsigned)who->uid,
		 (int)who->pid, on ? "activate" : "deactivate", m->params[0],
		 m->params[1]);
	body = json_pack("{s:b}", "active", on);
	ret = zen_call(fs->zen, "PUT", path, body, false, NULL);
	json_decref(body);
	if (ret) {
		server_failed(fs, ret,
			      on ? "activate API key" : "deactivate API key",
			      m->params[1]);
	} else if (is_own_key(fs, id)) {
		snprintf(why, sizeof(why),
			 "the daemon's own API key '%s/%s' (%s) was "
			 "deactivated",
			 m->params[0], m->params[1], id);
		token_engine_revoke(fs->te, on ? 0 : -EKEYREVOKED, why);
	}
	key_changed(fs, m);
	return ret;
}

int key_rotate_write(struct fs *fs, const struct match *m, const char *buf,
		     size_t len, const struct caller *who)
{
	struct secret *value = NULL;
	char id[40], path[300];
	json_t *body, *reply = NULL;
	uint64_t minutes;
	int ret;

	if (parse_uint(buf, len, RETAIN_MAX, &minutes)) {
		log_warn("uid %u pid %d: invalid value for "
			 "'service-accounts/%s/keys/%s/rotate': write the "
			 "minutes (0 .. %lu) the old key stays valid",
			 (unsigned)who->uid, (int)who->pid, m->params[0],
			 m->params[1], RETAIN_MAX);
		return -EINVAL;
	}
	ret = key_route(fs, m, id, sizeof(id), path, sizeof(path) - 8);
	if (ret)
		return ret;
	strlcpy_z(path + strlen(path), "/rotate", sizeof(path) - strlen(path));
	log_info("uid %u pid %d: rotate API key '%s/%s' (old key valid %llu "
		 "more minutes)",
		 (unsigned)who->uid, (int)who->pid, m->params[0], m->params[1],
		 (unsigned long long)minutes);
	body = json_pack("{s:I}", "retain_period_minutes", (json_int_t)minutes);
	ret = zen_call(fs->zen, "PUT", path, body, true, &reply);
	json_decref(body);
	if (ret) {
		server_failed(fs, ret, "rotate API key", m->params[1]);
		goto out;
	}
	ret = new_key_value(reply, &value);
	if (ret) {
		log_err("cannot rotate API key '%s/%s': the reply has no key",
			m->params[0], m->params[1]);
		goto out;
	}
	nk_put(m->params[0], m->params[1], id, value);
	if (is_own_key(fs, id)) {
		/* Switch to the new key now, so the daemon outlives the
		 * retain period of the old one. */
		zen_set_api_key(fs->zen, value);
		if (zen_login(fs->zen))
			log_warn("cannot log in with the rotated key yet: the "
				 "next refresh will retry");
		else
			log_info("the daemon now uses the rotated key of "
				 "'%s/%s'",
				 m->params[0], m->params[1]);
	}
out:
	secret_unref(value);
	json_decref(reply);
	key_changed(fs, m);
	return ret;
}
