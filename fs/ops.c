// SPDX-License-Identifier: MIT
/*
 * The FUSE low-level callbacks.  Files are served in the kernel's no-open
 * mode (open answers ENOSYS once for the whole connection): the page cache
 * is kept, sizes are exact.  Metadata files have an attribute timeout of
 * 0, so every read asks GETATTR first, which renders the file, keeps that
 * content for the READs that follow and gives it a new mtime when it
 * changed (the kernel then drops its pages: FUSE_CAP_AUTO_INVAL_DATA).
 * The token is served from the inode it was published on (fs/publish.h).
 */
#include "fs/ops.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/log.h"
#include "backend/secret.h"
#include "backend/token.h"
#include "backend/util.h"
#include "backend/zenml.h"
#include "fs/channel.h"
#include "fs/content.h"
#include "fs/defer.h"
#include "fs/inode.h"
#include "fs/notify.h"
#include "fs/publish.h"
#include "fs/self.h"
#include "fs/tree.h"

#include "backend/banned.h" /* always the last include */

#define TIMEOUT_LONG 86400.0
/* The kernel looks "token" up again this often while it is read: the
 * daemon learns the token is in use (token_engine_touch), and a dentry a
 * racing lookup pinned to a replaced inode lives no longer than this. */
#define TOKEN_ENTRY_TIMEOUT 1.0
/* A token inode's content never changes, but a reader holding it (an fd, a
 * single-file bind) must not be served from the page cache for long once
 * the daemon is gone: the kernel asks again this often, and a dead daemon
 * then fails the read. */
#define TOKEN_ATTR_TIMEOUT 10.0
#define WRITE_MAX 4096 /* control values are a few bytes */
#define UNREADABLE_SIZE 4096 /* a size that makes a read reach us */
/* READDIRPLUS entries with a lookup in one reply, at most (a page of
 * them is far fewer) */
#define READDIR_TAKEN_MAX 256

void ops_on_init(struct fs *fs, void (*fn)(void *arg), void *arg)
{
	fs->on_init = fn;
	fs->on_init_arg = arg;
}

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void caller_of(fuse_req_t req, struct caller *who)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	who->uid = ctx->uid;
	who->gid = ctx->gid;
	who->pid = ctx->pid;
}

/* ---- requests that wait on the server (fs/defer.h) ------------------ */

enum jop {
	J_LOOKUP,
	J_GETATTR,
	J_SETATTR,
	J_READ,
	J_WRITE,
	J_OPENDIR,
	J_READDIRPLUS,
	J_MKDIR,
	J_RMDIR,
};

/* A request moved to the pool: its arguments, copied (the kernel's
 * buffer is the worker's). */
struct job {
	struct defer_job link;
	enum jop op;
	long long at; /* queued (mono_ms) */
	fuse_req_t req;
	fuse_ino_t ino;
	size_t size;
	off_t off;
	int to_set;
	mode_t mode;
	struct stat attr;
	struct fuse_file_info fi;
	bool has_fi;
	size_t len;
	char data[]; /* a name (with its NUL), or the bytes written */
};

/*
 * Called first by every operation that may need the server: on a FUSE
 * worker, nothing may wait on the server from here on (the request moves
 * to the pool instead: defer()); on a pool thread, everything may.
 */
static bool on_worker(void)
{
	if (defer_on_pool())
		return false;
	zen_never_wait(true);
	return true;
}

/* Hand the request to pool d; it replies.  The worker returns. */
static void defer_to(struct defer *d, fuse_req_t req, const struct job *tmpl,
		     const void *data, size_t len,
		     const struct fuse_file_info *fi)
{
	struct job *j = malloc(sizeof(*j) + len);

	if (!j) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	*j = *tmpl;
	j->at = mono_ms();
	j->req = req;
	j->len = len;
	if (fi) {
		j->fi = *fi;
		j->has_fi = true;
	}
	if (len)
		memcpy(j->data, data, len);
	if (!defer_push(d, &j->link)) {
		free(j);
		fuse_reply_err(req, ENOTCONN);
	}
}

/* Metadata work, to the pool that waits on the server. */
static void defer(fuse_req_t req, const struct job *tmpl, const void *data,
		  size_t len, const struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);

	defer_to(fs->pool, req, tmpl, data, len, fi);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi);
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi);
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi);
static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi);
static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi);
static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi);
static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode);
static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);

static void job_run(struct defer_job *dj)
{
	struct job *j = (struct job *)dj;
	struct fs *fs = fuse_req_userdata(j->req);

	/* one request timeout from when the kernel handed it over */
	zen_set_deadline(j->at + zen_timeout_ms(fs->zen));
	switch (j->op) {
	case J_LOOKUP:
		op_lookup(j->req, j->ino, j->data);
		break;
	case J_GETATTR:
		op_getattr(j->req, j->ino, j->has_fi ? &j->fi : NULL);
		break;
	case J_SETATTR:
		op_setattr(j->req, j->ino, &j->attr, j->to_set, NULL);
		break;
	case J_READ:
		op_read(j->req, j->ino, j->size, j->off, &j->fi);
		break;
	case J_WRITE:
		op_write(j->req, j->ino, j->data, j->len, j->off, &j->fi);
		break;
	case J_OPENDIR:
		op_opendir(j->req, j->ino, &j->fi);
		break;
	case J_READDIRPLUS:
		op_readdirplus(j->req, j->ino, j->size, j->off, &j->fi);
		break;
	case J_MKDIR:
		op_mkdir(j->req, j->ino, j->data, j->mode);
		break;
	case J_RMDIR:
		op_rmdir(j->req, j->ino, j->data);
		break;
	}
	zen_set_deadline(0);
	free(j);
}

static void job_cancel(struct defer_job *dj)
{
	struct job *j = (struct job *)dj;

	fuse_reply_err(j->req, ENOTCONN);
	free(j);
}

struct defer *ops_pool_new(bool token)
{
	return token ? defer_new("zenmlfs-tokw", 2, job_run, job_cancel) :
		       defer_new("zenmlfs-net", 8, job_run, job_cancel);
}

static void stat_base(struct fs *fs, const struct match *m, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = tree_mode(fs, m);
	st->st_uid = tree_owner(fs, m);
	st->st_gid = fs->gid;
	st->st_blksize = 4096;
	st->st_nlink = S_ISDIR(st->st_mode) ? 2 : 1;
}

/*
 * A file's content.  An inode keeps what it showed for good (an open file
 * reads one rendering to its end, however the file changes): a GETATTR
 * answers from it; a lookup (every open and stat looks the name up:
 * entry timeout 0) renders the file again, and a new rendering gets a new
 * inode (itab_snap_bind: *ino changes).  An inode that has shown nothing
 * yet, or was written to, renders in place.  Secrets (a new key's value)
 * and token.json are rendered for every read instead.
 */
static int stat_content(struct fs *fs, const struct match *m, uint64_t *ino,
			bool lookup, struct stat *st, long long *fresh_until)
{
	struct content *c = NULL;
	int ret;

	*fresh_until = 0;
	if (!lookup && !(tree_flags(m) & NF_TOKEN_JSON)) {
		c = itab_snap_shown(fs->itab, *ino, &st->st_mtim);
		if (c) {
			st->st_size = (off_t)c->len;
			content_unref(c);
			return 0;
		}
	}
	if (tree_flags(m) & NF_TOKEN_JSON)
		ret = publish_render_json(fs, *ino, &c);
	else
		ret = tree_render(fs, m, &c, fresh_until);
	if (ret == -EACCES) {
		/* Write-only control file: a size, so that a read (by root,
		 * who passes the mode check) reaches us and fails instead of
		 * reading an empty file. */
		ret = tree_exists(fs, m, fresh_until);
		if (ret == -ZEN_WOULD_WAIT)
			return ret;
		st->st_size = UNREADABLE_SIZE;
	} else if (ret == -ENOENT || ret == -ESTALE || ret == -ZEN_WOULD_WAIT) {
		/* (a would-wait: the caller asks again from a pool thread,
		 * which renders the file and answers its exact size) */
		return ret;
	} else if (ret) {
		/* Readable later maybe: a size, so a read comes to us and
		 * gets the error. */
		st->st_size = UNREADABLE_SIZE;
		ret = 0;
	} else {
		st->st_size = (off_t)c->len;
	}
	if (lookup && c && !(tree_flags(m) & NF_TOKEN_JSON)) {
		int err = itab_snap_bind(fs->itab, *ino, c, ino, &st->st_mtim);

		ret = ret ? ret : err;
	} else {
		itab_snap_set(fs->itab, *ino, c, &st->st_mtim);
	}
	content_unref(c);
	return ret;
}

/*
 * How long the kernel may keep the entry of a server object's directory,
 * or of a name in it, once it exists: as long as the daemon's own answer
 * is fresh (at most meta_ttl), never longer, so a change made elsewhere
 * still shows within meta_ttl.  When the daemon learns sooner that the
 * object is gone (a new listing lacks it, a 404), it drops the kernel's
 * entry itself (ops_object_gone).  Only objects listed at the top
 * (accounts, devices) are cached: a key's entry is not.
 */
static double fresh_timeout(const struct match *m, long long until)
{
	long long now = mono_ms();

	if (m->nparams != 1 || !until)
		return 0;
	return until > now ? (double)(until - now) / 1000.0 : 0;
}

/* Fill st for *ino at path; the timeouts the kernel may cache it for.
 * lookup: for a LOOKUP (or a READDIRPLUS entry) of the path, whose reply
 * may name a new inode (stat_content), returned in *ino. */
static int stat_ino(struct fs *fs, const char *path, uint64_t *ino, bool lookup,
		    struct stat *st, double *attr_to, double *entry_to)
{
	long long until = 0;
	struct match m;
	bool retired;
	size_t len;
	int ret;

	ret = tree_match(path, &m);
	if (ret)
		return ret;
	stat_base(fs, &m, st);
	*entry_to = tree_flags(&m) & NF_STATIC ? TIMEOUT_LONG : 0;
	*attr_to = 0;
	if (S_ISDIR(st->st_mode)) {
		ret = tree_exists(fs, &m, &until);
		st->st_mtime = fs->mount_time;
		if (*entry_to) {
			*attr_to = 1.0;
		} else {
			/* an object's directory: its attributes never
			 * change, only whether it exists */
			*entry_to = fresh_timeout(&m, until);
			*attr_to = *entry_to;
		}
	} else if (tree_flags(&m) & NF_TOKEN) {
		/* Its token never changes: only its nlink (replaced). */
		ret = publish_stat(fs, *ino, &len, &st->st_mtim, &retired);
		st->st_size = (off_t)len;
		st->st_nlink = retired ? 0 : 1;
		*entry_to = tree_flags(&m) & NF_HIDDEN ? 0 :
							 TOKEN_ENTRY_TIMEOUT;
		*attr_to = TOKEN_ATTR_TIMEOUT;
	} else {
		ret = stat_content(fs, &m, ino, lookup, st, &until);
		/* Every open looks a file up again (entry timeout 0): a new
		 * rendering is found then, on a new inode. */
		*entry_to = tree_flags(&m) & NF_TOKEN_JSON ?
				    TOKEN_ENTRY_TIMEOUT :
				    0;
		if (!ret && itab_retired(fs->itab, *ino))
			st->st_nlink = 0;
	}
	st->st_ino = *ino;
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
	st->st_blocks = (st->st_size + 511) / 512;
	return ret;
}

/* The path of ino and the node it is. */
static int ino_match(struct fs *fs, fuse_ino_t ino, char *path, size_t size,
		     struct match *m)
{
	int ret = itab_path(fs->itab, ino, path, size);

	return ret ? ret : tree_match(path, m);
}

/* The path of a child of parent into buf. */
static int child_path(struct fs *fs, fuse_ino_t parent, const char *name,
		      char *buf, size_t size)
{
	size_t n;
	int ret;

	if (strlen(name) >= TREE_PARAM_MAX)
		return -ENAMETOOLONG;
	ret = itab_path(fs->itab, parent, buf, size);
	if (ret)
		return ret;
	n = strlen(buf);
	if (n + strlen(name) + 2 > size)
		return -ENAMETOOLONG;
	snprintf(buf + n, size - n, "%s%s", n > 1 ? "/" : "", name);
	return 0;
}

/* A LOOKUP or MKDIR reply for path: the current inode, one more kernel
 * reference. */
static int entry_for(struct fs *fs, const char *path,
		     struct fuse_entry_param *e)
{
	uint64_t ino;
	int ret;

	memset(e, 0, sizeof(*e));
	if (tree_match(path, &(struct match){ 0 }))
		return -ENOENT;
	ret = itab_lookup(fs->itab, path, &ino);
	if (ret)
		return ret;
	ret = stat_ino(fs, path, &ino, true, &e->attr, &e->attr_timeout,
		       &e->entry_timeout);
	if (ret) {
		itab_forget(fs->itab, ino, 1);
		return ret;
	}
	e->ino = ino;
	e->generation = 1;
	return 0;
}

/* Reply with e, for which a lookup took a reference: one the kernel never
 * gets (the request was interrupted, the connection is gone) is dropped
 * again, as its FORGET will never come. */
static void reply_entry(struct fs *fs, fuse_req_t req,
			const struct fuse_entry_param *e)
{
	if (fuse_reply_entry(req, e) && e->ino)
		itab_forget(fs->itab, e->ino, 1);
}

void ops_object_gone(void *arg, enum zkind kind, const char *parent,
		     const char *name)
{
	struct fs *fs = arg;
	char dir[PATH_MAX];
	uint64_t ino;

	/* fresh_timeout() caches only the objects listed at the top (no
	 * parent, a directory without '*') */
	if (parent || tree_kind_path(kind, NULL, NULL, 0, dir, sizeof(dir)))
		return;
	ino = itab_ino_of(fs->itab, dir);
	if (ino)
		notify_entry(fs->meta, ino, name);
}

static void op_init(void *data, struct fuse_conn_info *conn)
{
	struct fs *fs = data;

	/* Metadata files depend on the kernel dropping pages when size or
	 * mtime change. */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	/* Lookups in one directory may wait on the network: in parallel
	 * (fs/channel.c puts the flag in the INIT reply). */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) {
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
		channel_want_parallel_dirops(fs->chan, true);
	}
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* Every listing with its entries' attributes: the kernel's "auto"
	 * mode would send them only for the first buffer, while `ls -l`
	 * reads the whole listing before it stats any name. */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	if (!(conn->capable & FUSE_CAP_NO_OPEN_SUPPORT))
		log_warn("the kernel has no no-open mode: every read of "
			 "'token' goes through the daemon");
	if (fs->on_init)
		fs->on_init(fs->on_init_arg);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	bool worker = on_worker();
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	char path[PATH_MAX];
	struct match m;
	int ret;

	ret = child_path(fs, parent, name, path, sizeof(path));
	if (!ret)
		ret = entry_for(fs, path, &e);
	if (ret == -ZEN_WOULD_WAIT && worker) {
		defer(req, &(struct job){ .op = J_LOOKUP, .ino = parent }, name,
		      strlen(name) + 1, NULL);
		return;
	}
	/* Someone reads the token: the credential check may run. */
	if (!ret && !tree_match(path, &m) &&
	    (tree_flags(&m) & (NF_TOKEN | NF_TOKEN_JSON)) &&
	    !(tree_flags(&m) & NF_HIDDEN) &&
	    !self_is(fs->self, fuse_req_ctx(req)->pid))
		token_engine_touch(fs->te);
	if (ret == -ENOENT && !tree_match(path, &m) &&
	    (tree_flags(&m) & NF_TOKEN) && !(tree_flags(&m) & NF_HIDDEN))
		log_err("lookup of '%s' by pid %d found no token: a bug, "
			"please report it",
			path, (int)fuse_req_ctx(req)->pid);
	if (ret == -ENOENT) {
		/* negative entry, not cached: objects come and go */
		memset(&e, 0, sizeof(e));
		fuse_reply_entry(req, &e);
		return;
	}
	if (ret)
		fuse_reply_err(req, -ret);
	else
		reply_entry(fs, req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	itab_forget(fs_of(req)->itab, ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	struct fs *fs = fs_of(req);

	for (size_t i = 0; i < count; i++)
		itab_forget(fs->itab, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	bool worker = on_worker();
	struct fs *fs = fs_of(req);
	double attr_to, entry_to;
	char path[PATH_MAX];
	struct stat st;
	int ret;

	ret = itab_path(fs->itab, ino, path, sizeof(path));
	if (!ret)
		ret = stat_ino(fs, path, &(uint64_t){ ino }, false, &st,
			       &attr_to, &entry_to);
	if (ret == -ZEN_WOULD_WAIT && worker) {
		defer(req, &(struct job){ .op = J_GETATTR, .ino = ino }, NULL,
		      0, fi);
		return;
	}
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, attr_to);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	bool worker = on_worker();
	struct fs *fs = fs_of(req);
	double attr_to, entry_to;
	char path[PATH_MAX];
	struct caller who;
	struct match m;
	struct stat st;
	int ret;

	caller_of(req, &who);
	ret = ino_match(fs, ino, path, sizeof(path), &m);
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
		ret = tree_truncate(fs, &m, &who);
		if (ret)
			goto out;
	}
	ret = stat_ino(fs, path, &(uint64_t){ ino }, false, &st, &attr_to,
		       &entry_to);
	if (ret == -ZEN_WOULD_WAIT && worker) {
		defer(req,
		      &(struct job){ .op = J_SETATTR,
				     .ino = ino,
				     .attr = *attr,
				     .to_set = to_set },
		      NULL, 0, NULL);
		return;
	}
out:
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, 0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* The kernel's no-open mode: no more opens for this connection, and
	 * the page cache is kept across opens. */
	fuse_reply_err(req, ENOSYS);
}

static void reply_bytes(fuse_req_t req, const char *data, size_t len,
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
	bool worker = on_worker();
	struct fs *fs = fs_of(req);
	struct content *c = NULL;
	struct secret *tok;
	char path[PATH_MAX];
	struct match m;
	int ret;

	ret = ino_match(fs, ino, path, sizeof(path), &m);
	if (ret)
		goto err;
	if (S_ISDIR(tree_mode(fs, &m))) {
		ret = -EISDIR;
		goto err;
	}
	if (tree_flags(&m) & NF_TOKEN) {
		ret = publish_read(fs, ino, &tok);
		if (ret)
			goto err;
		reply_bytes(req, tok->buf, tok->len, size, off);
		secret_unref(tok);
		return;
	}
	c = itab_snap_get(fs->itab, ino);
	/* A secret is re-checked on every read from the start (key window,
	 * token expiry). */
	if (!c || (c->secret && off == 0)) {
		content_unref(c);
		c = NULL;
		if (tree_flags(&m) & NF_TOKEN_JSON)
			ret = publish_render_json(fs, ino, &c);
		else
			ret = tree_render(fs, &m, &c, NULL);
		if (ret == -ZEN_WOULD_WAIT && worker) {
			defer(req,
			      &(struct job){ .op = J_READ,
					     .ino = ino,
					     .size = size,
					     .off = off },
			      NULL, 0, fi);
			return;
		}
		if (ret)
			goto err;
	}
	reply_bytes(req, c->data, c->len, size, off);
	content_unref(c);
	return;
err:
	fuse_reply_err(req, -ret);
}

struct inval {
	struct fs *fs;
	struct notifier *q;
	uint64_t skip, seq;
};

static void inval_file(const char *path, void *arg)
{
	struct inval *iv = arg;
	uint64_t ino = itab_ino_of(iv->fs->itab, path);

	if (ino && ino != iv->skip) {
		itab_snap_stale(iv->fs->itab, ino);
		iv->seq = notify_inval(iv->q, ino);
	}
}

/*
 * A write changed the object m names: the kernel keeps its other files
 * (attributes and pages) while the record is fresh (fresh_timeout), so
 * drop them before the write is answered, and a read that follows sees
 * the change.  Not the written file itself: the writer holds its pages
 * until we answer, and the kernel asks again after a write anyway.
 */
static void invalidate_object(struct fs *fs, const struct match *m,
			      uint64_t written)
{
	struct inval iv = { fs, fs->meta, written, 0 };

	tree_object_files(m, inval_file, &iv);
	if (iv.seq)
		notify_wait(fs->meta, iv.seq, 1000);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	bool worker = on_worker();
	struct fs *fs = fs_of(req);
	char path[PATH_MAX];
	struct caller who;
	struct match m;
	int ret;

	caller_of(req, &who);
	ret = ino_match(fs, ino, path, sizeof(path), &m);
	if (ret)
		goto out;
	/* A write waits on the server: a server object's control file on
	 * the metadata pool, refresh on the token's own (it waits for the
	 * mint and the new token's publication, never behind metadata). */
	if (worker && size <= WRITE_MAX) {
		defer_to(tree_names_object(&m) ? fs_of(req)->pool :
						 fs_of(req)->tpool,
			 req,
			 &(struct job){ .op = J_WRITE, .ino = ino, .off = off },
			 buf, size, fi);
		return;
	}
	if (size > WRITE_MAX) {
		log_warn("uid %u pid %d wrote %zu bytes to '%s': control "
			 "values are a few bytes",
			 (unsigned)who.uid, (int)who.pid, size, path);
		ret = -EINVAL;
		goto out;
	}
	ret = tree_write(fs_of(req), &m, buf, size, off, &who);
	/* The kernel put the written bytes in its page cache: the next
	 * GETATTR reports a new mtime, so it drops them (the kernel asks
	 * again after a write). */
	itab_snap_stale(fs->itab, ino);
	if (!ret)
		invalidate_object(fs_of(req), &m, ino);
out:
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_write(req, size);
}

/* An open directory: its path and its entries as they were at opendir;
 * on its mount's list of them until released. */
struct dirh {
	struct dirh *prev, *next;
	struct dir_snap snap;
	char path[];
};

/*
 * The directories the kernel holds open.  An unmount can end the
 * connection with a RELEASEDIR still queued (the kernel sends it in the
 * background, and drops it with the connection): what it would have freed
 * is freed with the mount instead.
 */
struct open_dirs {
	pthread_mutex_t lock;
	struct dirh *head;
};

struct open_dirs *ops_dirs_new(void)
{
	struct open_dirs *od = calloc(1, sizeof(*od));

	if (od)
		pthread_mutex_init(&od->lock, NULL);
	return od;
}

static void dirh_free(struct dirh *d)
{
	tree_closedir(&d->snap);
	free(d);
}

void ops_dirs_free(struct open_dirs *od)
{
	struct dirh *d, *next;

	if (!od)
		return;
	for (d = od->head; d; d = next) {
		next = d->next;
		dirh_free(d);
	}
	pthread_mutex_destroy(&od->lock);
	free(od);
}

static void dirh_link(struct open_dirs *od, struct dirh *d)
{
	pthread_mutex_lock(&od->lock);
	d->prev = NULL;
	d->next = od->head;
	if (od->head)
		od->head->prev = d;
	od->head = d;
	pthread_mutex_unlock(&od->lock);
}

/* Off the list and freed: released, or its opendir reply came too late. */
static void dirh_close(struct open_dirs *od, struct dirh *d)
{
	pthread_mutex_lock(&od->lock);
	if (d->prev)
		d->prev->next = d->next;
	else
		od->head = d->next;
	if (d->next)
		d->next->prev = d->prev;
	pthread_mutex_unlock(&od->lock);
	dirh_free(d);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	bool worker = on_worker();
	struct fs *fs = fs_of(req);
	char path[PATH_MAX];
	struct dirh *d = NULL;
	struct match m;
	uint64_t seq;
	int ret;

	ret = ino_match(fs, ino, path, sizeof(path), &m);
	if (ret)
		goto out;
	d = calloc(1, sizeof(*d) + strlen(path) + 1);
	if (!d) {
		ret = -ENOMEM;
		goto out;
	}
	memcpy(d->path, path, strlen(path) + 1);
	seq = notify_last(fs->meta);
	ret = tree_opendir(fs, &m, &d->snap);
	if (ret == -ZEN_WOULD_WAIT && worker) {
		free(d);
		defer(req, &(struct job){ .op = J_OPENDIR, .ino = ino }, NULL,
		      0, fi);
		return;
	}
	/* A new listing may have dropped names the kernel still holds
	 * (ops_object_gone): gone from stat too once ls no longer lists
	 * them.  Only a pool thread fetches a listing; a worker's came
	 * from the cache. */
	if (!worker && notify_last(fs->meta) != seq)
		notify_wait(fs->meta, notify_last(fs->meta), 1000);
out:
	if (ret) {
		free(d);
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = (uintptr_t)d;
	dirh_link(fs->dirs, d);
	if (fuse_reply_open(req, fi) == -ENOENT)
		dirh_close(fs->dirs, d); /* interrupted: no release comes */
}

/*
 * The entry at offset i of d (0 ".", 1 "..", then the listing's entry
 * i - 2): *name, and in *e what readdir gives with it: for readdirplus
 * the lookup's reply (*looked_up: it took a reference), else, or when
 * the name is gone since opendir, its type and inode number alone.
 * -ZEN_WOULD_WAIT (only when may_defer): the lookup would wait.
 */
static int dirent_at(struct fs *fs, const struct dirh *d, fuse_ino_t ino,
		     size_t i, bool plus, bool may_defer, const char **name,
		     struct fuse_entry_param *e, bool *looked_up)
{
	char child[PATH_MAX];
	bool is_dir = true;
	int ret;

	memset(e, 0, sizeof(*e));
	*looked_up = false;
	*name = i == 0 ? "." :
		i == 1 ? ".." :
			 tree_dir_entry(&d->snap, i - 2, &is_dir);
	e->attr.st_mode = is_dir ? S_IFDIR : S_IFREG;
	if (i < 2) {
		e->attr.st_ino = ino; /* "." and ".." carry no lookup */
		return 0;
	}
	snprintf(child, sizeof(child), "%s/%s",
		 strcmp(d->path, "/") ? d->path : "", *name);
	ret = plus ? entry_for(fs, child, e) : -ENOENT;
	if (ret == -ZEN_WOULD_WAIT && may_defer)
		return ret;
	if (!ret) {
		*looked_up = true;
		return 0;
	}
	memset(e, 0, sizeof(*e));
	e->attr.st_mode = is_dir ? S_IFDIR : S_IFREG;
	e->attr.st_ino = itab_dirent_ino(fs->itab, child);
	return 0;
}

/*
 * READDIR and READDIRPLUS.  With plus, each entry carries what a LOOKUP
 * would answer (one more kernel reference, and the timeouts stat_ino
 * gives), so `ls -l` or `find` over a listing costs no LOOKUP per name;
 * an entry that does not fit takes its reference back.
 */
static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi, bool plus)
{
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
	size_t used = 0, n, total = tree_dir_len(&d->snap) + 2, ntaken = 0;
	bool worker = plus && on_worker(), looked_up;
	uint64_t taken[READDIR_TAKEN_MAX];
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	const char *name;
	char *buf;

	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (size_t i = off; i < total; i++) {
		if (i >= 2 && plus && ntaken == READDIR_TAKEN_MAX)
			break;
		if (dirent_at(fs, d, ino, i, plus, worker, &name, &e,
			      &looked_up)) {
			/* again on the pool, from the same offset */
			for (size_t t = 0; t < ntaken; t++)
				itab_forget(fs->itab, taken[t], 1);
			free(buf);
			defer(req,
			      &(struct job){ .op = J_READDIRPLUS,
					     .ino = ino,
					     .size = size,
					     .off = off },
			      NULL, 0, fi);
			return;
		}
		if (plus)
			n = fuse_add_direntry_plus(req, buf + used, size - used,
						   name, &e, (off_t)(i + 1));
		else
			n = fuse_add_direntry(req, buf + used, size - used,
					      name, &e.attr, (off_t)(i + 1));
		if (n > size - used) {
			if (looked_up)
				itab_forget(fs->itab, e.ino, 1);
			break;
		}
		if (looked_up)
			taken[ntaken++] = e.ino;
		used += n;
	}
	/* not delivered: the kernel took none of the references */
	if (fuse_reply_buf(req, buf, used))
		for (size_t t = 0; t < ntaken; t++)
			itab_forget(fs->itab, taken[t], 1);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	dirh_close(fs_of(req)->dirs, (struct dirh *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	char path[PATH_MAX];
	struct caller who;
	struct match m;
	int ret;

	if (on_worker()) {
		defer(req,
		      &(struct job){
			      .op = J_MKDIR, .ino = parent, .mode = mode },
		      name, strlen(name) + 1, NULL);
		return;
	}
	caller_of(req, &who);
	ret = child_path(fs, parent, name, path, sizeof(path));
	if (ret)
		goto out;
	if (tree_match(path, &m)) {
		log_warn("uid %u pid %d may not mkdir '%s': nothing can be "
			 "created there",
			 (unsigned)who.uid, (int)who.pid, path);
		ret = -EPERM;
		goto out;
	}
	ret = tree_mkdir(fs, &m, &who);
	if (!ret)
		ret = entry_for(fs, path, &e);
out:
	if (ret)
		fuse_reply_err(req, -ret);
	else
		reply_entry(fs, req, &e);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	char path[PATH_MAX];
	struct caller who;
	struct match m;
	int ret;

	if (on_worker()) {
		defer(req, &(struct job){ .op = J_RMDIR, .ino = parent }, name,
		      strlen(name) + 1, NULL);
		return;
	}
	caller_of(req, &who);
	ret = child_path(fs_of(req), parent, name, path, sizeof(path));
	if (!ret)
		ret = tree_match(path, &m);
	if (!ret)
		ret = tree_rmdir(fs_of(req), &m, &who);
	fuse_reply_err(req, -ret);
}

/* Operations the tree never allows: EPERM, and a log line naming them. */
static void refuse_op(fuse_req_t req, const char *what, fuse_ino_t parent,
		      const char *name)
{
	char path[PATH_MAX] = "?";
	struct caller who;

	caller_of(req, &who);
	if (child_path(fs_of(req), parent, name, path, sizeof(path)))
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
	struct fs *fs = fs_of(req);
	struct caller who;

	/* The daemon's own publication of a new token (fs/publish.c). */
	caller_of(req, &who);
	if (!flags &&
	    !publish_renamed(fs, &who, parent, name, newparent, newname))
		fuse_reply_err(req, 0);
	else
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
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.unlink = op_unlink,
	.mknod = op_mknod,
	.create = op_create,
	.symlink = op_symlink,
	.link = op_link,
	.rename = op_rename,
};
