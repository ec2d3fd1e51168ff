/* SPDX-License-Identifier: MIT */
/*
 * Where the daemon's own credential comes from (docs/zenmlfs.md): an API
 * key from ZENML_STORE_API_KEY or --api-key-file, the session saved by
 * "zenmlfs login", ZENML_STORE_USERNAME/PASSWORD, or a no-echo prompt.
 * Never from argv.
 */
#ifndef ZENMLFS_CRED_H
#define ZENMLFS_CRED_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/zenml.h"

/*
 * Take the secrets out of the environment: copy them into guarded memory
 * and wipe them in place (so they are gone from /proc/PID/environ too).
 * Call first thing in main, before any thread.
 */
void cred_take_env(void);

/*
 * The credential to use for url.  key_file may be NULL.  prompt: ask on
 * the terminal when nothing else is found (only if stdin is a terminal).
 * 0, -ENOKEY (nothing configured; why says what to do), or another -errno
 * with why set.
 */
int cred_find(const char *url, const char *key_file, bool prompt,
	      struct zen_cred *out, char *why, size_t whysz);

void cred_release(struct zen_cred *c);

#endif
