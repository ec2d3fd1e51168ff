/* SPDX-License-Identifier: MIT */
/*
 * The OAuth 2.0 device authorization grant against a ZenML server: ask for
 * a device code, then poll until someone approves it in a browser.  The
 * requests and their replies only: the command that shows the code and
 * waits is cli/login.c.
 */
#ifndef ZENMLFS_LOGIN_H
#define ZENMLFS_LOGIN_H

#include <stddef.h>

struct http_client;
struct secret;

/* A device login under way. */
struct device_login {
	char verification[2048]; /* the URL to approve it at (absolute) */
	char user_code[64];
	char device[40]; /* the device's id; "" when the URL does not say */
	long interval; /* seconds between polls (raised on "slow_down") */
	long expires; /* seconds the code lives */
	/* private */
	struct http_client *h; /* borrowed */
	char ua[512];
	struct secret *form; /* the poll's form: it holds the device code */
};

/*
 * Ask h's server for a device code for client_id (session_client_id()).
 * 0, or -EIO (no reply), -EPROTO (a refusal or a malformed reply), -ENOMEM;
 * why says what failed.  device_login_release() in every case.
 */
int device_login_start(struct device_login *dl, struct http_client *h,
		       const char *client_id, char *why, size_t size);

enum device_step {
	DL_PENDING, /* not yet: poll again after dl->interval */
	DL_APPROVED, /* *session holds the session token */
	DL_DENIED, /* someone refused it */
	DL_EXPIRED, /* the code expired before it was approved */
	DL_REFUSED, /* another refusal: why has the server's class, message */
	DL_MALFORMED, /* an approval without a session token */
	DL_NOMEM,
};

/* One poll.  A server that does not answer, is busy (429, 5xx) or says
 * "authorization_pending" is DL_PENDING. */
enum device_step device_login_poll(struct device_login *dl,
				   struct secret **session, char *why,
				   size_t size);

void device_login_release(struct device_login *dl);

#endif
