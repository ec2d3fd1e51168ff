// SPDX-License-Identifier: MIT
/*
 * The table of nodes and what each one does.  A pattern is a path whose
 * components are literals, '*' (a name the server knows: a device id, an
 * account name...) or '@' (one of the node's attribute names).
 */
#include "fs/tree.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/cache.h"
#include "backend/log.h"
#include "backend/secret.h"
#include "backend/token.h"
#include "backend/util.h"
#include "backend/zenml.h"
#include "fs/model.h"

/* ---- content and names ---------------------------------------------- */

struct content *content_new(size_t len, bool secret)
{
	struct content *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->data = secret ? sodium_malloc(len + 1) : malloc(len + 1);
	if (!c->data) {
		free(c);
		return NULL;
	}
	c->data[len] = '\0';
	c->len = len;
	c->secret = secret;
	c->refs = 1;
	return c;
}

struct content *content_ref(struct content *c)
{
	if (c)
		__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	return c;
}

void content_unref(struct content *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (c->secret)
		sodium_free(c->data);
	else
		free(c->data);
	free(c);
}

static struct content *content_str(const char *s, size_t len, bool secret)
{
	struct content *c = content_new(len, secret);

	if (c)
		memcpy(c->data, s, len);
	return c;
}

void names_release(struct names *n)
{
	for (size_t i = 0; i < n->n; i++)
		free(n->v[i]);
	free(n->v);
	free(n->is_dir);
	memset(n, 0, sizeof(*n));
}

int names_add(struct names *n, const char *name, bool is_dir)
{
	char **v;
	bool *d;

	for (size_t i = 0; i < n->n; i++)
		if (!strcmp(n->v[i], name))
			return 0;
	if (n->n == n->cap) {
		size_t cap = n->cap ? n->cap * 2 : 16;

		v = realloc(n->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		n->v = v;
		d = realloc(n->is_dir, cap * sizeof(*d));
		if (!d)
			return -ENOMEM;
		n->is_dir = d;
		n->cap = cap;
	}
	n->v[n->n] = strdup(name);
	if (!n->v[n->n])
		return -ENOMEM;
	n->is_dir[n->n++] = is_dir;
	return 0;
}

/* ---- the table ------------------------------------------------------- */

#define N_DIR S_IFDIR
#define N_REG S_IFREG

struct node {
	const char *pattern;
	mode_t type;
	mode_t perm;
	unsigned flags;
	/* '@' rows and info.json: the object and its attributes */
	const struct model *model;
	/* directories whose children include a '*' row */
	int (*list)(struct fs *fs, const struct match *m, struct names *out);
	/* '*' rows: does the named object exist */
	int (*exists)(struct fs *fs, const struct match *m);
	int (*render)(struct fs *fs, const struct match *m,
		      struct content **out);
	int (*write)(struct fs *fs, const struct match *m, const char *buf,
		     size_t len, const struct caller *who);
	int (*mkdir)(struct fs *fs, const struct match *m,
		     const struct caller *who);
	int (*rmdir)(struct fs *fs, const struct match *m,
		     const struct caller *who);
};

static int render_token(struct fs *fs, const struct match *m,
			struct content **out);
static int render_token_json(struct fs *fs, const struct match *m,
			     struct content **out);
static int render_status(struct fs *fs, const struct match *m,
			 struct content **out);
static int render_attr(struct fs *fs, const struct match *m,
		       struct content **out);
static int render_info(struct fs *fs, const struct match *m,
		       struct content **out);
static int write_refresh(struct fs *fs, const struct match *m, const char *buf,
			 size_t len, const struct caller *who);

#define ATTRS(mdl) .model = &(mdl), .render = render_attr
#define INFO(mdl) .model = &(mdl), .render = render_info

static const struct node nodes[] = {
	{ "/", N_DIR, 0555, NF_STATIC },
	{ "/token", N_REG, 0400, NF_TOKEN | NF_SECRET | NF_STATIC,
	  .render = render_token },
	{ "/token.json", N_REG, 0400, NF_SECRET | NF_STATIC,
	  .render = render_token_json },
	{ "/refresh", N_REG, 0200, NF_CTRL | NF_STATIC,
	  .write = write_refresh },
	{ "/status", N_REG, 0444, NF_STATIC, .render = render_status },

	{ "/server", N_DIR, 0555, NF_STATIC },
	{ "/server/@", N_REG, 0444, NF_STATIC, ATTRS(model_server) },
	{ "/server/info.json", N_REG, 0444, NF_STATIC, INFO(model_server) },

	{ "/whoami", N_DIR, 0555, NF_STATIC },
	{ "/whoami/@", N_REG, 0444, NF_STATIC, ATTRS(model_whoami) },
	{ "/whoami/info.json", N_REG, 0444, NF_STATIC, INFO(model_whoami) },

	{ "/devices", N_DIR, 0555, NF_STATIC, .list = devices_list },
	{ "/devices/*", N_DIR, 0755, 0, .exists = device_exists,
	  .rmdir = device_rmdir },
	{ "/devices/*/@", N_REG, 0444, 0, ATTRS(model_device) },
	{ "/devices/*/info.json", N_REG, 0444, 0, INFO(model_device) },
	{ "/devices/*/lock", N_REG, 0600, NF_CTRL, .render = device_lock_render,
	  .write = device_lock_write },

	{ "/service-accounts", N_DIR, 0755, NF_STATIC, .list = sa_list,
	  .mkdir = sa_mkdir },
	{ "/service-accounts/*", N_DIR, 0755, 0, .exists = sa_exists,
	  .rmdir = sa_rmdir },
	{ "/service-accounts/*/@", N_REG, 0444, 0, ATTRS(model_sa) },
	{ "/service-accounts/*/info.json", N_REG, 0444, 0, INFO(model_sa) },
	{ "/service-accounts/*/active", N_REG, 0600, NF_CTRL,
	  .render = sa_active_render, .write = sa_active_write },
	{ "/service-accounts/*/keys", N_DIR, 0755, 0, .list = key_list,
	  .mkdir = key_mkdir },
	{ "/service-accounts/*/keys/*", N_DIR, 0755, 0, .exists = key_exists,
	  .rmdir = key_rmdir },
	{ "/service-accounts/*/keys/*/@", N_REG, 0444, 0, ATTRS(model_key) },
	{ "/service-accounts/*/keys/*/info.json", N_REG, 0444, 0,
	  INFO(model_key) },
	{ "/service-accounts/*/keys/*/active", N_REG, 0600, NF_CTRL,
	  .render = key_active_render, .write = key_active_write },
	{ "/service-accounts/*/keys/*/rotate", N_REG, 0200, NF_CTRL,
	  .write = key_rotate_write },
	{ "/service-accounts/*/keys/*/key", N_REG, 0400, NF_SECRET,
	  .render = key_secret_render },
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

static bool attr_known(const struct model *md, const char *name, size_t n)
{
	for (const struct attr *a = md->attrs; a->name; a++)
		if (strlen(a->name) == n && !memcmp(a->name, name, n))
			return true;
	return false;
}

static bool match_node(const struct node *nd, const char *path, struct match *m)
{
	const char *pp = nd->pattern, *ps = path, *pc, *sc;
	size_t pn, sn;

	m->nparams = 0;
	m->leaf = "";
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
			if (!nd->model || !attr_known(nd->model, sc, sn))
				return false;
		} else if (pn != sn || memcmp(pc, sc, sn)) {
			return false;
		}
		m->leaf = sc;
	}
}

int tree_match(const char *path, struct match *m)
{
	/* Literal rows first, so "info.json" is not taken for a '*'. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < NNODES; i++) {
			bool wild = strchr(nodes[i].pattern, '*') ||
				    strchr(nodes[i].pattern, '@');

			if (wild != (pass == 1))
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

mode_t tree_mode(struct fs *fs, const struct match *m)
{
	const struct node *nd = m->node;

	if (!strcmp(nd->pattern, "/token") ||
	    !strcmp(nd->pattern, "/token.json"))
		return nd->type | fs->token_mode;
	return nd->type | nd->perm;
}

unsigned tree_flags(const struct match *m)
{
	return m->node->flags;
}

int tree_exists(struct fs *fs, const struct match *m)
{
	/* Every '*' ancestor must exist too: check the deepest one that
	 * has an exists() test, which itself checks its parents. */
	char pat[256];
	const char *p = m->node->pattern;
	size_t n = strlen(p);

	if (m->node->exists)
		return m->node->exists(fs, m);
	while (n > 1) {
		while (n > 1 && p[n - 1] != '/')
			n--;
		n--;
		if (n == 0)
			break;
		memcpy(pat, p, n);
		pat[n] = '\0';
		for (size_t i = 0; i < NNODES; i++) {
			if (strcmp(nodes[i].pattern, pat) || !nodes[i].exists)
				continue;
			struct match pm = *m;

			pm.node = &nodes[i];
			return nodes[i].exists(fs, &pm);
		}
	}
	return 0;
}

int tree_render(struct fs *fs, const struct match *m, struct content **out)
{
	int ret;

	if (m->node->type != N_REG)
		return -EISDIR;
	if (!m->node->render)
		return -EACCES; /* write-only control file */
	ret = tree_exists(fs, m);
	if (ret)
		return ret;
	return m->node->render(fs, m, out);
}

/* The pattern of the row's parent directory, into buf. */
static void parent_pattern(const char *pattern, char *buf, size_t size)
{
	const char *slash = strrchr(pattern, '/');
	size_t n = slash ? (size_t)(slash - pattern) : 0;

	if (n == 0)
		n = 1; /* "/" */
	if (n >= size)
		n = size - 1;
	memcpy(buf, pattern, n);
	buf[n] = '\0';
}

int tree_list(struct fs *fs, const struct match *m, struct names *out)
{
	const struct node *dir = m->node;
	char parent[256];
	int ret;

	if (dir->type != N_DIR)
		return -ENOTDIR;
	ret = tree_exists(fs, m);
	if (ret)
		return ret;
	for (size_t i = 0; i < NNODES; i++) {
		const struct node *nd = &nodes[i];
		const char *leaf;

		if (nd == dir)
			continue;
		parent_pattern(nd->pattern, parent, sizeof(parent));
		if (strcmp(parent, dir->pattern))
			continue;
		leaf = strrchr(nd->pattern, '/') + 1;
		if (!strcmp(leaf, "@")) {
			for (const struct attr *a = nd->model->attrs; a->name;
			     a++)
				if ((ret = names_add(out, a->name, false)))
					return ret;
		} else if (strcmp(leaf, "*")) {
			/* A secret file is listed only while it exists. */
			if (nd->flags & NF_SECRET && nd->type == N_REG &&
			    !(nd->flags & NF_STATIC)) {
				struct match km = *m;
				struct content *c = NULL;

				km.node = nd;
				km.leaf = leaf;
				if (nd->render(fs, &km, &c))
					continue;
				content_unref(c);
			}
			ret = names_add(out, leaf, nd->type == N_DIR);
			if (ret)
				return ret;
		}
	}
	if (dir->list)
		return dir->list(fs, m, out);
	return 0;
}

/* The concrete path of a match, for messages: the pattern with its '*'
 * and '@' filled in. */
static void match_path(const struct match *m, char *buf, size_t size)
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

/* Log a refused request, naming the path and why; returns err. */
static int refuse(const struct caller *who, const char *what,
		  const struct match *m, const char *why, int err)
{
	char path[3 * TREE_PARAM_MAX + 64];

	match_path(m, path, sizeof(path));
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

int tree_write(struct fs *fs, const struct match *m, const char *buf,
	       size_t len, const struct caller *who)
{
	int ret;

	if (m->node->type != N_REG)
		return -EISDIR;
	if (!(m->node->flags & NF_CTRL) || !m->node->write)
		return refuse(who, "write to", m, "it is read-only", -EACCES);
	ret = check_admin(fs, who, "write", m);
	if (ret)
		return ret;
	ret = tree_exists(fs, m);
	if (ret)
		return ret;
	return m->node->write(fs, m, buf, len, who);
}

int tree_truncate(struct fs *fs, const struct match *m,
		  const struct caller *who)
{
	if (m->node->type != N_REG)
		return -EISDIR;
	if (!(m->node->flags & NF_CTRL))
		return refuse(who, "truncate", m, "it is read-only", -EACCES);
	/* open(O_TRUNC) of a control file is accepted and does nothing. */
	return check_admin(fs, who, "write", m);
}

int tree_mkdir(struct fs *fs, const struct match *m, const struct caller *who)
{
	char parent[256];
	struct match pm;
	int ret;

	/* The parent directory's row decides. */
	parent_pattern(m->node->pattern, parent, sizeof(parent));
	for (size_t i = 0; i < NNODES; i++) {
		if (strcmp(nodes[i].pattern, parent))
			continue;
		if (!nodes[i].mkdir)
			return refuse(who, "mkdir", m,
				      "nothing can be created there", -EPERM);
		ret = check_admin(fs, who, "mkdir", m);
		if (ret)
			return ret;
		pm = *m;
		pm.node = &nodes[i];
		ret = tree_exists(fs, &pm);
		if (ret)
			return ret;
		return nodes[i].mkdir(fs, m, who);
	}
	return -EPERM;
}

int tree_rmdir(struct fs *fs, const struct match *m, const struct caller *who)
{
	int ret;

	if (m->node->type != N_DIR)
		return -ENOTDIR;
	if (!m->node->rmdir)
		return refuse(who, "rmdir", m, "it cannot be removed", -EPERM);
	ret = check_admin(fs, who, "rmdir", m);
	if (ret)
		return ret;
	ret = tree_exists(fs, m);
	if (ret)
		return ret;
	return m->node->rmdir(fs, m, who);
}

/* ---- root files ------------------------------------------------------ */

static int render_token(struct fs *fs, const struct match *m,
			struct content **out)
{
	struct secret *tok;
	int64_t exp;
	int ret;

	ret = token_engine_get(fs->te, &tok, &exp);
	if (ret)
		return ret;
	*out = content_str(tok->buf, tok->len, true);
	secret_unref(tok);
	return *out ? 0 : -ENOMEM;
}

static int render_token_json(struct fs *fs, const struct match *m,
			     struct content **out)
{
	char exp_s[RFC3339_LEN] = "";
	struct secret *tok;
	struct content *c;
	int64_t exp;
	long long left;
	int ret, n;

	ret = token_engine_get(fs->te, &tok, &exp);
	if (ret)
		return ret;
	if (exp != TOKEN_NO_EXPIRY)
		time_format_rfc3339((time_t)exp, exp_s, sizeof(exp_s));
	left = exp == TOKEN_NO_EXPIRY ? -1 : (long long)(exp - time(NULL));
	c = content_new(tok->len + 160, true);
	if (!c) {
		secret_unref(tok);
		return -ENOMEM;
	}
	/* The token is base64url and dots: no JSON escaping needed. */
	if (exp == TOKEN_NO_EXPIRY)
		n = snprintf(c->data, c->len + 1,
			     "{\"access_token\":\"%s\",\"token_type\":"
			     "\"bearer\",\"expires_at\":null,"
			     "\"expires_in\":null}\n",
			     tok->buf);
	else
		n = snprintf(c->data, c->len + 1,
			     "{\"access_token\":\"%s\",\"token_type\":"
			     "\"bearer\",\"expires_at\":\"%s\","
			     "\"expires_in\":%lld}\n",
			     tok->buf, exp_s, left);
	secret_unref(tok);
	c->len = n > 0 && (size_t)n <= c->len ? (size_t)n : 0;
	*out = c;
	return 0;
}

static int render_status(struct fs *fs, const struct match *m,
			 struct content **out)
{
	char buf[2048];
	size_t n = token_engine_status(fs->te, buf, sizeof(buf));

	*out = content_str(buf, n, false);
	return *out ? 0 : -ENOMEM;
}

static int write_refresh(struct fs *fs, const struct match *m, const char *buf,
			 size_t len, const struct caller *who)
{
	bool on;
	int ret;

	if (parse_bool(buf, len, &on) || !on) {
		log_warn("uid %u pid %d wrote an invalid value to 'refresh': "
			 "write 1 to mint a new token",
			 (unsigned)who->uid, (int)who->pid);
		return -EINVAL;
	}
	log_info("uid %u pid %d: refresh the token", (unsigned)who->uid,
		 (int)who->pid);
	ret = token_engine_mint(fs->te);
	if (ret)
		log_err("cannot refresh the token: %s", strerror(-ret));
	else
		fs->sync_token(); /* the writer's next read sees it */
	return ret;
}

/* ---- attribute files ------------------------------------------------- */

static int render_attr(struct fs *fs, const struct match *m,
		       struct content **out)
{
	const struct model *md = m->node->model;
	char val[1024];
	json_t *obj = NULL;
	int ret;
	size_t n;

	ret = md->fetch(fs, m, &obj);
	if (ret)
		return ret;
	ret = model_attr_text(md, obj, m->leaf, fs, val, sizeof(val));
	json_decref(obj);
	if (ret)
		return ret;
	n = strlen(val);
	*out = content_new(n + 1, false);
	if (!*out)
		return -ENOMEM;
	memcpy((*out)->data, val, n);
	(*out)->data[n] = '\n';
	return 0;
}

static int render_info(struct fs *fs, const struct match *m,
		       struct content **out)
{
	const struct model *md = m->node->model;
	json_t *obj = NULL, *info;
	char *s;
	int ret;

	ret = md->fetch(fs, m, &obj);
	if (ret)
		return ret;
	info = model_info_json(md, obj, fs);
	json_decref(obj);
	if (!info)
		return -ENOMEM;
	s = json_dumps(info, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(info);
	if (!s)
		return -ENOMEM;
	*out = content_new(strlen(s) + 1, false);
	if (*out) {
		memcpy((*out)->data, s, strlen(s));
		(*out)->data[strlen(s)] = '\n';
	}
	json_str_free(s);
	return *out ? 0 : -ENOMEM;
}
