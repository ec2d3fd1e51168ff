// SPDX-License-Identifier: MIT
#include "fs/control.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "backend/log.h"
#include "backend/secret.h"
#include "backend/store.h"
#include "backend/token.h"
#include "backend/util.h"
#include "fs/content.h"
#include "fs/newkeys.h"
#include "fs/publish.h"

#include "backend/banned.h" /* always the last include */

#define NAME_MAX_LEN 255

/* The object the match names (the last one found). */
static const struct zrec *obj(const struct objs *o)
{
	return o->rec[o->n - 1];
}

/* Log a failed server call and return its errno. */
static int failed(int ret, const char *what, const char *name,
		  const struct zen_err *e)
{
	log_err("cannot %s '%s': %s", what, name, e->msg);
	return ret;
}

static int content_bool(bool on, struct content **out)
{
	*out = content_text(on ? "1" : "0", 1, true, false);
	return *out ? 0 : -ENOMEM;
}

/* Is id the daemon's own user, key or device?  Then a change to it may
 * end the daemon's own credential: check it now. */
static void own_object_changed(struct fs *fs, const struct zrec *r)
{
	char me[UUID_BUF] = "";

	if (zrec_kind(r) == ZK_KEY)
		zen_api_key_id(fs->zen, me, sizeof(me));
	else if (zrec_kind(r) == ZK_ACCOUNT)
		zen_user_id(fs->zen, me, sizeof(me));
	else if (zrec_kind(r) == ZK_DEVICE)
		zen_device_id(fs->zen, me, sizeof(me));
	if (me[0] && !strcasecmp(me, zrec_id(r)))
		token_engine_kick(fs->te);
}

/* ---- the token ------------------------------------------------------- */

int ctl_refresh(struct fs *fs, const struct match *m, const struct objs *o,
		const struct ctl_value *v, const struct caller *who,
		struct zrec **after)
{
	struct zen_err e = { 0 };
	int ret;

	log_info("uid %u pid %d: refresh the token", (unsigned)who->uid,
		 (int)who->pid);
	ret = token_engine_refresh(fs->te, &e);
	if (ret)
		return failed(ret, "refresh", "token", &e);
	/* the writer's next read sees it */
	if (!publish_sync(fs)) {
		log_err("refresh: the new token is not in place after 5 s");
		return -ETIMEDOUT;
	}
	return 0;
}

int render_status(struct fs *fs, const struct match *m, const struct objs *o,
		  struct content **out)
{
	char buf[4096];
	size_t n = token_engine_status(fs->te, buf, sizeof(buf));

	*out = content_text(buf, n, false, false);
	return *out ? 0 : -ENOMEM;
}

int render_metrics(struct fs *fs, const struct match *m, const struct objs *o,
		   struct content **out)
{
	char buf[8192];
	size_t n = token_engine_metrics(fs->te, buf, sizeof(buf));

	*out = content_text(buf, n, false, false);
	return *out ? 0 : -ENOMEM;
}

/* ---- devices --------------------------------------------------------- */

int render_lock(struct fs *fs, const struct match *m, const struct objs *o,
		struct content **out)
{
	const char *st = zrec_field(obj(o), "status");

	return content_bool(st && !strcmp(st, "locked"), out);
}

int ctl_lock(struct fs *fs, const struct match *m, const struct objs *o,
	     const struct ctl_value *v, const struct caller *who,
	     struct zrec **after)
{
	const char *id = zrec_id(obj(o));
	struct zen_err e = { 0 };
	int ret;

	log_info("uid %u pid %d: %s device '%s'", (unsigned)who->uid,
		 (int)who->pid, v->on ? "lock" : "unlock", id);
	ret = api_lock_device(fs->zen, id, v->on, after, &e);
	if (ret)
		return failed(ret, v->on ? "lock device" : "unlock device", id,
			      &e);
	own_object_changed(fs, obj(o));
	return 0;
}

/* ---- accounts and keys ----------------------------------------------- */

int render_active(struct fs *fs, const struct match *m, const struct objs *o,
		  struct content **out)
{
	const char *a = zrec_field(obj(o), "active");

	return content_bool(a && !strcmp(a, "1"), out);
}

/* "account" or "account/key", for messages. */
static void obj_name(const struct objs *o, char *buf, size_t size)
{
	if (o->n > 1)
		snprintf(buf, size, "%s/%s", zrec_name(o->rec[0]),
			 zrec_name(o->rec[1]));
	else
		snprintf(buf, size, "%s", zrec_name(o->rec[0]));
}

/* The parent UUID of the object (a key's account), or NULL. */
static const char *parent_id(const struct objs *o)
{
	return o->n > 1 ? zrec_id(o->rec[o->n - 2]) : NULL;
}

static bool is_own_key(struct fs *fs, const struct zrec *r)
{
	char own[UUID_BUF];

	if (zrec_kind(r) != ZK_KEY)
		return false;
	zen_api_key_id(fs->zen, own, sizeof(own));
	return own[0] && !strcasecmp(own, zrec_id(r));
}

/* An admin write (what: "deactivate API key", ...) on the object of o,
 * named name: logged, with who asked. */
static void say(const struct caller *who, const char *what, const char *name)
{
	log_info("uid %u pid %d: %s '%s'", (unsigned)who->uid, (int)who->pid,
		 what, name);
}

/* A write did to r (named name) what done says ("deactivated", ...): the
 * daemon's own key then ends (err -EKEYREVOKED) or works again (err 0)
 * at once; any other object of the daemon's own is checked. */
static void object_changed(struct fs *fs, const struct zrec *r,
			   const char *name, const char *done, int err)
{
	char why[700];

	if (!is_own_key(fs, r)) {
		own_object_changed(fs, r);
		return;
	}
	snprintf(why, sizeof(why), "the daemon's own API key '%s' (%s) was %s",
		 name, zrec_id(r), done);
	token_engine_revoke(fs->te, err, why);
}

/* An admin write on the object of a match: the object, its kind, its
 * name for the log, and what is done to it ("delete API key"). */
struct admin_op {
	const struct zrec *r;
	enum zkind k;
	char name[2 * TREE_PARAM_MAX];
	char what[64];
};

static void admin_op(struct admin_op *op, const struct objs *o,
		     const char *verb)
{
	op->r = obj(o);
	op->k = zrec_kind(op->r);
	obj_name(o, op->name, sizeof(op->name));
	snprintf(op->what, sizeof(op->what), "%s %s", verb, zkind_name(op->k));
}

int ctl_active(struct fs *fs, const struct match *m, const struct objs *o,
	       const struct ctl_value *v, const struct caller *who,
	       struct zrec **after)
{
	struct zen_err e = { 0 };
	struct admin_op op;
	int ret;

	admin_op(&op, o, v->on ? "activate" : "deactivate");
	say(who, op.what, op.name);
	ret = api_set_active(fs->zen, op.k, parent_id(o), zrec_id(op.r), v->on,
			     after, &e);
	if (ret)
		return failed(ret, op.what, op.name, &e);
	object_changed(fs, op.r, op.name, v->on ? "activated" : "deactivated",
		       v->on ? 0 : -EKEYREVOKED);
	return 0;
}

int ctl_rotate(struct fs *fs, const struct match *m, const struct objs *o,
	       const struct ctl_value *v, const struct caller *who,
	       struct zrec **after)
{
	struct zen_cred cred = { CRED_API_KEY };
	struct zen_err e = { 0 };
	struct secret *value = NULL;
	struct admin_op op;
	int ret;

	admin_op(&op, o, "rotate");
	log_info("uid %u pid %d: %s '%s' (old key valid %llu more minutes)",
		 (unsigned)who->uid, (int)who->pid, op.what, op.name, v->n);
	ret = api_rotate_key(fs->zen, parent_id(o), zrec_id(op.r), v->n, after,
			     &value, &e);
	if (ret)
		return failed(ret, op.what, op.name, &e);
	newkey_put(fs->newkeys, zrec_name(o->rec[0]), zrec_name(op.r),
		   zrec_id(op.r), value);
	if (is_own_key(fs, op.r)) {
		/* Switch to the new key now, so the daemon outlives the
		 * retain period of the old one. */
		cred.secret = secret_ref(value);
		zen_set_cred(fs->zen, &cred);
		if (zen_login(fs->zen, &e))
			log_warn("cannot log in with the rotated key yet (%s): "
				 "the next refresh will retry",
				 e.msg);
		else
			log_info("the daemon now uses the rotated key of '%s'",
				 op.name);
	}
	secret_unref(value);
	return 0;
}

int render_key_value(struct fs *fs, const struct match *m, const struct objs *o,
		     struct content **out)
{
	return newkey_get(fs->newkeys, zrec_name(o->rec[0]), zrec_name(obj(o)),
			  zrec_id(obj(o)), fs->key_window, out);
}

bool key_value_exists(struct fs *fs, const struct match *m,
		      const struct objs *o)
{
	return o->n == 2 &&
	       newkey_has(fs->newkeys, zrec_name(o->rec[0]), zrec_name(obj(o)),
			  zrec_id(obj(o)), fs->key_window);
}

/* A name we create: what the server accepts and a path can carry. */
static int check_name(const char *what, const char *name,
		      const struct caller *who)
{
	size_t n = strlen(name);
	const char *why = NULL;

	if (n == 0)
		why = "it is empty";
	else if (n > NAME_MAX_LEN)
		why = "it is longer than 255 bytes";
	else if (name[0] == ' ' || name[n - 1] == ' ')
		why = "it starts or ends with a space";
	for (size_t i = 0; !why && i < n; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			why = "it has a control character";
	if (!why)
		return 0;
	log_warn("uid %u pid %d: invalid %s name '%s': %s", (unsigned)who->uid,
		 (int)who->pid, what, name, why);
	return -EINVAL;
}

int mkdir_account(struct fs *fs, const struct match *m,
		  const struct objs *parent, const struct caller *who,
		  struct zrec **created)
{
	const char *name = m->params[0];
	struct zen_err e = { 0 };
	int ret;

	ret = check_name("service account", name, who);
	if (ret)
		return ret;
	log_info("uid %u pid %d: create service account '%s'",
		 (unsigned)who->uid, (int)who->pid, name);
	ret = api_create(fs->zen, ZK_ACCOUNT, NULL, name, created, NULL, &e);
	return ret ? failed(ret, "create service account", name, &e) : 0;
}

int mkdir_key(struct fs *fs, const struct match *m, const struct objs *parent,
	      const struct caller *who, struct zrec **created)
{
	const char *account = zrec_name(parent->rec[0]), *name = m->params[1];
	char full[2 * TREE_PARAM_MAX];
	struct zen_err e = { 0 };
	struct secret *value = NULL;
	int ret;

	ret = check_name("API key", name, who);
	if (ret)
		return ret;
	snprintf(full, sizeof(full), "%s/%s", account, name);
	log_info("uid %u pid %d: create API key '%s'", (unsigned)who->uid,
		 (int)who->pid, full);
	ret = api_create(fs->zen, ZK_KEY, zrec_id(parent->rec[0]), name,
			 created, &value, &e);
	if (ret)
		return failed(ret, "create API key", full, &e);
	newkey_put(fs->newkeys, account, name, zrec_id(*created), value);
	secret_unref(value);
	return 0;
}

/* Does the account still have keys?  Asked afresh: deleting an account
 * deletes its keys with it. */
static int account_empty(struct fs *fs, const struct zrec *acct,
			 const struct caller *who)
{
	struct zen_err e = { 0 };
	struct zlist *keys;
	size_t n;
	int ret;

	ret = api_list(fs->zen, ZK_KEY, zrec_id(acct), &keys, &e);
	if (ret)
		return failed(ret, "list the keys of", zrec_name(acct), &e);
	n = zlist_len(keys);
	zlist_unref(keys);
	if (!n)
		return 0;
	log_warn("uid %u pid %d may not rmdir 'service-accounts/%s': it still "
		 "has %zu API key%s (remove them first)",
		 (unsigned)who->uid, (int)who->pid, zrec_name(acct), n,
		 n == 1 ? "" : "s");
	return -ENOTEMPTY;
}

int rmdir_object(struct fs *fs, const struct match *m, const struct objs *o,
		 const struct caller *who)
{
	struct zen_err e = { 0 };
	struct admin_op op;
	int ret;

	admin_op(&op, o, "delete");
	if (op.k == ZK_ACCOUNT) {
		ret = account_empty(fs, op.r, who);
		if (ret)
			return ret;
	}
	say(who, op.what, op.name);
	ret = api_delete(fs->zen, op.k, parent_id(o), zrec_id(op.r), &e);
	if (ret)
		return failed(ret, op.what, op.name, &e);
	if (op.k == ZK_ACCOUNT)
		newkey_forget(fs->newkeys, zrec_name(op.r), NULL);
	if (op.k == ZK_KEY)
		newkey_forget(fs->newkeys, zrec_name(o->rec[0]),
			      zrec_name(op.r));
	object_changed(fs, op.r, op.name, "deleted", -EKEYREVOKED);
	return 0;
}
