/* SPDX-License-Identifier: MIT */
/*
 * The housekeeping thread: at the moments they fall due, it wipes new key
 * values past key_window, drops the pages of token inodes whose token is
 * too close to expiry, returns cached listings nobody uses to the system,
 * and runs the SIGHUP action.  It sleeps otherwise (at most meta_ttl).
 */
#ifndef ZENMLFS_HOUSEKEEPING_H
#define ZENMLFS_HOUSEKEEPING_H

#include "fs/fs.h"

struct hk;

/* The housekeeping of fs (fs->hk), its thread not started; hk_free()
 * stops it. */
struct hk *hk_new(struct fs *fs);
void hk_free(struct hk *hk);
/* on_hup(arg) runs in the thread after each SIGHUP (hk_hup()). */
int hk_start(struct hk *hk, void (*on_hup)(void *arg), void *arg);
/* Join the thread (nothing runs after); again: nothing. */
void hk_stop(struct hk *hk);
/* Look again now (a new key value).  Async-signal-safe. */
void hk_wake(struct hk *hk);
/* A SIGHUP arrived.  Async-signal-safe. */
void hk_hup(struct hk *hk);

#endif
