// SPDX-License-Identifier: MIT
#include "backend/jsonpage.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "backend/banned.h" /* always the last include */

/*
 * The scanner below only finds where each value ends (strings with their
 * escapes, nesting by bracket count); jansson parses every value it
 * found, exactly that slice, so what is accepted is what json_loadb()
 * accepts.
 */

static size_t skip_ws(const char *b, size_t len, size_t i)
{
	while (i < len &&
	       (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r'))
		i++;
	return i;
}

/* The end of the string that starts at b[i] == '"' (past its closing
 * quote), or 0 when it does not end. */
static size_t skip_string(const char *b, size_t len, size_t i)
{
	for (i++; i < len; i++) {
		if (b[i] == '\\')
			i++;
		else if (b[i] == '"')
			return i + 1;
	}
	return 0;
}

/* The end of the value that starts at b[i], or 0 when it does not end. */
static size_t skip_value(const char *b, size_t len, size_t i)
{
	size_t depth = 0;

	if (i >= len)
		return 0;
	if (b[i] == '"')
		return skip_string(b, len, i);
	if (b[i] != '{' && b[i] != '[') {
		/* a number, true, false or null: up to what ends it */
		while (i < len && !strchr(",}] \t\r\n", b[i]))
			i++;
		return i;
	}
	while (i < len) {
		switch (b[i]) {
		case '"':
			i = skip_string(b, len, i);
			if (!i)
				return 0;
			continue;
		case '{':
		case '[':
			depth++;
			break;
		case '}':
		case ']':
			if (--depth == 0)
				return i + 1;
			break;
		}
		i++;
	}
	return 0;
}

static json_t *load_slice(const char *b, size_t from, size_t to)
{
	return json_loadb(b + from, to - from, JSON_DECODE_ANY, NULL);
}

/* The items array starting at b[*i] == '['. */
static int parse_items(const char *b, size_t len, size_t *i,
		       jsonpage_item_fn each, void *arg)
{
	size_t p = skip_ws(b, len, *i + 1), end;
	json_t *item;
	int ret;

	if (p < len && b[p] == ']') {
		*i = p + 1;
		return 0;
	}
	for (;;) {
		end = skip_value(b, len, p);
		if (!end)
			return -EIO;
		item = load_slice(b, p, end);
		if (!item)
			return -EIO;
		ret = each ? each(item, arg) : 0;
		json_decref(item);
		if (ret)
			return ret;
		p = skip_ws(b, len, end);
		if (p < len && b[p] == ',') {
			p = skip_ws(b, len, p + 1);
			continue;
		}
		if (p < len && b[p] == ']') {
			*i = p + 1;
			return 0;
		}
		return -EIO;
	}
}

int jsonpage_parse(const char *buf, size_t len, jsonpage_item_fn each,
		   void *arg, json_t **rest)
{
	json_t *out = json_object(), *key = NULL, *val;
	bool items = false;
	size_t i, end;
	int ret = -EIO;

	if (!out)
		return -ENOMEM;
	i = skip_ws(buf, len, 0);
	if (i >= len || buf[i] != '{')
		goto out;
	i = skip_ws(buf, len, i + 1);
	if (i < len && buf[i] == '}') {
		i++;
		goto done;
	}
	for (;;) {
		if (i >= len || buf[i] != '"')
			goto out;
		end = skip_string(buf, len, i);
		if (!end)
			goto out;
		key = load_slice(buf, i, end);
		if (!key || !json_is_string(key))
			goto out;
		i = skip_ws(buf, len, end);
		if (i >= len || buf[i] != ':')
			goto out;
		i = skip_ws(buf, len, i + 1);
		if (!strcmp(json_string_value(key), "items")) {
			if (items || i >= len || buf[i] != '[')
				goto out;
			items = true;
			ret = parse_items(buf, len, &i, each, arg);
			if (ret)
				goto out;
			ret = -EIO;
		} else {
			end = skip_value(buf, len, i);
			if (!end)
				goto out;
			val = load_slice(buf, i, end);
			if (!val)
				goto out;
			if (json_object_set_new(out, json_string_value(key),
						val)) {
				ret = -ENOMEM;
				goto out;
			}
			i = end;
		}
		json_decref(key);
		key = NULL;
		i = skip_ws(buf, len, i);
		if (i < len && buf[i] == ',') {
			i = skip_ws(buf, len, i + 1);
			continue;
		}
		if (i < len && buf[i] == '}') {
			i++;
			break;
		}
		goto out;
	}
done:
	if (!items || skip_ws(buf, len, i) != len)
		goto out;
	ret = 0;
	if (rest) {
		*rest = out;
		out = NULL;
	}
out:
	json_decref(key);
	json_decref(out);
	return ret;
}
