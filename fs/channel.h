/* SPDX-License-Identifier: MIT */
/*
 * The /dev/fuse channel, read and written by us rather than by libfuse,
 * for one reason: libfuse 3.14 (Debian 12's) never puts
 * FUSE_PARALLEL_DIROPS in its INIT reply, whatever the file system wants
 * (fixed upstream in libfuse 3.16).  Without it the kernel serialises every
 * LOOKUP in a directory, so one lookup waiting on a hanging server holds
 * up every other.  The INIT reply gets the flag when the kernel offered it
 * and op_init asked for it; every other message passes through untouched.
 */
#ifndef ZENMLFS_CHANNEL_H
#define ZENMLFS_CHANNEL_H

#include <stdbool.h>

struct fuse_session;

/* After fuse_session_mount(): take over the channel's reads and writes. */
int channel_setup(struct fuse_session *se);
/* From op_init: ask for parallel lookups in the INIT reply. */
void channel_want_parallel_dirops(bool on);

#endif
