// SPDX-License-Identifier: MIT
#include "fs/inode.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend/secret.h"
#include "backend/util.h"
#include "fs/content.h"
#include "fs/fs.h"

#include "backend/banned.h" /* always the last include */

struct inode {
	uint64_t ino;
	char *path;
	struct inode *pnext; /* chain in by_path (current inodes only) */
	struct inode *inext; /* chain in by_ino */
	struct inode *tnext, **tprev; /* list of token inodes */
	uint64_t nlookup; /* the kernel's references */
	bool pinned; /* kept while nlookup is 0 */
	bool current; /* the path's current inode (in by_path) */
	/* the token, for good (token inodes only) */
	struct secret *tok;
	int64_t tok_exp;
	bool tok_dropped; /* its pages dropped at expiry */
	/* other files: what the last GETATTR rendered */
	struct content *snap;
	uint64_t hash;
	struct timespec mtime;
};

/* A chained hash table that grows. */
#define TABLE_MIN 256 /* buckets */

struct table {
	struct inode **b;
	size_t cap, n;
};

struct itab {
	/* lock protects everything here and every inode. */
	pthread_mutex_t lock;
	struct table by_path, by_ino;
	struct inode *tokens; /* token inodes, live */
	uint64_t next_ino;
};

static uint64_t hash_ino(uint64_t ino)
{
	return ino * 0x9E3779B97F4A7C15ULL;
}

static struct inode **pchain(struct table *t, const struct inode *in, bool path)
{
	return &t->b[(path ? hash_str(in->path) : hash_ino(in->ino)) &
		     (t->cap - 1)];
}

static int table_init(struct table *t)
{
	t->cap = TABLE_MIN;
	t->n = 0;
	t->b = calloc(t->cap, sizeof(*t->b));
	return t->b ? 0 : -ENOMEM;
}

/* Rehash t into cap buckets (a failure only keeps the chains as they
 * are). */
static void table_resize(struct table *t, bool path, size_t cap)
{
	struct table nt = { .cap = cap };

	nt.b = calloc(nt.cap, sizeof(*nt.b));
	if (!nt.b)
		return;
	for (size_t i = 0; i < t->cap; i++)
		while (t->b[i]) {
			struct inode *in = t->b[i], **c;

			t->b[i] = path ? in->pnext : in->inext;
			c = pchain(&nt, in, path);
			if (path)
				in->pnext = *c;
			else
				in->inext = *c;
			*c = in;
		}
	free(t->b);
	nt.n = t->n;
	*t = nt;
}

/* Double t when it is full. */
static void table_grow(struct table *t, bool path)
{
	if (t->n >= t->cap)
		table_resize(t, path, t->cap * 2);
}

/* Halve t, and more, when it is mostly empty (after the kernel forgot a
 * big listing's inodes), so its buckets go back to the system too. */
static void table_shrink(struct table *t, bool path)
{
	size_t cap = t->cap;

	if (cap <= TABLE_MIN || t->n >= cap / 8)
		return;
	while (cap > TABLE_MIN && t->n < cap / 4)
		cap /= 2;
	table_resize(t, path, cap);
}

static void link_path(struct itab *it, struct inode *in)
{
	struct inode **c;

	table_grow(&it->by_path, true);
	c = pchain(&it->by_path, in, true);
	in->pnext = *c;
	*c = in;
	in->current = true;
	it->by_path.n++;
}

static void unlink_path(struct itab *it, struct inode *in)
{
	struct inode **pp;

	if (!in->current)
		return;
	for (pp = pchain(&it->by_path, in, true); *pp; pp = &(*pp)->pnext)
		if (*pp == in) {
			*pp = in->pnext;
			break;
		}
	in->current = false;
	it->by_path.n--;
}

static struct inode *find_path(struct itab *it, const char *path)
{
	struct inode *in =
		it->by_path.b[hash_str(path) & (it->by_path.cap - 1)];

	while (in && strcmp(in->path, path))
		in = in->pnext;
	return in;
}

static struct inode *find_ino(struct itab *it, uint64_t ino)
{
	struct inode *in = it->by_ino.b[hash_ino(ino) & (it->by_ino.cap - 1)];

	while (in && in->ino != ino)
		in = in->inext;
	return in;
}

/* A new current inode for path (replacing none).  Caller holds lock. */
static struct inode *inode_new(struct itab *it, const char *path)
{
	struct inode *in = calloc(1, sizeof(*in));
	struct inode **c;

	if (!in)
		return NULL;
	in->path = strdup(path);
	if (!in->path) {
		free(in);
		return NULL;
	}
	in->ino = it->next_ino++;
	clock_gettime(CLOCK_REALTIME, &in->mtime);
	table_grow(&it->by_ino, false);
	c = pchain(&it->by_ino, in, false);
	in->inext = *c;
	*c = in;
	it->by_ino.n++;
	link_path(it, in);
	return in;
}

static void inode_free(struct itab *it, struct inode *in)
{
	struct inode **pp;

	unlink_path(it, in);
	for (pp = pchain(&it->by_ino, in, false); *pp; pp = &(*pp)->inext)
		if (*pp == in) {
			*pp = in->inext;
			break;
		}
	it->by_ino.n--;
	if (in->tprev) {
		*in->tprev = in->tnext;
		if (in->tnext)
			in->tnext->tprev = in->tprev;
	}
	secret_unref(in->tok);
	content_unref(in->snap);
	free(in->path);
	free(in);
}

/* Free in if nobody needs it any more.  Caller holds lock, and walks no
 * table (they may shrink). */
static void maybe_free(struct itab *it, struct inode *in)
{
	if (in->nlookup || in->pinned)
		return;
	inode_free(it, in);
	table_shrink(&it->by_path, true);
	table_shrink(&it->by_ino, false);
}

struct itab *itab_new(void)
{
	struct itab *it = calloc(1, sizeof(*it));
	struct inode *root;

	if (!it)
		return NULL;
	pthread_mutex_init(&it->lock, NULL);
	it->next_ino = ITAB_ROOT;
	if (table_init(&it->by_path) || table_init(&it->by_ino)) {
		itab_free(it);
		return NULL;
	}
	root = inode_new(it, "/");
	if (!root) {
		itab_free(it);
		return NULL;
	}
	root->pinned = true;
	return it;
}

void itab_free(struct itab *it)
{
	if (!it)
		return;
	for (size_t i = 0; it->by_ino.b && i < it->by_ino.cap; i++)
		while (it->by_ino.b[i])
			inode_free(it, it->by_ino.b[i]);
	free(it->by_ino.b);
	free(it->by_path.b);
	pthread_mutex_destroy(&it->lock);
	free(it);
}

int itab_lookup(struct itab *it, const char *path, uint64_t *ino)
{
	struct inode *in;

	pthread_mutex_lock(&it->lock);
	in = find_path(it, path);
	if (!in)
		in = inode_new(it, path);
	if (in) {
		in->nlookup++;
		*ino = in->ino;
	}
	pthread_mutex_unlock(&it->lock);
	return in ? 0 : -ENOMEM;
}

void itab_forget(struct itab *it, uint64_t ino, uint64_t n)
{
	struct inode *in;

	pthread_mutex_lock(&it->lock);
	in = find_ino(it, ino);
	if (in) {
		in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
		maybe_free(it, in);
	}
	pthread_mutex_unlock(&it->lock);
}

int itab_path(struct itab *it, uint64_t ino, char *buf, size_t size)
{
	struct inode *in;
	int ret = 0;
	size_t n;

	pthread_mutex_lock(&it->lock);
	in = find_ino(it, ino);
	if (!in) {
		ret = -ESTALE;
	} else {
		n = strlen(in->path);
		if (n >= size)
			ret = -ENAMETOOLONG;
		else
			memcpy(buf, in->path, n + 1);
	}
	pthread_mutex_unlock(&it->lock);
	return ret;
}

uint64_t itab_ino_of(struct itab *it, const char *path)
{
	struct inode *in;
	uint64_t ino;

	pthread_mutex_lock(&it->lock);
	in = find_path(it, path);
	ino = in ? in->ino : 0;
	pthread_mutex_unlock(&it->lock);
	return ino;
}

uint64_t itab_dirent_ino(struct itab *it, const char *path)
{
	uint64_t ino = itab_ino_of(it, path);

	/* Above any number the counter hands out; never 0 (libc skips
	 * entries whose inode number is 0). */
	return ino ? ino : (hash_str(path) | (1ULL << 62)) & ~(1ULL << 63);
}

bool itab_retired(struct itab *it, uint64_t ino)
{
	struct inode *in;
	bool ret;

	pthread_mutex_lock(&it->lock);
	in = find_ino(it, ino);
	ret = in && !in->current;
	pthread_mutex_unlock(&it->lock);
	return ret;
}

size_t itab_count(struct itab *it)
{
	size_t n;

	pthread_mutex_lock(&it->lock);
	n = it->by_ino.n;
	pthread_mutex_unlock(&it->lock);
	return n;
}

int itab_publish(struct itab *it, const char *path, struct secret *tok,
		 int64_t exp, uint64_t *old)
{
	struct inode *prev, *in;

	pthread_mutex_lock(&it->lock);
	prev = find_path(it, path);
	if (prev)
		unlink_path(it, prev);
	in = inode_new(it, path);
	if (!in) {
		if (prev)
			link_path(it, prev);
		pthread_mutex_unlock(&it->lock);
		return -ENOMEM;
	}
	in->tok = secret_ref(tok);
	in->tok_exp = exp;
	in->pinned = true;
	in->tnext = it->tokens;
	in->tprev = &it->tokens;
	if (it->tokens)
		it->tokens->tprev = &in->tnext;
	it->tokens = in;
	*old = prev ? prev->ino : 0;
	if (prev) {
		/* Retired: it lives on while the kernel holds it. */
		prev->pinned = false;
		maybe_free(it, prev);
	}
	pthread_mutex_unlock(&it->lock);
	return 0;
}

int itab_rename(struct itab *it, const char *from, const char *to,
		uint64_t *old)
{
	struct inode *src, *dst;
	char *path;

	path = strdup(to);
	if (!path)
		return -ENOMEM;
	pthread_mutex_lock(&it->lock);
	src = find_path(it, from);
	if (!src) {
		pthread_mutex_unlock(&it->lock);
		free(path);
		return -ENOENT;
	}
	dst = find_path(it, to);
	unlink_path(it, src);
	free(src->path);
	src->path = path;
	*old = 0;
	if (dst) {
		/* replaced: it lives on while the kernel holds it */
		unlink_path(it, dst);
		dst->pinned = false;
		*old = dst->ino;
		maybe_free(it, dst);
	}
	link_path(it, src);
	pthread_mutex_unlock(&it->lock);
	return 0;
}

int itab_token(struct itab *it, uint64_t ino, struct secret **tok, int64_t *exp,
	       struct timespec *at)
{
	struct inode *in;
	int ret = -ENOENT;

	pthread_mutex_lock(&it->lock);
	in = find_ino(it, ino);
	if (in && in->tok) {
		*tok = secret_ref(in->tok);
		*exp = in->tok_exp;
		if (at)
			*at = in->mtime;
		ret = 0;
	}
	pthread_mutex_unlock(&it->lock);
	return ret;
}

size_t itab_tokens_expiring(struct itab *it, time_t now, int margin,
			    uint64_t *out, size_t max)
{
	size_t n = 0;

	pthread_mutex_lock(&it->lock);
	for (struct inode *in = it->tokens; in && n < max; in = in->tnext)
		if (!in->tok_dropped && in->tok_exp - margin <= now) {
			in->tok_dropped = true;
			out[n++] = in->ino;
		}
	pthread_mutex_unlock(&it->lock);
	return n;
}

size_t itab_tokens(struct itab *it, uint64_t *out, size_t max)
{
	size_t n = 0;

	pthread_mutex_lock(&it->lock);
	for (struct inode *in = it->tokens; in && n < max; in = in->tnext)
		out[n++] = in->ino;
	pthread_mutex_unlock(&it->lock);
	return n;
}

time_t itab_tokens_next(struct itab *it, int margin)
{
	time_t next = 0;

	pthread_mutex_lock(&it->lock);
	for (struct inode *in = it->tokens; in; in = in->tnext)
		if (!in->tok_dropped && in->tok_exp != INT64_MAX &&
		    (!next || in->tok_exp - margin < next))
			next = (time_t)(in->tok_exp - margin);
	pthread_mutex_unlock(&it->lock);
	return next;
}

void itab_snap_set(struct itab *it, uint64_t ino, struct content *c,
		   struct timespec *mtime)
{
	struct inode *in;
	uint64_t h = c ? hash_fnv1a(c->data, c->len) ^ c->len : 0;

	pthread_mutex_lock(&it->lock);
	in = find_ino(it, ino);
	if (in) {
		if (!c || !h || in->hash != h)
			clock_gettime(CLOCK_REALTIME, &in->mtime);
		in->hash = h;
		content_unref(in->snap);
		in->snap = content_ref(c);
		*mtime = in->mtime;
	} else {
		clock_gettime(CLOCK_REALTIME, mtime);
	}
	pthread_mutex_unlock(&it->lock);
}

/* Move one kernel reference from in to the path's current inode,
 * making one when the path has none.  Caller holds lock. */
static struct inode *to_current(struct itab *it, struct inode *in)
{
	struct inode *cur = find_path(it, in->path);

	if (cur == in)
		return in;
	if (!cur) {
		cur = inode_new(it, in->path);
		if (!cur)
			return NULL;
	}
	cur->nlookup++;
	in->nlookup--;
	maybe_free(it, in);
	return cur;
}

int itab_snap_bind(struct itab *it, uint64_t ino, struct content *c,
		   uint64_t *out, struct timespec *mtime)
{
	struct inode *in, *fresh;
	uint64_t h = hash_fnv1a(c->data, c->len) ^ c->len;

	pthread_mutex_lock(&it->lock);
	in = find_ino(it, ino);
	if (!in) {
		pthread_mutex_unlock(&it->lock);
		return -ESTALE;
	}
	/* a lookup racing ours may have given the path a new inode since */
	in = to_current(it, in);
	if (!in) {
		pthread_mutex_unlock(&it->lock);
		return -ENOMEM;
	}
	if (in->snap && !c->secret && in->hash != h) {
		/* A new inode for the path; the old one keeps what it showed
		 * for whoever holds it, and is freed once the kernel forgets
		 * it.  The caller's reference moves to the new one. */
		unlink_path(it, in);
		fresh = inode_new(it, in->path);
		if (!fresh) {
			link_path(it, in);
			pthread_mutex_unlock(&it->lock);
			return -ENOMEM;
		}
		fresh->nlookup = 1;
		in->nlookup--;
		maybe_free(it, in);
		in = fresh;
	} else if (in->hash != h) {
		/* nothing shown yet (or a secret, rendered per read) */
		clock_gettime(CLOCK_REALTIME, &in->mtime);
	}
	in->hash = h;
	content_unref(in->snap);
	in->snap = content_ref(c);
	*mtime = in->mtime;
	*out = in->ino;
	pthread_mutex_unlock(&it->lock);
	return 0;
}

struct content *itab_snap_shown(struct itab *it, uint64_t ino,
				struct timespec *mtime)
{
	struct inode *in;
	struct content *c = NULL;

	pthread_mutex_lock(&it->lock);
	in = find_ino(it, ino);
	if (in && in->snap && !in->snap->secret) {
		c = content_ref(in->snap);
		*mtime = in->mtime;
	}
	pthread_mutex_unlock(&it->lock);
	return c;
}

struct content *itab_snap_get(struct itab *it, uint64_t ino)
{
	struct inode *in;
	struct content *c = NULL;

	pthread_mutex_lock(&it->lock);
	in = find_ino(it, ino);
	if (in)
		c = content_ref(in->snap);
	pthread_mutex_unlock(&it->lock);
	return c;
}

void itab_snap_stale(struct itab *it, uint64_t ino)
{
	struct inode *in;

	pthread_mutex_lock(&it->lock);
	in = find_ino(it, ino);
	if (in) {
		content_unref(in->snap);
		in->snap = NULL;
		in->hash = 0;
		clock_gettime(CLOCK_REALTIME, &in->mtime);
	}
	pthread_mutex_unlock(&it->lock);
}
