/* SPDX-License-Identifier: MIT */
/*
 * The session saved by "zenmlfs login URL": one file per server under
 * $XDG_STATE_HOME/zenmlfs (default ~/.local/state/zenmlfs), mode 0600,
 * encrypted with XSalsa20-Poly1305 (libsodium secretbox) under a key
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

/*
 * The session an API key's login gave, kept across restarts (a restart
 * costs the server no login): one file per server and key under
 * dir/keysessions, 0600, encrypted under a key derived from the API key
 * itself and a random salt (nothing but the key opens it).
 */
/* Where: $STATE_DIRECTORY (systemd), /var/lib/zenmlfs for root, else
 * $XDG_STATE_HOME/zenmlfs. */
int session_state_dir(char *out, size_t size);
/* 0, -ENOENT (none), -EBADMSG (another key's, or damaged). */
int keysession_load(const char *dir, const char *url, const struct secret *key,
		    struct secret **sess);
int keysession_save(const char *dir, const char *url, const struct secret *key,
		    const struct secret *sess);
int keysession_forget(const char *dir, const char *url,
		      const struct secret *key);
int keysession_path(const char *dir, const char *url, const struct secret *key,
		    char *out, size_t size);

#endif
