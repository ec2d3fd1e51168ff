// SPDX-License-Identifier: MIT
/*
 * The FUSE low-level callbacks.  Files are served in the kernel's no-open
 * mode (open answers ENOSYS once for the whole connection): the page cache
 * is kept, sizes are exact, and content changes are signalled either by a
 * new size/mtime on getattr (attribute timeout 0 for metadata) or by an
 * explicit invalidation from the notify thread (the token).
 */
#include "fs/ops.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/log.h"
#include "backend/secret.h"
#include "backend/token.h"
#include "fs/notify.h"
#include "fs/tree.h"

#define TIMEOUT_LONG 86400.0
#define TOKEN_ATTR_TIMEOUT 10.0 /* safety net behind invalidation */
#define TOKEN_ENTRY_TIMEOUT 1.0
#define WRITE_MAX 4096 /* control values are a few bytes */
#define NBUCKETS 1024
#define RETIRE_GRACE 1 /* seconds a retired inode keeps its content */

struct inode {
	fuse_ino_t ino;
	char *path;
	struct inode *hnext;
	/* The content the last getattr reported, so a READ that follows
	 * serves the same bytes the kernel sized the file for. */
	struct content *snap;
	uint64_t hash;
	struct timespec mtime;
	/* A retired inode (its name now has a new one) keeps its snap until
	 * then, so readers that hold it finish with what they started. */
	time_t frozen_until;
	bool retired;
	uint64_t nlookup; /* the kernel's references (lookups - forgets) */
};

static struct fs *g_fs;
/* itab_lock protects the table and every inode's snap, hash, mtime. */
static pthread_mutex_t itab_lock = PTHREAD_MUTEX_INITIALIZER;
static struct inode **itab;
static size_t itab_n, itab_cap;
static struct inode *buckets[NBUCKETS];

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h;
}

/* A new inode for path, found first by later lookups.  Caller holds
 * itab_lock. */
static struct inode *inode_new(const char *path)
{
	uint64_t h = hash_bytes(path, strlen(path)) % NBUCKETS;
	struct inode *in, **nt;

	if (itab_n == itab_cap) {
		size_t cap = itab_cap ? itab_cap * 2 : 256;

		nt = realloc(itab, cap * sizeof(*nt));
		if (!nt)
			return NULL;
		itab = nt;
		itab_cap = cap;
	}
	in = calloc(1, sizeof(*in));
	if (!in)
		return NULL;
	in->path = strdup(path);
	if (!in->path) {
		free(in);
		return NULL;
	}
	/* Inode numbers are table index + 1: the root is 1. */
	in->ino = itab_n + 1;
	clock_gettime(CLOCK_REALTIME, &in->mtime);
	itab[itab_n++] = in;
	in->hnext = buckets[h];
	buckets[h] = in;
	return in;
}

/* The current inode of path (made if create).  Caller holds itab_lock. */
static struct inode *inode_by_path(const char *path, bool create)
{
	uint64_t h = hash_bytes(path, strlen(path)) % NBUCKETS;
	struct inode *in;

	for (in = buckets[h]; in; in = in->hnext)
		if (!strcmp(in->path, path))
			return in;
	return create ? inode_new(path) : NULL;
}

/* Caller holds itab_lock. */
static struct inode *inode_by_ino(fuse_ino_t ino)
{
	return ino && ino <= itab_n ? itab[ino - 1] : NULL;
}

static bool frozen(const struct inode *in)
{
	return in->frozen_until && time(NULL) < in->frozen_until;
}

int ops_retire(const char *path, struct content *keep)
{
	struct inode *old, *in;
	int ret = 0;

	pthread_mutex_lock(&itab_lock);
	old = inode_by_path(path, false);
	if (old) {
		in = inode_new(path);
		if (!in) {
			ret = -ENOMEM;
		} else {
			old->retired = true;
			old->frozen_until = time(NULL) + RETIRE_GRACE;
			if (keep) {
				content_unref(old->snap);
				old->snap = content_ref(keep);
			}
		}
	}
	pthread_mutex_unlock(&itab_lock);
	return ret;
}

size_t ops_thaw(fuse_ino_t *out, size_t max)
{
	time_t now = time(NULL);
	size_t n = 0;

	pthread_mutex_lock(&itab_lock);
	for (size_t i = 0; i < itab_n && n < max; i++) {
		struct inode *in = itab[i];

		if (!in->path || !in->frozen_until || now < in->frozen_until)
			continue;
		in->frozen_until = 0;
		content_unref(in->snap);
		in->snap = NULL;
		clock_gettime(CLOCK_REALTIME, &in->mtime);
		out[n++] = in->ino;
	}
	pthread_mutex_unlock(&itab_lock);
	return n;
}

size_t ops_inos_of(const char *path, fuse_ino_t *out, size_t max)
{
	size_t n = 0;

	pthread_mutex_lock(&itab_lock);
	/* Newest first: the current inode, then retired ones the kernel
	 * still holds. */
	for (size_t i = itab_n; i-- > 0 && n < max;) {
		struct inode *in = itab[i];

		if (in->path && !strcmp(in->path, path) && !frozen(in) &&
		    (!in->retired || in->nlookup))
			out[n++] = in->ino;
	}
	pthread_mutex_unlock(&itab_lock);
	return n;
}

/* The path of ino, copied into buf.  Caller holds no lock. */
static int ino_path(fuse_ino_t ino, char *buf, size_t size)
{
	int ret = 0;

	pthread_mutex_lock(&itab_lock);
	if (ino == 0 || ino > itab_n || !itab[ino - 1]->path)
		ret = -ESTALE;
	else if (strlen(itab[ino - 1]->path) >= size)
		ret = -ENAMETOOLONG;
	else
		memcpy(buf, itab[ino - 1]->path,
		       strlen(itab[ino - 1]->path) + 1);
	pthread_mutex_unlock(&itab_lock);
	return ret;
}

fuse_ino_t ops_ino_of(const char *path)
{
	struct inode *in;
	fuse_ino_t ino;

	pthread_mutex_lock(&itab_lock);
	in = inode_by_path(path, false);
	ino = in ? in->ino : 0;
	pthread_mutex_unlock(&itab_lock);
	return ino;
}

/* Is the live inode in at path or below it?  ("/a" covers "/a/b", not
 * "/ab"; NULL and "/" cover everything.) */
static bool under(const struct inode *in, const char *path)
{
	size_t n;

	if (!in->path || frozen(in))
		return false;
	if (!path || !strcmp(path, "/"))
		return true;
	n = strlen(path);
	return !strncmp(in->path, path, n) &&
	       (in->path[n] == '\0' || in->path[n] == '/');
}

size_t ops_inos_under(const char *path, fuse_ino_t **out)
{
	fuse_ino_t *v;
	size_t n = 0;

	pthread_mutex_lock(&itab_lock);
	v = malloc((itab_n ? itab_n : 1) * sizeof(*v));
	for (size_t i = 0; v && i < itab_n; i++)
		if (under(itab[i], path))
			v[n++] = itab[i]->ino;
	pthread_mutex_unlock(&itab_lock);
	*out = v;
	return v ? n : 0;
}

void ops_stale(const char *path)
{
	pthread_mutex_lock(&itab_lock);
	for (size_t i = 0; i < itab_n; i++) {
		struct inode *in = itab[i];

		if (!under(in, path))
			continue;
		in->hash = 0;
		clock_gettime(CLOCK_REALTIME, &in->mtime);
		content_unref(in->snap);
		in->snap = NULL;
	}
	pthread_mutex_unlock(&itab_lock);
}

int ops_init(struct fs *fs)
{
	static const char *const fixed[] = { "/", "/token", "/token.json" };

	g_fs = fs;
	pthread_mutex_lock(&itab_lock);
	for (size_t i = 0; i < 3; i++)
		if (!inode_by_path(fixed[i], true)) {
			pthread_mutex_unlock(&itab_lock);
			return -ENOMEM;
		}
	pthread_mutex_unlock(&itab_lock);
	return 0;
}

void ops_release(void)
{
	pthread_mutex_lock(&itab_lock);
	for (size_t i = 0; i < itab_n; i++) {
		content_unref(itab[i]->snap);
		free(itab[i]->path);
		free(itab[i]);
	}
	free(itab);
	itab = NULL;
	itab_n = itab_cap = 0;
	memset(buckets, 0, sizeof(buckets));
	pthread_mutex_unlock(&itab_lock);
}

static void caller_of(fuse_req_t req, struct caller *who)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	who->uid = ctx->uid;
	who->gid = ctx->gid;
	who->pid = ctx->pid;
}

/*
 * Fill st for path.  For a regular file this renders it (metadata comes
 * from the cache; the token from the published copy), keeps the content
 * for the READs that follow, and gives it a new mtime when it changed so
 * the kernel drops stale pages.
 */
static int stat_path(const char *path, fuse_ino_t ino, struct match *m,
		     struct stat *st, double *attr_to, double *entry_to)
{
	struct content *c = NULL;
	struct inode *in;
	uint64_t h;
	int ret;

	ret = tree_match(path, m);
	if (ret)
		return ret;
	/* A retired inode answers with what it froze. */
	pthread_mutex_lock(&itab_lock);
	in = inode_by_ino(ino);
	if (in && frozen(in) && in->snap) {
		memset(st, 0, sizeof(*st));
		st->st_mode = tree_mode(g_fs, m);
		st->st_uid = g_fs->uid;
		st->st_gid = g_fs->gid;
		st->st_nlink = 1;
		st->st_size = in->snap->len;
		st->st_mtim = in->mtime;
		pthread_mutex_unlock(&itab_lock);
		*attr_to = 1.0;
		*entry_to = 0;
		return 0;
	}
	pthread_mutex_unlock(&itab_lock);
	memset(st, 0, sizeof(*st));
	st->st_mode = tree_mode(g_fs, m);
	st->st_uid = g_fs->uid;
	st->st_gid = g_fs->gid;
	/* A new API key is for the user who mounted, whatever -o uid says. */
	if ((tree_flags(m) & (NF_SECRET | NF_STATIC)) == NF_SECRET)
		st->st_uid = g_fs->owner;
	st->st_blksize = 4096;
	*entry_to = tree_flags(m) & NF_STATIC ? TIMEOUT_LONG : 0;
	*attr_to = 0;

	if (S_ISDIR(st->st_mode)) {
		ret = tree_exists(g_fs, m);
		if (ret)
			return ret;
		st->st_nlink = 2;
		st->st_mtime = g_fs->mount_time;
		*attr_to = *entry_to ? 1.0 : 0;
	} else if (tree_flags(m) & NF_TOKEN) {
		uint64_t gen = notify_token_gen();

		st->st_nlink = 1;
		st->st_size = notify_token_len();
		/* A dentry pinned to a retired inode by a racing lookup is
		 * revalidated this soon (one LOOKUP a second in all). */
		*entry_to = TOKEN_ENTRY_TIMEOUT;
		st->st_mtim.tv_sec = g_fs->mount_time + gen / 1000000000ULL;
		st->st_mtim.tv_nsec = gen % 1000000000ULL;
		*attr_to = TOKEN_ATTR_TIMEOUT;
	} else {
		st->st_nlink = 1;
		/* token.json moves to a new inode with the token */
		if (!strcmp(path, "/token.json"))
			*entry_to = TOKEN_ENTRY_TIMEOUT;
		ret = tree_render(g_fs, m, &c);
		if (ret == -EACCES) {
			/* Write-only control file: a size, so that a read
			 * (by root, who passes the mode check) reaches us
			 * and fails instead of reading an empty file. */
			ret = tree_exists(g_fs, m);
			if (ret)
				return ret;
			st->st_size = 4096;
		} else if (ret == -ENOENT || ret == -ESTALE) {
			return ret;
		} else if (ret) {
			/* Readable later maybe: give the kernel a size so a
			 * read comes to us and gets the error. */
			st->st_size = 4096;
		}
		h = c ? hash_bytes(c->data, c->len) ^ c->len : 0;
		pthread_mutex_lock(&itab_lock);
		in = ino ? inode_by_ino(ino) : inode_by_path(path, true);
		if (in) {
			if (!c || in->hash != h || !h)
				clock_gettime(CLOCK_REALTIME, &in->mtime);
			in->hash = h;
			content_unref(in->snap);
			in->snap = c;
			c = NULL;
			st->st_mtim = in->mtime;
		}
		pthread_mutex_unlock(&itab_lock);
		if (in && in->snap)
			st->st_size = in->snap->len;
		content_unref(c);
		if (!in)
			return -ENOMEM;
	}
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
	st->st_blocks = (st->st_size + 511) / 512;
	return 0;
}

static int entry_for(const char *path, struct fuse_entry_param *e)
{
	struct match m;
	struct inode *in;
	int ret;

	memset(e, 0, sizeof(*e));
	ret = stat_path(path, 0, &m, &e->attr, &e->attr_timeout,
			&e->entry_timeout);
	if (ret)
		return ret;
	pthread_mutex_lock(&itab_lock);
	in = inode_by_path(path, true);
	if (in) {
		e->ino = in->ino;
		in->nlookup++; /* the reply gives the kernel a reference */
	}
	pthread_mutex_unlock(&itab_lock);
	if (!in)
		return -ENOMEM;
	e->attr.st_ino = e->ino;
	e->generation = 1;
	return 0;
}

static int child_path(fuse_ino_t parent, const char *name, char *buf,
		      size_t size)
{
	int ret = ino_path(parent, buf, size);
	size_t n;

	if (ret)
		return ret;
	n = strlen(buf);
	if (strlen(name) >= TREE_PARAM_MAX || n + strlen(name) + 2 > size)
		return -ENAMETOOLONG;
	snprintf(buf + n, size - n, "%s%s", n > 1 ? "/" : "", name);
	return 0;
}

/* The kernel dropped nlookup references to ino.  A retired inode nobody
 * holds any more is gone for good: free it (its number is not reused). */
static void forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	struct inode *in, **pp;
	uint64_t h;

	pthread_mutex_lock(&itab_lock);
	in = inode_by_ino(ino);
	if (!in || !in->path)
		goto out;
	in->nlookup = in->nlookup > nlookup ? in->nlookup - nlookup : 0;
	if (in->nlookup || !in->retired)
		goto out;
	h = hash_bytes(in->path, strlen(in->path)) % NBUCKETS;
	for (pp = &buckets[h]; *pp; pp = &(*pp)->hnext)
		if (*pp == in) {
			*pp = in->hnext;
			break;
		}
	free(in->path);
	in->path = NULL;
	content_unref(in->snap);
	in->snap = NULL;
out:
	pthread_mutex_unlock(&itab_lock);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		forget_one(forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static bool retired(fuse_ino_t ino)
{
	struct inode *in;
	bool ret;

	pthread_mutex_lock(&itab_lock);
	in = inode_by_ino(ino);
	ret = in && in->retired;
	pthread_mutex_unlock(&itab_lock);
	return ret;
}

/* The inode number a child will have (made now if needed). */
static fuse_ino_t child_ino(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct inode *in;
	fuse_ino_t ino = 1;

	if ((size_t)snprintf(path, sizeof(path), "%s%s%s", dir,
			     strcmp(dir, "/") ? "/" : "", name) >= sizeof(path))
		return ino;
	pthread_mutex_lock(&itab_lock);
	in = inode_by_path(path, true);
	if (in)
		ino = in->ino;
	pthread_mutex_unlock(&itab_lock);
	return ino;
}

static void op_init(void *data, struct fuse_conn_info *conn)
{
	/* Metadata files depend on the kernel dropping pages when size or
	 * mtime change. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	if (!(conn->capable & FUSE_CAP_NO_OPEN_SUPPORT))
		log_warn("the kernel has no no-open mode: every read of "
			 "'token' goes through the daemon");
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	char path[PATH_MAX];
	int ret;

	ret = child_path(parent, name, path, sizeof(path));
	if (!ret)
		ret = entry_for(path, &e);
	/* The token may have moved to a new inode meanwhile: answering with
	 * the retired one would pin it under the name again. */
	for (int tries = 0; !ret && tries < 3 && retired(e.ino); tries++) {
		forget_one(e.ino, 1);
		ret = entry_for(path, &e);
	}
	if (ret == -ENOENT) {
		/* negative entry, not cached: objects come and go */
		memset(&e, 0, sizeof(e));
		fuse_reply_entry(req, &e);
		return;
	}
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	double attr_to, entry_to;
	char path[PATH_MAX];
	struct match m;
	struct stat st;
	int ret;

	ret = ino_path(ino, path, sizeof(path));
	if (!ret)
		ret = stat_path(path, ino, &m, &st, &attr_to, &entry_to);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	st.st_ino = ino;
	fuse_reply_attr(req, &st, attr_to);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	double attr_to, entry_to;
	char path[PATH_MAX];
	struct caller who;
	struct match m;
	struct stat st;
	int ret;

	caller_of(req, &who);
	ret = ino_path(ino, path, sizeof(path));
	if (!ret)
		ret = tree_match(path, &m);
	if (ret)
		goto out;
	/* Only truncation of control files is accepted (and ignored);
	 * times, modes and owners are the daemon's. */
	if (to_set & ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME_NOW |
		       FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)) {
		ret = -EPERM;
		goto out;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		ret = tree_truncate(g_fs, &m, &who);
		if (ret)
			goto out;
	}
	ret = stat_path(path, ino, &m, &st, &attr_to, &entry_to);
out:
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	st.st_ino = ino;
	fuse_reply_attr(req, &st, 0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* The kernel's no-open mode: no more opens for this connection, and
	 * the page cache is kept across opens. */
	fuse_reply_err(req, ENOSYS);
}

static void reply_content(fuse_req_t req, const char *data, size_t len,
			  size_t size, off_t off)
{
	if (off < 0 || (size_t)off >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, data + off,
			       len - off < size ? len - off : size);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct content *c = NULL;
	struct secret *tok;
	char path[PATH_MAX];
	struct inode *in;
	struct match m;
	int ret;

	ret = ino_path(ino, path, sizeof(path));
	if (!ret)
		ret = tree_match(path, &m);
	if (ret)
		goto err;
	if (S_ISDIR(tree_mode(g_fs, &m))) {
		ret = -EISDIR;
		goto err;
	}
	pthread_mutex_lock(&itab_lock);
	in = inode_by_ino(ino);
	if (in && frozen(in) && in->snap) {
		c = content_ref(in->snap);
		pthread_mutex_unlock(&itab_lock);
		reply_content(req, c->data, c->len, size, off);
		content_unref(c);
		return;
	}
	if (in)
		c = content_ref(in->snap);
	pthread_mutex_unlock(&itab_lock);
	if (tree_flags(&m) & NF_TOKEN) {
		content_unref(c);
		ret = notify_token_get(g_fs, &tok);
		if (ret)
			goto err;
		reply_content(req, tok->buf, tok->len, size, off);
		secret_unref(tok);
		return;
	}
	/* A secret is re-checked on every read (key window, token expiry). */
	if (!c || (c->secret && off == 0)) {
		content_unref(c);
		c = NULL;
		ret = tree_render(g_fs, &m, &c);
		if (ret)
			goto err;
	}
	reply_content(req, c->data, c->len, size, off);
	content_unref(c);
	return;
err:
	fuse_reply_err(req, -ret);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	char path[PATH_MAX];
	struct caller who;
	struct match m;
	int ret;

	caller_of(req, &who);
	ret = ino_path(ino, path, sizeof(path));
	if (!ret)
		ret = tree_match(path, &m);
	if (ret)
		goto out;
	if (size > WRITE_MAX) {
		log_warn("uid %u pid %d wrote %zu bytes to '%s': control "
			 "values are a few bytes",
			 (unsigned)who.uid, (int)who.pid, size, path);
		ret = -EINVAL;
		goto out;
	}
	ret = tree_write(g_fs, &m, buf, size, &who);
out:
	/* Make the next getattr report a new mtime, so the kernel drops any
	 * page it kept.  No invalidation from the notify thread here: the
	 * kernel holds this file's page locked during the next write, whose
	 * handler may wait for that thread (refresh). */
	ops_stale(path);
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_write(req, size);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct names names = { 0 };
	char path[PATH_MAX], *buf = NULL;
	size_t used = 0, n;
	struct match m;
	struct stat st = { 0 };
	int ret;

	ret = ino_path(ino, path, sizeof(path));
	if (!ret)
		ret = tree_match(path, &m);
	if (!ret)
		ret = tree_list(g_fs, &m, &names);
	if (ret)
		goto out;
	buf = malloc(size);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	/* Offsets: 0 ".", 1 "..", then names[i] at i + 2. */
	for (size_t i = off; i < names.n + 2; i++) {
		const char *name = i == 0 ? "." :
				   i == 1 ? ".." :
					    names.v[i - 2];

		st.st_mode = i < 2 || names.is_dir[i - 2] ? S_IFDIR : S_IFREG;
		/* libc skips entries whose inode number is 0 */
		st.st_ino = i < 2 ? ino : child_ino(path, name);
		n = fuse_add_direntry(req, buf + used, size - used, name, &st,
				      (off_t)(i + 1));
		if (n > size - used)
			break;
		used += n;
	}
out:
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
	names_release(&names);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fuse_entry_param e;
	char path[PATH_MAX];
	struct caller who;
	struct match m;
	int ret;

	caller_of(req, &who);
	ret = child_path(parent, name, path, sizeof(path));
	if (ret)
		goto out;
	if (tree_match(path, &m)) {
		log_warn("uid %u pid %d may not mkdir '%s': nothing can be "
			 "created there",
			 (unsigned)who.uid, (int)who.pid, path);
		ret = -EPERM;
		goto out;
	}
	ret = tree_mkdir(g_fs, &m, &who);
	if (!ret) {
		ops_stale(path);
		ret = entry_for(path, &e);
	}
out:
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_entry(req, &e);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	char path[PATH_MAX];
	struct caller who;
	struct match m;
	int ret;

	caller_of(req, &who);
	ret = child_path(parent, name, path, sizeof(path));
	if (!ret)
		ret = tree_match(path, &m);
	if (!ret)
		ret = tree_rmdir(g_fs, &m, &who);
	if (!ret)
		ops_stale(path);
	fuse_reply_err(req, -ret);
}

/* Operations the tree never allows: EPERM, and a log line naming them. */
static void refuse_op(fuse_req_t req, const char *what, fuse_ino_t parent,
		      const char *name)
{
	char path[PATH_MAX] = "?";
	struct caller who;

	caller_of(req, &who);
	if (child_path(parent, name, path, sizeof(path)))
		snprintf(path, sizeof(path), "?/%.200s", name);
	log_warn("uid %u pid %d may not %s '%s': the tree does not allow it",
		 (unsigned)who.uid, (int)who.pid, what, path);
	fuse_reply_err(req, EPERM);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	refuse_op(req, "unlink", parent, name);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	refuse_op(req, "create", parent, name);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	refuse_op(req, "create", parent, name);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	refuse_op(req, "symlink", parent, name);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	refuse_op(req, "link", newparent, newname);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	refuse_op(req, "rename", parent, name);
}

const struct fuse_lowlevel_ops zen_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.readdir = op_readdir,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.unlink = op_unlink,
	.mknod = op_mknod,
	.create = op_create,
	.symlink = op_symlink,
	.link = op_link,
	.rename = op_rename,
};
