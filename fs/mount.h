/* SPDX-License-Identifier: MIT */
/*
 * What the mount owns, made and freed in one place: the inode table, the
 * token's publisher, the helper's handle, the new key values, the
 * housekeeping, the channel, the metadata's notifier and the two pools.
 * No thread runs yet when fs_create() returns (main starts them once the
 * session is mounted); fs_destroy() joins each before it frees what the
 * thread uses.
 */
#ifndef ZENMLFS_MOUNT_H
#define ZENMLFS_MOUNT_H

#include "fs/fs.h"

/* 0, or -ENOMEM (then fs_destroy() frees what was made). */
int fs_create(struct fs *fs);
/* After token_engine_stop() (its on_change publishes). */
void fs_destroy(struct fs *fs);

#endif
