/* SPDX-License-Identifier: MIT */
/*
 * The session saved by "zenmlfs login URL": one file per server under
 * $XDG_STATE_HOME/zenmlfs (default ~/.local/state/zenmlfs), mode 0600,
 * encrypted with XChaCha20-Poly1305 (libsodium secretbox) under a key
 * derived from this machine's /etc/machine-id, the user's uid and the
 * server URL.  A copy of the file on another machine (a backup, a leaked
 * home directory) cannot be decrypted.  It does not protect against root
 * or the same user on this machine: they can derive the same key.
 */
#ifndef ZENMLFS_SESSION_H
#define ZENMLFS_SESSION_H

#include <stddef.h>

struct secret;

/* The saved session token for url: 0, -ENOENT (none), -EBADMSG (cannot be
 * decrypted here: another machine's, or damaged). */
int session_load(const char *url, struct secret **token);
/* Save (replace) the session for url. */
int session_save(const char *url, const struct secret *token);
/* Forget the session for url: 0 or -ENOENT. */
int session_forget(const char *url);
/* The installation's stable client id (a UUID, made on first use). */
int session_client_id(char *out, size_t size);
/* The file that holds url's session (for messages). */
int session_path(const char *url, char *out, size_t size);

#endif
