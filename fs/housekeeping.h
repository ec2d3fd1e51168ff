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

/* on_hup(arg) runs in the thread after each SIGHUP (hk_hup()). */
int hk_start(struct fs *fs, void (*on_hup)(void *arg), void *arg);
void hk_stop(void);
/* Look again now (a new key value).  Async-signal-safe. */
void hk_wake(void);
/* A SIGHUP arrived.  Async-signal-safe. */
void hk_hup(void);

#endif
