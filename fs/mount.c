// SPDX-License-Identifier: MIT
/* What the mount owns (fs/mount.h). */
#include "fs/mount.h"

#include <errno.h>

#include "fs/channel.h"
#include "fs/defer.h"
#include "fs/housekeeping.h"
#include "fs/inode.h"
#include "fs/newkeys.h"
#include "fs/notify.h"
#include "fs/ops.h"
#include "fs/publish.h"
#include "fs/self.h"

#include "backend/banned.h" /* always the last include */

int fs_create(struct fs *fs)
{
	fs->itab = itab_new();
	fs->newkeys = newkeys_new();
	fs->self = self_new();
	fs->chan = channel_new();
	fs->meta = notifier_new("zenmlfs-meta", true);
	fs->pool = ops_pool_new(false);
	fs->tpool = ops_pool_new(true);
	fs->hk = hk_new(fs);
	fs->dirs = ops_dirs_new();
	if (!fs->dirs || !fs->itab || !fs->newkeys || !fs->self || !fs->chan ||
	    !fs->meta || !fs->pool || !fs->tpool || !fs->hk || publish_new(fs))
		return -ENOMEM;
	return 0;
}

/* Each free joins the object's threads first; the users of an object go
 * before it: the housekeeping and the pools use everything, the
 * publisher's notifier the table and the helper. */
void fs_destroy(struct fs *fs)
{
	hk_free(fs->hk);
	defer_free(fs->pool);
	defer_free(fs->tpool);
	ops_dirs_free(fs->dirs);
	notifier_free(fs->meta);
	publish_free(fs);
	self_free(fs->self);
	newkeys_free(fs->newkeys);
	itab_free(fs->itab);
	channel_free(fs->chan);
	fs->hk = NULL;
	fs->pool = fs->tpool = NULL;
	fs->meta = NULL;
	fs->self = NULL;
	fs->newkeys = NULL;
	fs->itab = NULL;
	fs->chan = NULL;
	fs->dirs = NULL;
}
