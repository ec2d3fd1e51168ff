/* SPDX-License-Identifier: MIT */
/*
 * Where the daemon's own credential comes from (docs/zenmlfs.md), first
 * found wins: ZENML_STORE_API_KEY; --api-key-file; the systemd credential
 * "api-key" ($CREDENTIALS_DIRECTORY/api-key, LoadCredential=); the session
 * saved by "zenmlfs login"; ZENML_STORE_USERNAME/PASSWORD; a no-echo
 * prompt.  Never from argv.
 *
 * A key file is held to what ssh asks of a private key: a regular file,
 * readable by its owner only, owned by the daemon's user or root.
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
 * 0; -ENOKEY (nothing configured, or a key file that cannot be used);
 * -EKEYEXPIRED (a saved session that cannot be used); why says what to do.
 */
int cred_find(const char *url, const char *key_file, bool prompt,
	      struct zen_cred *out, char *why, size_t whysz);

/*
 * Read the credential again from where cred_find() found it (SIGHUP): the
 * key file, the systemd credential or the saved session.  -ENOENT with why
 * set when it came from where it cannot be read twice (the environment, a
 * prompt).
 */
int cred_reload(const char *url, const char *key_file, struct zen_cred *out,
		char *why, size_t whysz);

/* Where the credential came from, for the log ("--api-key-file", ...). */
const char *cred_source(void);

void cred_release(struct zen_cred *c);

#endif
