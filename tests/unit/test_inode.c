// SPDX-License-Identifier: MIT
/*
 * The inode table (fs/inode.c): numbers per path, the kernel's references,
 * freeing on forget, token publication (a new inode per token, the old one
 * retired but serving its own token), snapshots.  No mount.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backend/secret.h"
#include "fs/content.h"
#include "fs/fs.h"
#include "fs/inode.h"

#include "tests/unit/check.h"

static struct secret *tok(const char *s)
{
	return secret_new(s, strlen(s));
}

int main(void)
{
	struct itab *t;
	uint64_t a, b, c, d, old, inos[8];
	struct secret *t1, *t2;
	struct secret *got;
	struct content *snap;
	struct timespec m1, m2;
	char path[64];
	int64_t exp;
	size_t base, n;

	if (sodium_init() < 0)
		return 1;
	t1 = tok("one.two.three");
	t2 = tok("four.five.six");
	t = itab_new();
	CHECK(t != NULL);
	base = itab_count(t);
	CHECK(base == 1); /* the root */
	CHECK(itab_ino_of(t, "/") == ITAB_ROOT);

	/* one number per path; references counted */
	CHECK(itab_lookup(t, "/status", &a) == 0);
	CHECK(itab_lookup(t, "/status", &b) == 0);
	CHECK(a == b && a != ITAB_ROOT);
	CHECK(itab_path(t, a, path, sizeof(path)) == 0 &&
	      !strcmp(path, "/status"));
	CHECK(itab_path(t, a, path, 4) == -ENAMETOOLONG);
	itab_forget(t, a, 1);
	CHECK(itab_ino_of(t, "/status") == a); /* one reference left */
	itab_forget(t, a, 1);
	CHECK(itab_ino_of(t, "/status") == 0); /* freed */
	CHECK(itab_path(t, a, path, sizeof(path)) == -ESTALE);
	CHECK(itab_count(t) == base);
	/* numbers are not reused */
	CHECK(itab_lookup(t, "/status", &c) == 0 && c != a);
	itab_forget(t, c, 5); /* more than it has: no underflow */
	CHECK(itab_count(t) == base);

	/* a directory entry's number: the live one, else stable, never 0 */
	CHECK(itab_dirent_ino(t, "/devices") != 0);
	CHECK(itab_dirent_ino(t, "/devices") == itab_dirent_ino(t, "/devices"));
	CHECK(itab_lookup(t, "/devices", &a) == 0);
	CHECK(itab_dirent_ino(t, "/devices") == a);
	itab_forget(t, a, 1);

	/* publishing: a new inode per token; the old one keeps its token */
	CHECK(itab_publish(t, "/token", t1, 1000, &old) == 0 && old == 0);
	a = itab_ino_of(t, "/token");
	CHECK(a != 0);
	CHECK(itab_lookup(t, "/token", &b) == 0 &&
	      b == a); /* a reader holds it */
	CHECK(itab_publish(t, "/token", t2, 2000, &old) == 0 && old == a);
	c = itab_ino_of(t, "/token");
	CHECK(c != a);
	CHECK(itab_retired(t, a) && !itab_retired(t, c));
	CHECK(itab_token(t, a, &got, &exp, NULL) == 0);
	CHECK(secret_equal(got, t1) && exp == 1000);
	secret_unref(got);
	CHECK(itab_token(t, c, &got, &exp, NULL) == 0);
	CHECK(secret_equal(got, t2) && exp == 2000);
	secret_unref(got);
	CHECK(itab_tokens(t, inos, 8) == 2);
	/* expiring: only once per inode */
	CHECK(itab_tokens_next(t, 30) == 970);
	CHECK(itab_tokens_expiring(t, 975, 30, inos, 8) == 1 && inos[0] == a);
	CHECK(itab_tokens_expiring(t, 975, 30, inos, 8) == 0);
	CHECK(itab_tokens_next(t, 30) == 1970);
	/* the reader lets go: the retired inode is freed */
	itab_forget(t, a, 1);
	CHECK(itab_token(t, a, &got, &exp, NULL) == -ENOENT);
	CHECK(itab_tokens(t, inos, 8) == 1);
	/* the current one is pinned: a forget does not free it */
	CHECK(itab_lookup(t, "/token", &b) == 0 && b == c);
	itab_forget(t, c, 1);
	CHECK(itab_ino_of(t, "/token") == c);

	/* no growth over many refreshes with readers that come and go */
	base = itab_count(t);
	for (int i = 0; i < 2000; i++) {
		CHECK(itab_lookup(t, "/token", &b) == 0);
		CHECK(itab_publish(t, "/token", i % 2 ? t1 : t2, 3000 + i,
				   &old) == 0);
		itab_forget(t, b, 1);
	}
	CHECK(itab_count(t) == base);
	CHECK(itab_tokens(t, inos, 8) == 1);

	/* snapshots: a new mtime only when the content changes */
	CHECK(itab_lookup(t, "/status", &a) == 0);
	snap = content_text("x", 1, true, false);
	itab_snap_set(t, a, snap, &m1);
	content_unref(snap);
	snap = content_text("x", 1, true, false);
	itab_snap_set(t, a, snap, &m2);
	content_unref(snap);
	CHECK(m1.tv_sec == m2.tv_sec && m1.tv_nsec == m2.tv_nsec);
	snap = itab_snap_get(t, a);
	CHECK(snap && snap->len == 2 && !memcmp(snap->data, "x\n", 2));
	content_unref(snap);
	itab_snap_stale(t, a);
	CHECK(itab_snap_get(t, a) == NULL);
	snap = content_text("y", 1, true, false);
	itab_snap_set(t, a, snap, &m2);
	content_unref(snap);
	CHECK(m1.tv_sec != m2.tv_sec || m1.tv_nsec != m2.tv_nsec);
	itab_forget(t, a, 1);

	/* a lookup's new rendering is a new inode; the old one keeps what
	 * it showed while the kernel holds it */
	CHECK(itab_lookup(t, "/server/name", &a) == 0);
	snap = content_text("one", 3, true, false);
	CHECK(itab_snap_bind(t, a, snap, &b, &m1) == 0 && b == a);
	content_unref(snap);
	CHECK(itab_lookup(t, "/server/name", &b) == 0 && b == a);
	snap = content_text("one", 3, true, false);
	CHECK(itab_snap_bind(t, a, snap, &b, &m2) == 0 && b == a);
	content_unref(snap);
	CHECK(m1.tv_sec == m2.tv_sec && m1.tv_nsec == m2.tv_nsec);
	CHECK(itab_lookup(t, "/server/name", &b) == 0 && b == a);
	snap = content_text("three", 5, true, false);
	CHECK(itab_snap_bind(t, a, snap, &b, &m2) == 0 && b != a);
	content_unref(snap);
	CHECK(itab_ino_of(t, "/server/name") == b && itab_retired(t, a));
	snap = itab_snap_shown(t, a, &m1);
	CHECK(snap && snap->len == 4 && !memcmp(snap->data, "one\n", 4));
	content_unref(snap);
	snap = itab_snap_shown(t, b, &m1);
	CHECK(snap && snap->len == 6);
	content_unref(snap);
	n = itab_count(t);
	itab_forget(t, a, 2); /* the kernel forgets the old one: freed */
	CHECK(itab_count(t) == n - 1);
	/* two lookups race: the second binds to the inode the first one
	 * left behind; what that one showed never changes */
	CHECK(itab_lookup(t, "/server/name", &a) == 0 && a == b);
	CHECK(itab_lookup(t, "/server/name", &a) == 0 && a == b);
	snap = content_text("four", 4, true, false);
	CHECK(itab_snap_bind(t, a, snap, &b, &m1) == 0 && b != a);
	content_unref(snap);
	snap = content_text("five!", 5, true, false);
	CHECK(itab_snap_bind(t, a, snap, &d, &m1) == 0); /* a: retired now */
	content_unref(snap);
	CHECK(d != a && d != b && itab_ino_of(t, "/server/name") == d);
	snap = itab_snap_shown(t, a, &m1);
	CHECK(snap && snap->len == 6 && !memcmp(snap->data, "three\n", 6));
	content_unref(snap);
	itab_forget(t, a, 1);
	itab_forget(t, b, 1);
	b = d;
	itab_snap_stale(t, b); /* written to: shows nothing until rendered */
	CHECK(itab_snap_shown(t, b, &m1) == NULL);
	itab_forget(t, b, 1);

	/* many paths: the tables grow, every one found */
	for (int i = 0; i < 5000; i++) {
		snprintf(path, sizeof(path), "/devices/%d", i);
		CHECK(itab_lookup(t, path, &a) == 0);
	}
	for (int i = 0; i < 5000; i++) {
		snprintf(path, sizeof(path), "/devices/%d", i);
		a = itab_ino_of(t, path);
		CHECK(a != 0);
		itab_forget(t, a, 1);
	}
	CHECK(itab_count(t) == base);

	/* a big listing forgotten but for a few: the tables shrink, the
	 * few are still found both ways, and the release frees them */
	for (int i = 0; i < 20000; i++) {
		snprintf(path, sizeof(path), "/service-accounts/sa-%d", i);
		CHECK(itab_lookup(t, path, &a) == 0);
	}
	for (int i = 0; i < 20000; i++) {
		if (i % 1000 == 7)
			continue;
		snprintf(path, sizeof(path), "/service-accounts/sa-%d", i);
		itab_forget(t, itab_ino_of(t, path), 1);
	}
	CHECK(itab_count(t) == base + 20);
	for (int i = 7; i < 20000; i += 1000) {
		char back[64];

		snprintf(path, sizeof(path), "/service-accounts/sa-%d", i);
		a = itab_ino_of(t, path);
		CHECK(a != 0);
		CHECK(itab_path(t, a, back, sizeof(back)) == 0);
		CHECK(!strcmp(back, path));
	}

	itab_free(t);
	secret_unref(t1);
	secret_unref(t2);
	return CHECK_DONE();
}
