// SPDX-License-Identifier: MIT
/*
 * The table of nodes and what each one does.  A pattern is a path whose
 * components are literals, '*' (a name the server knows: a device id, an
 * account name...) or '@' (one of the object's attribute files: every
 * ZF_FILE field of its kind, backend/api.c).
 *
 * Adding an attribute file: a row in the kind's field table (api.c).
 * Adding a control file: a row here and a handler in control.c.  Adding a
 * directory of server objects: rows here with its kind, the kind in api.c,
 * and a test (docs/hacking.md).
 */
#include "fs/tree.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/log.h"
#include "backend/secret.h"
#include "backend/store.h"
#include "backend/util.h"
#include "backend/zenml.h"
#include "fs/content.h"
#include "fs/control.h"
#include "fs/publish.h"

#include "backend/banned.h" /* always the last include */

/* ---- the table ------------------------------------------------------- */

/* Who may do what: the mode and owner a node gets (docs/design.md,
 * Security). */
enum access {
	A_ROOT, /* 0755, owner: the user who mounted (it renames new tokens
		   into place: fs/publish.c) */
	A_PUBLIC, /* its own perm, owner -o uid */
	A_TOKEN, /* token_mode, owner -o uid */
	A_ADMIN, /* tree_mode's read bits (+ owner write for rw control
		    files), owner: the user who mounted */
	A_SECRET, /* 0400, owner: the user who mounted */
};

/* How a control file's value is written. */
enum ctl_syntax {
	CTL_NONE,
	CTL_BOOL, /* 1 0 true false yes no on off */
	CTL_TRUE, /* only the true words */
	CTL_MINUTES, /* a number of minutes */
};

#define RETAIN_MAX (366ULL * 24 * 60) /* a year, in minutes */

struct node {
	const char *pattern;
	mode_t type; /* S_IFDIR or S_IFREG */
	mode_t perm; /* A_PUBLIC: the mode; others: which bits apply */
	enum access access;
	unsigned flags;
	/* The object a '*' row (or a singleton directory) names, and the
	 * kind every row below it reads. */
	enum zkind kind;
	ctl_render_fn *render; /* NULL: generic attribute / info.json */
	enum ctl_syntax syntax;
	ctl_write_fn *write;
	const char *on_means, *off_means; /* for the log: what 1 / 0 do */
	ctl_mkdir_fn *mkdir; /* on a directory: creates a '*' child */
	ctl_rmdir_fn *rmdir;
};

#define DIR S_IFDIR
#define REG S_IFREG
#define NK ZK_NKINDS
#define ATTRS(k) "@", REG, 0444, A_ADMIN, 0, k
#define BOOL_CTL(fn, on, off) \
	.syntax = CTL_BOOL, .write = fn, .on_means = on, .off_means = off

static const struct node nodes[] = {
	{ "/", DIR, 0755, A_ROOT, NF_STATIC, NK },
	{ "/" TOKEN_NAME, REG, 0, A_TOKEN, NF_TOKEN | NF_SECRET | NF_STATIC,
	  NK },
	{ "/" TOKEN_JSON_NAME, REG, 0, A_TOKEN,
	  NF_TOKEN_JSON | NF_SECRET | NF_STATIC, NK },
	{ "/" TOKEN_STAGED, REG, 0, A_TOKEN, NF_TOKEN | NF_SECRET | NF_HIDDEN,
	  NK },
	{ "/" TOKEN_JSON_STAGED, REG, 0, A_TOKEN,
	  NF_TOKEN_JSON | NF_SECRET | NF_HIDDEN, NK },
	{ "/refresh", REG, 0200, A_PUBLIC, NF_CTRL | NF_STATIC, NK,
	  .syntax = CTL_TRUE, .write = ctl_refresh,
	  .on_means = "mint a new token" },
	{ "/status", REG, 0444, A_PUBLIC, NF_STATIC, NK,
	  .render = render_status },
	{ "/metrics", REG, 0444, A_PUBLIC, NF_STATIC, NK,
	  .render = render_metrics },

	{ "/server", DIR, 0555, A_PUBLIC, NF_STATIC, ZK_SERVER },
	{ "/server/@", REG, 0444, A_PUBLIC, NF_STATIC, ZK_SERVER },
	{ "/server/info.json", REG, 0444, A_PUBLIC, NF_STATIC, ZK_SERVER },

	{ "/whoami", DIR, 0555, A_ADMIN, NF_STATIC, ZK_USER },
	{ "/whoami/@", REG, 0444, A_ADMIN, NF_STATIC, ZK_USER },
	{ "/whoami/info.json", REG, 0444, A_ADMIN, NF_STATIC, ZK_USER },

	{ "/devices", DIR, 0555, A_ADMIN, NF_STATIC, NK },
	{ "/devices/*", DIR, 0555, A_ADMIN, 0, ZK_DEVICE,
	  .rmdir = rmdir_object },
	{ "/devices/*/@", REG, 0444, A_ADMIN, 0, ZK_DEVICE },
	{ "/devices/*/info.json", REG, 0444, A_ADMIN, 0, ZK_DEVICE },
	{ "/devices/*/lock", REG, 0644, A_ADMIN, NF_CTRL, ZK_DEVICE,
	  .render = render_lock, BOOL_CTL(ctl_lock, "lock", "unlock") },

	{ "/service-accounts", DIR, 0555, A_ADMIN, NF_STATIC, NK,
	  .mkdir = mkdir_account },
	{ "/service-accounts/*", DIR, 0555, A_ADMIN, 0, ZK_ACCOUNT,
	  .rmdir = rmdir_object },
	{ "/service-accounts/*/@", REG, 0444, A_ADMIN, 0, ZK_ACCOUNT },
	{ "/service-accounts/*/info.json", REG, 0444, A_ADMIN, 0, ZK_ACCOUNT },
	{ "/service-accounts/*/active", REG, 0644, A_ADMIN, NF_CTRL, ZK_ACCOUNT,
	  .render = render_active,
	  BOOL_CTL(ctl_active, "activate", "deactivate") },
	{ "/service-accounts/*/keys", DIR, 0555, A_ADMIN, 0, ZK_ACCOUNT,
	  .mkdir = mkdir_key },
	{ "/service-accounts/*/keys/*", DIR, 0555, A_ADMIN, 0, ZK_KEY,
	  .rmdir = rmdir_object },
	{ "/service-accounts/*/keys/*/@", REG, 0444, A_ADMIN, 0, ZK_KEY },
	{ "/service-accounts/*/keys/*/info.json", REG, 0444, A_ADMIN, 0,
	  ZK_KEY },
	{ "/service-accounts/*/keys/*/active", REG, 0644, A_ADMIN, NF_CTRL,
	  ZK_KEY, .render = render_active,
	  BOOL_CTL(ctl_active, "activate", "deactivate") },
	{ "/service-accounts/*/keys/*/rotate", REG, 0200, A_ADMIN, NF_CTRL,
	  ZK_KEY, .syntax = CTL_MINUTES, .write = ctl_rotate },
	{ "/service-accounts/*/keys/*/key", REG, 0400, A_SECRET,
	  NF_SECRET | NF_TRANSIENT, ZK_KEY, .render = render_key_value },
};

#define NNODES (sizeof(nodes) / sizeof(nodes[0]))

/* ---- matching -------------------------------------------------------- */

/* Next component of *p (after any '/'), its length; advances *p. */
static size_t next_comp(const char **p, const char **start)
{
	const char *s = *p;
	size_t n;

	while (*s == '/')
		s++;
	n = strcspn(s, "/");
	*start = s;
	*p = s + n;
	return n;
}

static int field_named(enum zkind k, const char *name, size_t n)
{
	const struct zfield *f;
	size_t nf;

	if (k == NK)
		return -1;
	f = zkind_fields(k, &nf);
	for (size_t i = 0; i < nf; i++)
		if ((f[i].flags & ZF_FILE) && strlen(f[i].name) == n &&
		    !memcmp(f[i].name, name, n))
			return (int)i;
	return -1;
}

static bool match_node(const struct node *nd, const char *path, struct match *m)
{
	const char *pp = nd->pattern, *ps = path, *pc, *sc;
	size_t pn, sn;

	m->nparams = 0;
	m->leaf = "";
	m->field = -1;
	for (;;) {
		pn = next_comp(&pp, &pc);
		sn = next_comp(&ps, &sc);
		if (!pn || !sn)
			return pn == sn;
		if (pn == 1 && *pc == '*') {
			/* ".." and "." are never names of server objects */
			if (sn >= TREE_PARAM_MAX ||
			    m->nparams == TREE_MAX_PARAMS ||
			    (sn == 1 && sc[0] == '.') ||
			    (sn == 2 && sc[0] == '.' && sc[1] == '.'))
				return false;
			memcpy(m->params[m->nparams], sc, sn);
			m->params[m->nparams++][sn] = '\0';
		} else if (pn == 1 && *pc == '@') {
			m->field = field_named(nd->kind, sc, sn);
			if (m->field < 0)
				return false;
		} else if (pn != sn || memcmp(pc, sc, sn)) {
			return false;
		}
		m->leaf = sc;
	}
}

static bool is_wild(const struct node *nd)
{
	return strchr(nd->pattern, '*') || strchr(nd->pattern, '@');
}

int tree_match(const char *path, struct match *m)
{
	/* Literal rows first, so "info.json" is not taken for a '*'. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < NNODES; i++) {
			if (is_wild(&nodes[i]) != (pass == 1))
				continue;
			if (match_node(&nodes[i], path, m)) {
				m->node = &nodes[i];
				return 0;
			}
		}
	/* A second pass can leave a partial match behind: reset it. */
	memset(m, 0, sizeof(*m));
	return -ENOENT;
}

void tree_path(const struct match *m, char *buf, size_t size)
{
	size_t n = 0;
	int p = 0;

	for (const char *c = m->node->pattern; *c && n + 1 < size; c++) {
		const char *fill = *c == '*' && p < m->nparams ?
					   m->params[p++] :
				   *c == '@' ? m->leaf :
					       NULL;

		if (fill)
			n += strlcpy_z(buf + n, fill, size - n);
		else
			buf[n++] = *c;
		if (n >= size)
			n = size - 1;
	}
	buf[n] = '\0';
}

/* The row whose pattern is the first len bytes of pattern. */
static const struct node *row(const char *pattern, size_t len)
{
	for (size_t i = 0; i < NNODES; i++)
		if (strlen(nodes[i].pattern) == len &&
		    !memcmp(nodes[i].pattern, pattern, len))
			return &nodes[i];
	return NULL;
}

/* The row of nd's parent directory. */
static const struct node *parent_row(const struct node *nd)
{
	const char *slash = strrchr(nd->pattern, '/');
	size_t n = slash ? (size_t)(slash - nd->pattern) : 0;

	return row(nd->pattern, n ? n : 1);
}

int tree_kind_path(enum zkind k, const char *leaf, const char *const *params,
		   int nparams, char *buf, size_t size)
{
	const struct node *star = NULL, *nd;
	struct match m = { .leaf = "" };
	char pattern[256];
	int n, stars = 0;

	for (size_t i = 0; i < NNODES && !star; i++)
		if (nodes[i].kind == k && nodes[i].type == DIR &&
		    !strcmp(strrchr(nodes[i].pattern, '/'), "/*"))
			star = &nodes[i];
	if (!star)
		return -ENOENT;
	if (!leaf) {
		nd = parent_row(star);
	} else if (!leaf[0]) {
		nd = star;
	} else {
		n = snprintf(pattern, sizeof(pattern), "%s/%s", star->pattern,
			     leaf);
		nd = n > 0 && (size_t)n < sizeof(pattern) ? row(pattern, n) :
							    NULL;
	}
	if (!nd)
		return -ENOENT;
	for (const char *c = nd->pattern; *c; c++)
		stars += *c == '*';
	if (stars != nparams || nparams > TREE_MAX_PARAMS)
		return -EINVAL;
	m.node = nd;
	m.nparams = nparams;
	for (int i = 0; i < nparams; i++)
		if (strlcpy_z(m.params[i], params[i], TREE_PARAM_MAX) >=
		    TREE_PARAM_MAX)
			return -ENAMETOOLONG;
	tree_path(&m, buf, size);
	return strlen(buf) + 1 < size ? 0 : -ENAMETOOLONG;
}

void tree_object_files(const struct match *m,
		       void (*fn)(const char *path, void *arg), void *arg)
{
	const char *star = strchr(m->node->pattern, '*');
	size_t plen = star ? (size_t)(star - m->node->pattern) + 1 : 0;
	char path[PATH_MAX];

	if (m->nparams != 1 || !star)
		return;
	for (size_t i = 0; i < NNODES; i++) {
		const struct node *nd = &nodes[i];
		const char *leaf = nd->pattern + plen + 1;
		const struct zfield *f = NULL;
		size_t nf = 1;

		if (nd->type != REG ||
		    strncmp(nd->pattern, m->node->pattern, plen) ||
		    nd->pattern[plen] != '/' || strchr(leaf, '/'))
			continue;
		/* an '@' row stands for every attribute file of its kind */
		if (!strcmp(leaf, "@"))
			f = zkind_fields(nd->kind, &nf);
		for (size_t j = 0; j < nf; j++) {
			if (f && !(f[j].flags & ZF_FILE))
				continue;
			snprintf(path, sizeof(path), "%.*s%s/%s",
				 (int)(plen - 1), nd->pattern, m->params[0],
				 f ? f[j].name : leaf);
			fn(path, arg);
		}
	}
}

/* ---- what the server serves ------------------------------------------ */

/* The kind that decides whether a row is there: its own, or for a
 * directory of objects (devices/, service-accounts/), its objects'. */
static enum zkind gate_kind(const struct node *nd)
{
	if (nd->kind != NK || nd->type != DIR)
		return nd->kind;
	for (size_t i = 0; i < NNODES; i++) {
		const char *leaf = strrchr(nodes[i].pattern, '/') + 1;

		if (!strcmp(leaf, "*") && parent_row(&nodes[i]) == nd)
			return nodes[i].kind;
	}
	return NK;
}

/* Is the row there on this server (backend/api.h: api_serves)?  field:
 * an '@' row's attribute, else -1.  The token's files, refresh and status
 * are on every server. */
static bool served(struct fs *fs, const struct node *nd, int field)
{
	enum zkind k = gate_kind(nd);

	return k == NK || api_serves(fs->zen, k, field);
}

/* ---- modes ----------------------------------------------------------- */

mode_t tree_mode(const struct fs *fs, const struct match *m)
{
	const struct node *nd = m->node;
	mode_t perm;

	switch (nd->access) {
	case A_TOKEN:
		perm = fs->token_mode;
		break;
	case A_ADMIN:
		if (nd->type == DIR)
			perm = fs->tree_mode;
		else
			/* the tree's read bits, and the owner's write bit
			 * where the row has one */
			perm = (fs->tree_mode & nd->perm & 0444) |
			       (nd->perm & 0200);
		break;
	case A_SECRET:
		perm = 0400;
		break;
	default:
		perm = nd->perm;
	}
	return nd->type | perm;
}

uid_t tree_owner(const struct fs *fs, const struct match *m)
{
	return m->node->access == A_PUBLIC || m->node->access == A_TOKEN ?
		       fs->uid :
		       fs->owner;
}

bool tree_names_object(const struct match *m)
{
	return m->node->kind != NK;
}

unsigned tree_flags(const struct match *m)
{
	return m->node->flags;
}

/* ---- objects --------------------------------------------------------- */

static void objs_release(struct objs *o)
{
	for (int i = 0; i < o->n; i++)
		zrec_unref(o->rec[i]);
	o->n = 0;
}

/*
 * Find the objects m names: each '*' component in turn (the kind of the
 * row that ends with it; a key's parent is its account's UUID), or the
 * singleton of the row's kind.  The last object is looked up fresh
 * (store_find); those a path goes through to it only by name and UUID,
 * from the identity map (store_ident).  When the last is not found under
 * one the map gave unconfirmed, the path is looked up again with each
 * object fresh: the name may be another object's now.  0, -ENOENT, or
 * how the server failed.
 */
static int resolve(struct fs *fs, const struct match *m, struct objs *o)
{
	const char *pat = m->node->pattern, *star;
	struct zen_err e = { 0 };
	bool checked, all_checked, verify = false;
	int ret = 0;

again:
	star = pat;
	all_checked = true;
	o->n = 0;
	o->fresh_until = 0;
	for (int i = 0; i < m->nparams; i++) {
		const char *parent = i ? zrec_id(o->rec[i - 1]) : NULL;
		const struct node *r;
		long long until = 0;

		star = strchr(star, '*');
		r = row(pat, (size_t)(star - pat) + 1);
		star++;
		checked = true;
		if (i < m->nparams - 1 && !verify)
			ret = store_ident(fs->store, r->kind, parent,
					  m->params[i], &o->rec[i], &checked,
					  &e);
		else
			ret = store_find(fs->store, r->kind, parent,
					 m->params[i], &o->rec[i], &until, &e);
		if (ret)
			break;
		all_checked = all_checked && checked;
		if (until && (!o->fresh_until || until < o->fresh_until))
			o->fresh_until = until;
		o->n++;
	}
	if (ret == -ENOENT && !all_checked) {
		objs_release(o);
		verify = true;
		goto again;
	}
	/* A file of a singleton (server, whoami) reads its record. */
	if (!ret && !m->nparams && zkind_flags(m->node->kind) & ZKF_SINGLETON &&
	    m->node->type == REG) {
		ret = store_find(fs->store, m->node->kind, NULL, "", &o->rec[0],
				 &o->fresh_until, &e);
		if (!ret)
			o->n = 1;
	}
	if (ret) {
		if (ret != -ENOENT && ret != -ZEN_WOULD_WAIT)
			log_warn("cannot look up '%s': %s", m->leaf, e.msg);
		objs_release(o);
	}
	return ret;
}

int tree_exists(struct fs *fs, const struct match *m, long long *fresh_until)
{
	struct objs o;
	int ret;

	if (fresh_until)
		*fresh_until = 0;
	if (!served(fs, m->node, m->field))
		return -ENOENT;
	/* Singletons exist; only '*' components are asked about. */
	if (!m->nparams)
		return 0;
	ret = resolve(fs, m, &o);
	if (!ret && (m->node->flags & NF_TRANSIENT) &&
	    !key_value_exists(fs, m, &o))
		ret = -ENOENT;
	if (!ret && fresh_until && !(m->node->flags & NF_TRANSIENT))
		*fresh_until = o.fresh_until;
	objs_release(&o);
	return ret;
}

/* ---- rendering ------------------------------------------------------- */

/* An attribute file: the field's text and a newline. */
static int render_field(const struct zrec *r, int field, struct content **out)
{
	const char *v = zrec_get(r, field);

	*out = content_text(v ? v : "", v ? strlen(v) : 0, true, false);
	return *out ? 0 : -ENOMEM;
}

/* info.json: every attribute file's fact, typed, in one object. */
static int render_info(struct fs *fs, const struct zrec *r,
		       struct content **out)
{
	const struct zfield *f;
	json_t *obj = json_object(), *v;
	size_t nf;
	char *s;

	if (!obj)
		return -ENOMEM;
	f = zkind_fields(zrec_kind(r), &nf);
	for (size_t i = 0; i < nf; i++) {
		const char *t = zrec_get(r, (int)i);

		if (!(f[i].flags & ZF_FILE) ||
		    !api_serves(fs->zen, zrec_kind(r), (int)i))
			continue;
		if (!t)
			v = json_null();
		else if (f[i].type == FT_BOOL)
			v = json_boolean(!strcmp(t, "1"));
		else if (f[i].type == FT_INT)
			v = json_integer(strtoll(t, NULL, 10));
		else
			v = json_string(t);
		json_object_set_new(obj, f[i].name, v ? v : json_null());
	}
	s = json_dumps(obj, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(obj);
	if (!s)
		return -ENOMEM;
	*out = content_text(s, strlen(s), true, false);
	json_str_free(s);
	return *out ? 0 : -ENOMEM;
}

int tree_render(struct fs *fs, const struct match *m, struct content **out,
		long long *fresh_until)
{
	const struct node *nd = m->node;
	struct objs o;
	int ret;

	if (fresh_until)
		*fresh_until = 0;
	if (!served(fs, nd, m->field))
		return -ENOENT;
	if (nd->type != REG)
		return -EISDIR;
	if (nd->flags & (NF_TOKEN | NF_TOKEN_JSON))
		return -EINVAL; /* served by fs/publish.c */
	if (nd->flags & NF_CTRL && !nd->render)
		return -EACCES; /* write-only control file */
	ret = resolve(fs, m, &o);
	if (ret)
		return ret;
	if (nd->render)
		ret = nd->render(fs, m, &o, out);
	else if (m->field >= 0)
		ret = render_field(o.rec[o.n - 1], m->field, out);
	else
		ret = render_info(fs, o.rec[o.n - 1], out);
	if (!ret && fresh_until && !(nd->flags & NF_TRANSIENT))
		*fresh_until = o.fresh_until;
	objs_release(&o);
	return ret;
}

/* ---- directories ----------------------------------------------------- */

/* One more fixed name in d: 0 or -ENOMEM. */
static int dir_add(struct dir_snap *d, const char *name, bool is_dir)
{
	struct dir_fixed *v;

	if (d->nfixed == d->cap) {
		v = reallocarray(d->fixed, d->cap ? 2 * d->cap : 16,
				 sizeof(*v));
		if (!v)
			return -ENOMEM;
		d->fixed = v;
		d->cap = d->cap ? 2 * d->cap : 16;
	}
	d->fixed[d->nfixed++] = (struct dir_fixed){ name, is_dir };
	return 0;
}

int tree_opendir(struct fs *fs, const struct match *m, struct dir_snap *d)
{
	const struct node *dir = m->node, *star = NULL;
	struct zen_err e = { 0 };
	struct objs o = { 0 };
	int ret;

	if (dir->type != DIR)
		return -ENOTDIR;
	memset(d, 0, sizeof(*d));
	ret = resolve(fs, m, &o);
	if (ret)
		return ret;
	for (size_t i = 0; i < NNODES && !ret; i++) {
		const struct node *nd = &nodes[i];
		const char *leaf = strrchr(nd->pattern, '/') + 1;

		if (nd == dir || parent_row(nd) != dir ||
		    nd->flags & NF_HIDDEN || !served(fs, nd, -1))
			continue;
		if (!strcmp(leaf, "*")) {
			star = nd;
		} else if (!strcmp(leaf, "@")) {
			const struct zfield *f;
			size_t nf;

			f = zkind_fields(nd->kind, &nf);
			for (size_t j = 0; j < nf && !ret; j++)
				if (f[j].flags & ZF_FILE &&
				    served(fs, nd, (int)j))
					ret = dir_add(d, f[j].name, false);
		} else {
			/* A transient file is listed only while it exists. */
			if (nd->flags & NF_TRANSIENT) {
				struct match km = *m;

				km.node = nd;
				if (!key_value_exists(fs, &km, &o))
					continue;
			}
			ret = dir_add(d, leaf, nd->type == DIR);
		}
	}
	if (star && !ret)
		ret = store_list(fs->store, star->kind,
				 o.n ? zrec_id(o.rec[o.n - 1]) : NULL, &d->list,
				 &e);
	if (ret == -ENOMEM && !e.msg[0])
		zen_err_set(&e, "out of memory");
	if (ret && ret != -ZEN_WOULD_WAIT)
		log_warn("cannot list '%s': %s", m->leaf[0] ? m->leaf : "/",
			 e.msg);
	if (ret)
		tree_closedir(d);
	objs_release(&o);
	return ret;
}

size_t tree_dir_len(const struct dir_snap *d)
{
	return d->nfixed + (d->list ? zlist_len(d->list) : 0);
}

const char *tree_dir_entry(const struct dir_snap *d, size_t i, bool *is_dir)
{
	if (i < d->nfixed) {
		*is_dir = d->fixed[i].is_dir;
		return d->fixed[i].name;
	}
	*is_dir = true;
	return zrec_name(zlist_at(d->list, i - d->nfixed));
}

void tree_closedir(struct dir_snap *d)
{
	zlist_unref(d->list);
	free(d->fixed);
	memset(d, 0, sizeof(*d));
}

/* ---- changes --------------------------------------------------------- */

/* Log a refused request, naming the path and why; returns err. */
static int refuse(const struct caller *who, const char *what,
		  const struct match *m, const char *why, int err)
{
	char path[3 * TREE_PARAM_MAX + 64];

	tree_path(m, path, sizeof(path));
	log_warn("uid %u pid %d may not %s '%s': %s", (unsigned)who->uid,
		 (int)who->pid, what, path, why);
	return err;
}

static int check_admin(struct fs *fs, const struct caller *who,
		       const char *what, const struct match *m)
{
	if (who->uid == 0 || who->uid == fs->owner)
		return 0;
	return refuse(who, what, m, "only the mount owner or root may",
		      -EACCES);
}

/* The value written, by the row's syntax; EINVAL with the accepted values
 * in the log. */
static int parse_value(const struct match *m, const char *buf, size_t len,
		       const struct caller *who, struct ctl_value *v)
{
	const struct node *nd = m->node;
	char path[3 * TREE_PARAM_MAX + 64], shown[64], why[256];
	uint64_t n;
	int ret;

	memset(v, 0, sizeof(*v));
	switch (nd->syntax) {
	case CTL_BOOL:
	case CTL_TRUE:
		ret = parse_bool(buf, len, &v->on);
		if (!ret && nd->syntax == CTL_TRUE && !v->on)
			ret = -EINVAL;
		if (!ret)
			return 0;
		if (nd->syntax == CTL_TRUE)
			snprintf(why, sizeof(why),
				 "write 1 (or true, yes, on) to %s",
				 nd->on_means);
		else
			snprintf(why, sizeof(why),
				 "write 1 (or true, yes, on) to %s, 0 (or "
				 "false, no, off) to %s",
				 nd->on_means, nd->off_means);
		break;
	case CTL_MINUTES:
		ret = parse_uint(buf, len, RETAIN_MAX, &n);
		if (!ret) {
			v->n = n;
			return 0;
		}
		snprintf(why, sizeof(why),
			 "write the minutes (0 to %llu) the old key stays "
			 "valid",
			 RETAIN_MAX);
		break;
	default:
		return -EINVAL;
	}
	tree_path(m, path, sizeof(path));
	text_escape(buf, len < 24 ? len : 24, shown, sizeof(shown));
	log_warn("uid %u pid %d wrote '%s%s' to '%s': invalid value: %s "
		 "(any case, one optional newline)",
		 (unsigned)who->uid, (int)who->pid, shown,
		 len > 24 ? "..." : "", path, why);
	return -EINVAL;
}

/* The kind and parent of the object m names, for the cache. */
static void object_of(const struct match *m, const struct objs *o,
		      enum zkind *k, const char **parent)
{
	const char *pat = m->node->pattern, *star = pat;

	*k = m->node->kind;
	*parent = NULL;
	for (int i = 0; i < m->nparams; i++) {
		star = strchr(star, '*');
		*k = row(pat, (size_t)(star - pat) + 1)->kind;
		*parent = i ? zrec_id(o->rec[i - 1]) : NULL;
		star++;
	}
}

/* What a change hands back is what the server now has: cache it. */
static void changed(struct fs *fs, const struct match *m, const struct objs *o,
		    struct zrec *after)
{
	const char *parent;
	enum zkind k;

	if (!after)
		return;
	object_of(m, o, &k, &parent);
	if (zrec_kind(after) == k)
		store_update(fs->store, k, parent, after);
	zrec_unref(after);
}

int tree_write(struct fs *fs, const struct match *m, const char *buf,
	       size_t len, off_t off, const struct caller *who)
{
	const struct node *nd = m->node;
	struct zrec *after = NULL;
	struct ctl_value v;
	struct objs o;
	char why[128];
	int ret;

	if (nd->type != REG)
		return -EISDIR;
	if (!(nd->flags & NF_CTRL) || !nd->write)
		return refuse(who, "write to", m, "it is read-only", -EACCES);
	ret = check_admin(fs, who, "write", m);
	if (ret)
		return ret;
	if (off != 0) {
		/* "echo 1" written in two pieces: the newline is harmless */
		if (len == 1 && buf[0] == '\n')
			return 0;
		snprintf(why, sizeof(why),
			 "a write at offset %lld acts on nothing (write the "
			 "whole value at offset 0)",
			 (long long)off);
		return refuse(who, "write", m, why, -EINVAL);
	}
	ret = parse_value(m, buf, len, who, &v);
	if (ret)
		return ret;
	ret = resolve(fs, m, &o);
	if (ret)
		return ret;
	ret = nd->write(fs, m, &o, &v, who, &after);
	changed(fs, m, &o, after);
	objs_release(&o);
	return ret;
}

int tree_truncate(struct fs *fs, const struct match *m,
		  const struct caller *who)
{
	if (m->node->type != REG)
		return -EISDIR;
	if (!(m->node->flags & NF_CTRL))
		return refuse(who, "truncate", m, "it is read-only", -EACCES);
	/* open(O_TRUNC) of a control file is accepted and does nothing. */
	return check_admin(fs, who, "write", m);
}

int tree_mkdir(struct fs *fs, const struct match *m, const struct caller *who)
{
	const struct node *parent = parent_row(m->node);
	struct zrec *created = NULL;
	struct match pm = *m;
	struct objs o;
	int ret;

	if (!parent || !parent->mkdir || m->node->type != DIR)
		return refuse(who, "mkdir", m, "nothing can be created there",
			      -EPERM);
	ret = check_admin(fs, who, "mkdir", m);
	if (ret)
		return ret;
	pm.node = parent;
	pm.nparams = m->nparams - 1;
	ret = resolve(fs, &pm, &o);
	if (ret)
		return ret;
	ret = parent->mkdir(fs, m, &o, who, &created);
	if (!ret && created)
		store_update(fs->store, m->node->kind,
			     o.n ? zrec_id(o.rec[o.n - 1]) : NULL, created);
	zrec_unref(created);
	objs_release(&o);
	return ret;
}

int tree_rmdir(struct fs *fs, const struct match *m, const struct caller *who)
{
	const char *parent;
	struct objs o;
	enum zkind k;
	int ret;

	if (m->node->type != DIR)
		return -ENOTDIR;
	if (!m->node->rmdir)
		return refuse(who, "rmdir", m, "it cannot be removed", -EPERM);
	ret = check_admin(fs, who, "rmdir", m);
	if (ret)
		return ret;
	ret = resolve(fs, m, &o);
	if (ret)
		return ret;
	ret = m->node->rmdir(fs, m, &o, who);
	if (!ret) {
		object_of(m, &o, &k, &parent);
		store_remove(fs->store, k, parent, m->params[m->nparams - 1]);
	}
	objs_release(&o);
	return ret;
}
