// SPDX-License-Identifier: MIT
/*
 * /devices: the authenticated user's OAuth devices, by UUID.  The list is
 * fetched whole (every page, hydrated) and cached for meta_ttl; a device's
 * files are read from it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backend/cache.h"
#include "backend/log.h"
#include "backend/token.h"
#include "backend/util.h"
#include "backend/zenml.h"
#include "fs/model.h"

#define DEVICES "/api/v1/devices"

int devices_list(struct fs *fs, const struct match *m, struct names *out)
{
	json_t *items, *it;
	size_t i;
	int ret;

	ret = model_list(fs, DEVICES, &items);
	if (ret)
		return ret;
	json_array_foreach (items, i, it) {
		json_t *id = json_object_get(it, "id");

		if (json_is_string(id) && uuid_valid(json_string_value(id)) &&
		    (ret = names_add(out, json_string_value(id), true)))
			break;
	}
	json_decref(items);
	return ret;
}

static int device_fetch(struct fs *fs, const struct match *m, json_t **out)
{
	const char *want = m->params[0];
	json_t *items, *it;
	size_t i;
	int ret;

	/* Not a UUID: not a device, and no reason to ask the server. */
	if (!uuid_valid(want))
		return -ENOENT;
	ret = model_list(fs, DEVICES, &items);
	if (ret)
		return ret;
	ret = -ENOENT;
	json_array_foreach (items, i, it) {
		json_t *id = json_object_get(it, "id");

		if (json_is_string(id) &&
		    !strcasecmp(json_string_value(id), want)) {
			*out = json_incref(it);
			ret = 0;
			break;
		}
	}
	json_decref(items);
	return ret;
}

int device_exists(struct fs *fs, const struct match *m)
{
	json_t *d;
	int ret = device_fetch(fs, m, &d);

	if (!ret)
		json_decref(d);
	return ret;
}

static const struct attr device_attrs[] = {
	{ "status", "body.status", AT_STR },
	{ "hostname", "body.hostname", AT_STR },
	{ "os", "body.os", AT_STR },
	{ "ip_address", "body.ip_address", AT_STR },
	{ "client_id", "body.client_id", AT_STR },
	{ "trusted", "body.trusted_device", AT_BOOL },
	{ "expires", "body.expires", AT_TIME },
	{ "last_login", "metadata.last_login", AT_TIME },
	{ "created", "body.created", AT_TIME },
	{ "updated", "body.updated", AT_TIME },
	{ "city", "metadata.city", AT_STR },
	{ "country", "metadata.country", AT_STR },
	{ "failed_auth_attempts", "metadata.failed_auth_attempts", AT_INT },
	{ "zenml_version", "metadata.zenml_version", AT_STR },
	{ "python_version", "metadata.python_version", AT_STR },
	{ NULL },
};

const struct model model_device = { device_attrs, device_fetch };

int device_lock_render(struct fs *fs, const struct match *m,
		       struct content **out)
{
	json_t *d, *st;
	bool locked;
	int ret;

	ret = device_fetch(fs, m, &d);
	if (ret)
		return ret;
	st = model_value(d, "body.status");
	locked = json_is_string(st) && !strcmp(json_string_value(st), "locked");
	json_decref(d);
	return content_bool(locked, out);
}

/* After a change: fresh data for every reader, and a quick look at
 * whether the daemon's own token survived it. */
static void changed(struct fs *fs, const struct match *m)
{
	char path[320];

	cache_invalidate(fs->cache, DEVICES);
	snprintf(path, sizeof(path), "/devices/%s", m->params[0]);
	fs->invalidate(path);
	fs->invalidate("/devices");
	token_engine_kick(fs->te);
}

int device_lock_write(struct fs *fs, const struct match *m, const char *buf,
		      size_t len, const struct caller *who)
{
	char path[320], err[512];
	json_t *body;
	bool on;
	int ret;

	if (parse_bool(buf, len, &on)) {
		log_warn("uid %u pid %d: invalid value for 'devices/%s/lock': "
			 "write 1 to lock, 0 to unlock",
			 (unsigned)who->uid, (int)who->pid, m->params[0]);
		return -EINVAL;
	}
	log_info("uid %u pid %d: %s device '%s'", (unsigned)who->uid,
		 (int)who->pid, on ? "lock" : "unlock", m->params[0]);
	snprintf(path, sizeof(path), DEVICES "/%s", m->params[0]);
	body = json_pack("{s:b}", "locked", on);
	ret = zen_call(fs->zen, "PUT", path, body, false, NULL);
	json_decref(body);
	if (ret) {
		zen_last_error(fs->zen, err, sizeof(err));
		log_err("cannot %s device '%s': %s", on ? "lock" : "unlock",
			m->params[0], err);
	}
	changed(fs, m);
	return ret;
}

int device_rmdir(struct fs *fs, const struct match *m, const struct caller *who)
{
	char path[320], err[512];
	int ret;

	log_info("uid %u pid %d: delete device '%s'", (unsigned)who->uid,
		 (int)who->pid, m->params[0]);
	snprintf(path, sizeof(path), DEVICES "/%s", m->params[0]);
	ret = zen_call(fs->zen, "DELETE", path, NULL, false, NULL);
	if (ret) {
		zen_last_error(fs->zen, err, sizeof(err));
		log_err("cannot delete device '%s': %s", m->params[0], err);
	}
	changed(fs, m);
	return ret;
}
