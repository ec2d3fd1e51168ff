// SPDX-License-Identifier: MIT
#include "fs/model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backend/cache.h"
#include "backend/secret.h"
#include "backend/util.h"
#include "backend/zenml.h"

json_t *model_value(json_t *obj, const char *path)
{
	char key[64];
	const char *p = path;
	size_t n;

	while (obj && *p) {
		n = strcspn(p, ".");
		if (n >= sizeof(key) || !json_is_object(obj))
			return NULL;
		memcpy(key, p, n);
		key[n] = '\0';
		obj = json_object_get(obj, key);
		p += n;
		if (*p == '.')
			p++;
	}
	return obj;
}

static const struct attr *find_attr(const struct model *md, const char *name)
{
	for (const struct attr *a = md->attrs; a->name; a++)
		if (!strcmp(a->name, name))
			return a;
	return NULL;
}

int model_attr_text(const struct model *md, json_t *obj, const char *name,
		    struct fs *fs, char *buf, size_t size)
{
	const struct attr *a = find_attr(md, name);
	json_t *v;
	char *s;

	if (!a)
		return -ENOENT;
	buf[0] = '\0';
	if (a->type == AT_URL) {
		strlcpy_z(buf, zen_url(fs->zen), size);
		return 0;
	}
	v = model_value(obj, a->path);
	if (!v || json_is_null(v))
		return 0;
	switch (a->type) {
	case AT_BOOL:
		strlcpy_z(buf, json_is_true(v) ? "1" : "0", size);
		break;
	case AT_INT:
		if (json_is_integer(v))
			snprintf(buf, size, "%lld",
				 (long long)json_integer_value(v));
		break;
	case AT_TIME:
		if (!json_is_string(v) ||
		    time_iso_to_rfc3339(json_string_value(v), buf, size))
			strlcpy_z(buf,
				  json_is_string(v) ? json_string_value(v) : "",
				  size);
		break;
	default:
		if (json_is_string(v)) {
			strlcpy_z(buf, json_string_value(v), size);
		} else {
			s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			if (s)
				strlcpy_z(buf, s, size);
			json_str_free(s);
		}
	}
	return 0;
}

json_t *model_info_json(const struct model *md, json_t *obj, struct fs *fs)
{
	json_t *out = json_object(), *v, *nv;
	char buf[1024];

	if (!out)
		return NULL;
	for (const struct attr *a = md->attrs; a->name; a++) {
		v = a->type == AT_URL ? NULL : model_value(obj, a->path);
		if (a->type == AT_URL) {
			nv = json_string(zen_url(fs->zen));
		} else if (!v || json_is_null(v)) {
			nv = json_null();
		} else if (a->type == AT_BOOL) {
			nv = json_boolean(json_is_true(v));
		} else if (a->type == AT_INT) {
			nv = json_incref(v);
		} else if (a->type == AT_TIME) {
			model_attr_text(md, obj, a->name, fs, buf, sizeof(buf));
			nv = json_string(buf);
		} else {
			nv = json_incref(v);
		}
		json_object_set_new(out, a->name, nv ? nv : json_null());
	}
	return out;
}

int model_get(struct fs *fs, const char *path, json_t **out)
{
	json_t *v;
	int ret;

	if (!cache_get(fs->cache, path, out))
		return 0;
	if (!strcmp(path, "/api/v1/info"))
		ret = zen_info(fs->zen, &v);
	else
		ret = zen_call(fs->zen, "GET", path, NULL, false, &v);
	if (ret)
		return ret;
	cache_put(fs->cache, path, v);
	*out = v;
	return 0;
}

int model_list(struct fs *fs, const char *path, json_t **items)
{
	json_t *v;
	int ret;

	if (!cache_get(fs->cache, path, items))
		return 0;
	ret = zen_list(fs->zen, path, &v);
	if (ret)
		return ret;
	cache_put(fs->cache, path, v);
	*items = v;
	return 0;
}

int content_bool(bool on, struct content **out)
{
	*out = content_new(2, false);
	if (!*out)
		return -ENOMEM;
	(*out)->data[0] = on ? '1' : '0';
	(*out)->data[1] = '\n';
	return 0;
}

/* ---- server and whoami ---------------------------------------------- */

static int server_fetch(struct fs *fs, const struct match *m, json_t **out)
{
	return model_get(fs, "/api/v1/info", out);
}

static const struct attr server_attrs[] = {
	{ "url", NULL, AT_URL },
	{ "id", "id", AT_STR },
	{ "name", "name", AT_STR },
	{ "version", "version", AT_STR },
	{ "auth_scheme", "auth_scheme", AT_STR },
	{ "deployment_type", "deployment_type", AT_STR },
	{ NULL },
};

const struct model model_server = { server_attrs, server_fetch };

static int whoami_fetch(struct fs *fs, const struct match *m, json_t **out)
{
	return model_get(fs, "/api/v1/current-user", out);
}

static const struct attr whoami_attrs[] = {
	{ "id", "id", AT_STR },
	{ "name", "name", AT_STR },
	{ "is_service_account", "body.is_service_account", AT_BOOL },
	{ "active", "body.active", AT_BOOL },
	{ NULL },
};

const struct model model_whoami = { whoami_attrs, whoami_fetch };
