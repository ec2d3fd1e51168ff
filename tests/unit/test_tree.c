// SPDX-License-Identifier: MIT
/*
 * The node table's path matching: which path is which node, what the '*'
 * components capture, modes and flags.  No mount, no server.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fs/tree.h"

#include "tests/unit/check.h"

/* path matches, with the given leaf and params (NULL-terminated). */
static void matches(const char *path, const char *leaf, mode_t type,
		    const char *p0, const char *p1)
{
	struct match m;
	int ret = tree_match(path, &m);

	CHECK(ret == 0);
	if (ret) {
		fprintf(stderr, "  no match for '%s'\n", path);
		return;
	}
	CHECK(!strcmp(m.leaf, leaf));
	CHECK((tree_mode(&(struct fs){ .token_mode = 0400 }, &m) & S_IFMT) ==
	      type);
	CHECK(m.nparams == (p0 ? 1 : 0) + (p1 ? 1 : 0));
	if (p0)
		CHECK(!strcmp(m.params[0], p0));
	if (p1)
		CHECK(!strcmp(m.params[1], p1));
}

static void no_match(const char *path)
{
	struct match m;

	CHECK(tree_match(path, &m) == -ENOENT);
}

/* Paths derived from the node table, and back. */
static void kind_paths(void)
{
	const char *const ak[] = { "ci", "deploy" };
	char path[512], small[12];
	struct match m;

	CHECK(!tree_kind_path(ZK_DEVICE, NULL, NULL, 0, path, sizeof(path)));
	CHECK(!strcmp(path, "/devices"));
	CHECK(!tree_kind_path(ZK_ACCOUNT, NULL, NULL, 0, path, sizeof(path)));
	CHECK(!strcmp(path, "/service-accounts"));
	CHECK(!tree_kind_path(ZK_ACCOUNT, "", ak, 1, path, sizeof(path)));
	CHECK(!strcmp(path, "/service-accounts/ci"));
	CHECK(!tree_kind_path(ZK_KEY, NULL, ak, 1, path, sizeof(path)));
	CHECK(!strcmp(path, "/service-accounts/ci/keys"));
	CHECK(!tree_kind_path(ZK_KEY, "key", ak, 2, path, sizeof(path)));
	CHECK(!strcmp(path, "/service-accounts/ci/keys/deploy/key"));
	/* the path is the node it was made from */
	CHECK(!tree_match(path, &m) && tree_flags(&m) & NF_TRANSIENT &&
	      m.nparams == 2 && !strcmp(m.params[1], "deploy"));
	/* shapes the table does not have */
	CHECK(tree_kind_path(ZK_USER, NULL, NULL, 0, path, sizeof(path)) ==
	      -ENOENT);
	CHECK(tree_kind_path(ZK_NKINDS, NULL, NULL, 0, path, sizeof(path)) ==
	      -ENOENT);
	CHECK(tree_kind_path(ZK_DEVICE, "rotate", ak, 1, path, sizeof(path)) ==
	      -ENOENT);
	CHECK(tree_kind_path(ZK_KEY, "key", ak, 1, path, sizeof(path)) ==
	      -EINVAL);
	CHECK(tree_kind_path(ZK_KEY, NULL, NULL, 0, path, sizeof(path)) ==
	      -EINVAL);
	/* too long for the buffer: an error, not a shorter path */
	CHECK(tree_kind_path(ZK_KEY, "key", ak, 2, small, sizeof(small)) ==
	      -ENAMETOOLONG);
}

int main(void)
{
	const char *uuid = "0b7a1f4e-9c2d-4e8a-8f1b-2c3d4e5f6a7b";
	struct fs fs = { .token_mode = 0440, .tree_mode = 0700 };
	char path[512];
	struct match m;

	matches("/", "", S_IFDIR, NULL, NULL);
	matches("/token", "token", S_IFREG, NULL, NULL);
	matches("/token.json", "token.json", S_IFREG, NULL, NULL);
	matches("/refresh", "refresh", S_IFREG, NULL, NULL);
	matches("/status", "status", S_IFREG, NULL, NULL);
	matches("/server", "server", S_IFDIR, NULL, NULL);
	matches("/server/url", "url", S_IFREG, NULL, NULL);
	matches("/server/info.json", "info.json", S_IFREG, NULL, NULL);
	matches("/whoami/is_service_account", "is_service_account", S_IFREG,
		NULL, NULL);
	snprintf(path, sizeof(path), "/devices/%s", uuid);
	matches(path, uuid, S_IFDIR, uuid, NULL);
	snprintf(path, sizeof(path), "/devices/%s/lock", uuid);
	matches(path, "lock", S_IFREG, uuid, NULL);
	snprintf(path, sizeof(path), "/devices/%s/failed_auth_attempts", uuid);
	matches(path, "failed_auth_attempts", S_IFREG, uuid, NULL);
	matches("/service-accounts/ci", "ci", S_IFDIR, "ci", NULL);
	matches("/service-accounts/ci/active", "active", S_IFREG, "ci", NULL);
	matches("/service-accounts/ci/full_name", "full_name", S_IFREG, "ci",
		NULL);
	matches("/service-accounts/ci/keys", "keys", S_IFDIR, "ci", NULL);
	matches("/service-accounts/ci/keys/default", "default", S_IFDIR, "ci",
		"default");
	matches("/service-accounts/ci/keys/default/rotate", "rotate", S_IFREG,
		"ci", "default");
	matches("/service-accounts/ci/keys/default/key", "key", S_IFREG, "ci",
		"default");
	matches("/service-accounts/a b/keys/é/info.json", "info.json", S_IFREG,
		"a b", "é");
	/* literal rows win over '*' ("info.json" is no account) */
	matches("/service-accounts/ci/info.json", "info.json", S_IFREG, "ci",
		NULL);

	no_match("/nothing");
	no_match("/token/x");
	no_match("/server/bogus");
	no_match("/whoami/url");
	no_match("/devices/x/y/z");
	no_match("/service-accounts/ci/keys/k/bogus");
	no_match("/service-accounts/./keys");
	no_match("/service-accounts/../keys");
	no_match("/service-accounts/ci/keys/..");
	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	no_match(path); /* a component longer than any name */

	/* modes: token_mode applies to token and token.json only */
	CHECK(!tree_match("/token", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0440);
	CHECK(tree_flags(&m) & NF_TOKEN);
	CHECK(!tree_match("/token.json", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0440);
	CHECK(!tree_match("/refresh", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0200);
	CHECK(tree_flags(&m) & NF_CTRL);
	CHECK(!tree_match("/status", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0444);
	CHECK(!(tree_flags(&m) & NF_CTRL));
	CHECK(!tree_match("/service-accounts/ci/keys/k/key", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0400);
	CHECK(tree_flags(&m) & NF_SECRET);
	CHECK(!(tree_flags(&m) & NF_STATIC));
	CHECK(!tree_match("/service-accounts/ci/keys/k/rotate", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0200);
	snprintf(path, sizeof(path), "/devices/%s/lock", uuid);
	CHECK(!tree_match(path, &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0600);
	CHECK(tree_flags(&m) & NF_CTRL);

	/* the admin tree follows tree_mode (owner only by default) */
	CHECK(!tree_match("/devices", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0700);
	CHECK(!tree_match("/service-accounts/ci/description", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0400);
	CHECK(!tree_match("/whoami/name", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0400);
	fs.tree_mode = 0755;
	CHECK(!tree_match("/service-accounts/ci", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0755);
	CHECK(!tree_match("/service-accounts/ci/active", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0644);
	CHECK(!tree_match("/service-accounts/ci/keys/k/rotate", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0200);
	CHECK(!tree_match("/service-accounts/ci/keys/k/key", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0400);
	/* token, status and server/ stay as they are */
	CHECK(!tree_match("/server/version", &m));
	CHECK((tree_mode(&fs, &m) & 07777) == 0444);

	kind_paths();
	return CHECK_DONE();
}
