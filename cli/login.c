// SPDX-License-Identifier: MIT
/*
 * The OAuth 2.0 device authorization grant against a ZenML server:
 * request a code, show where to approve it, poll at the server's interval
 * (slower on "slow_down") with a live countdown, save the session.
 */
#include "backend/login.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/utsname.h>

#include "backend/exitcode.h"
#include "backend/http.h"
#include "backend/secret.h"
#include "backend/session.h"
#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

#define DEVICE_GRANT "urn:ietf:params:oauth:grant-type:device_code"

enum {
	L_OK = EXIT_OK,
	L_USAGE = EXIT_USAGE,
	L_DENIED = EXIT_AUTH,
	L_EXPIRED = EXIT_MOUNT,
	L_SERVER = EXIT_SERVER,
	L_INTERRUPTED = EXIT_INTERRUPTED,
	L_FAIL = EXIT_RUNTIME,
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = 1;
}

/*
 * The User-Agent the ZenML server reads a device's details from
 * (OAuthDeviceUserAgentHeader): "Host/<hostname> ZenML/<version>
 * Python/<version> OS/<system>", space-separated key/value pairs.  We are
 * not Python: that one is left out, and ZenML/ names zenmlfs.
 */
static void device_user_agent(char *buf, size_t size)
{
	struct utsname u;
	char host[sizeof(u.nodename)] = "unknown",
	     os[sizeof(u.sysname)] = "Linux";

	if (!uname(&u)) {
		snprintf(host, sizeof(host), "%s", u.nodename);
		snprintf(os, sizeof(os), "%s", u.sysname);
	}
	/* the header splits on spaces */
	for (char *p = host; *p; p++)
		if (*p == ' ' || (unsigned char)*p < 0x21 || *p == 0x7f)
			*p = '-';
	snprintf(buf, size, "Host/%s ZenML/zenmlfs-%s OS/%s zenmlfs/%s", host,
		 ZENMLFS_VERSION, os, ZENMLFS_VERSION);
}

static int post_form(struct http_client *h, const char *form, size_t len,
		     const char *path, const char *ua, struct http_response *r)
{
	return http_do(h,
		       &(struct http_req){
			       .method = "POST",
			       .path = path,
			       .ctype = "application/x-www-form-urlencoded",
			       .body = form,
			       .body_len = len,
			       .secret_reply = true,
			       .user_agent = ua,
		       },
		       r);
}

static void login_usage(FILE *f)
{
	fprintf(f, "usage: zenmlfs login [URL] [--trust] [--cafile FILE]\n"
		   "       zenmlfs logout [URL]\n"
		   "URL defaults to ZENML_STORE_URL.\n");
}

/* The server URL: the argument, else ZENML_STORE_URL. */
static const char *login_url(int argc, char **argv)
{
	const char *url;

	if (optind < argc)
		return argv[optind];
	url = getenv("ZENML_STORE_URL");
	return url && *url ? url : NULL;
}

/* A URL we may send a device code to; prints why not. */
static struct http_client *client_for(const char *url, const char *cafile)
{
	struct http_client *h;
	const char *why;

	if (!url) {
		fprintf(stderr, "zenmlfs: no server URL: give it, or set "
				"ZENML_STORE_URL\nTry 'zenmlfs login "
				"--help'.\n");
		return NULL;
	}
	if (url_check(url, &why)) {
		char shown[1100]; /* never the password it may hold */

		url_redact(url, shown, sizeof(shown));
		fprintf(stderr, "zenmlfs: invalid server URL '%s': %s\n", shown,
			why);
		return NULL;
	}
	h = http_client_new(
		&(struct http_opts){ .base_url = url, .cafile = cafile });
	if (!h)
		fprintf(stderr, "zenmlfs: out of memory\n");
	return h;
}

/* The device id is only in the device_id= parameter of the URL. */
static void device_id_of(const char *uri, char *id, size_t size)
{
	const char *p = strstr(uri, "device_id=");

	id[0] = '\0';
	if (p && strlen(p + 10) >= 36) {
		snprintf(id, size, "%.36s", p + 10);
		if (!uuid_valid(id))
			id[0] = '\0';
	}
}

int login_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "trust", no_argument, NULL, 't' },
		{ "cafile", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct http_response r = { 0 };
	struct http_client *h = NULL;
	const char *cr;
	struct secret *code = NULL, *form = NULL, *tok = NULL;
	const char *cafile = NULL, *url;
	char client[40], form_buf[256], full[2048], device[40], cls[64],
		msg[300], ua[512];
	bool tty = isatty(STDOUT_FILENO);
	json_t *j = NULL, *v;
	bool trust = false;
	long interval, expires;
	time_t deadline, next;
	int c, ret = L_FAIL;

	optind = 1;
	opterr = 0;
	for (;;) {
		c = getopt_long(argc, argv, "h", opts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case 't':
			trust = true;
			break;
		case 'c':
			cafile = optarg;
			break;
		case 'h':
			login_usage(stdout);
			return L_OK;
		default:
			fprintf(stderr,
				"zenmlfs: login: unknown option '%s'\n"
				"Try 'zenmlfs login --help'.\n",
				argv[optind - 1]);
			return L_USAGE;
		}
	}
	if (argc - optind > 1) {
		fprintf(stderr,
			"zenmlfs: login: too many arguments: '%s'\n"
			"Try 'zenmlfs login --help'.\n",
			argv[optind + 1]);
		return L_USAGE;
	}
	url = login_url(argc, argv);
	h = client_for(url, cafile);
	if (!h)
		return url ? L_SERVER : L_USAGE;
	url = http_base_url(h);
	device_user_agent(ua, sizeof(ua));
	/* After a countdown line, start over at its beginning. */
	cr = tty ? "\r" : "";
	if (session_client_id(client, sizeof(client))) {
		fprintf(stderr, "zenmlfs: cannot create the client id under "
				"$XDG_STATE_HOME/zenmlfs\n");
		goto out;
	}

	/* 1. a device code */
	snprintf(form_buf, sizeof(form_buf), "client_id=%s", client);
	if (post_form(h, form_buf, strlen(form_buf),
		      "/api/v1/device_authorization", ua, &r)) {
		fprintf(stderr,
			"zenmlfs: cannot reach the ZenML server at "
			"'%s'\n",
			url);
		ret = L_SERVER;
		goto out;
	}
	if (r.status != 200) {
		zerr_parse(r.body, r.len, cls, sizeof(cls), msg, sizeof(msg));
		fprintf(stderr,
			"zenmlfs: '%s' refused the device login: "
			"server said %ld (%s)\n",
			url, r.status, msg);
		ret = L_SERVER;
		goto out;
	}
	j = json_loadb(r.body, r.len, 0, NULL);
	http_response_release(&r);
	v = json_object_get(j, "device_code");
	if (!json_is_string(v) ||
	    !json_is_string(json_object_get(j, "user_code")) ||
	    !json_is_string(json_object_get(j, "verification_uri"))) {
		fprintf(stderr,
			"zenmlfs: malformed device login reply from "
			"'%s'\n",
			url);
		ret = L_SERVER;
		goto out;
	}
	/* The device code can be exchanged for a session: guarded memory. */
	code = secret_new(json_string_value(v), json_string_length(v));
	if (!code)
		goto out;
	interval = json_integer_value(json_object_get(j, "interval"));
	expires = json_integer_value(json_object_get(j, "expires_in"));
	if (interval < 1 || interval > 60)
		interval = 5;
	if (expires < 1 || expires > 3600)
		expires = 300;
	v = json_object_get(j, "verification_uri_complete");
	if (!json_is_string(v))
		v = json_object_get(j, "verification_uri");
	snprintf(full, sizeof(full), "%s%s",
		 json_string_value(v)[0] == '/' ? url : "",
		 json_string_value(v));
	device_id_of(full, device, sizeof(device));
	printf("To log in to %s, open this URL in a browser and approve "
	       "the device:\n\n  %s\n\nuser code: %s\n",
	       url, full, json_string_value(json_object_get(j, "user_code")));
	if (trust)
		printf("Tick \"trust this device\" when approving: a trusted "
		       "device's session lasts longer.\n");
	printf("\n");
	fflush(stdout);

	/* 2. poll */
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (http_form_add(&form, "grant_type", DEVICE_GRANT,
			  strlen(DEVICE_GRANT)) ||
	    http_form_add(&form, "client_id", client, strlen(client)) ||
	    http_form_add(&form, "device_code", code->buf, code->len))
		goto out;
	deadline = time(NULL) + expires;
	next = time(NULL) + interval;
	for (;;) {
		time_t now = time(NULL);

		if (interrupted) {
			printf("%sinterrupted: nothing was saved.\n", cr);
			ret = L_INTERRUPTED;
			goto out;
		}
		if (now >= deadline) {
			printf("%sthe code expired before it was approved: "
			       "run 'zenmlfs login %s' again.\n",
			       cr, url);
			ret = L_EXPIRED;
			goto out;
		}
		/* A countdown on a terminal; plain lines otherwise. */
		if (tty) {
			printf("\rwaiting for approval... %3lds left ",
			       (long)(deadline - now));
			fflush(stdout);
		}
		if (now < next) {
			sleep(1);
			continue;
		}
		next = now + interval;
		if (post_form(h, form->buf, form->len, "/api/v1/login", ua, &r))
			continue; /* transient: keep polling */
		if (r.status == 200)
			break;
		zerr_parse(r.body, r.len, cls, sizeof(cls), msg, sizeof(msg));
		if (r.status >= 500 || r.status == 429) {
			/* The server is busy or restarting: keep polling
			 * until the code expires. */
			http_response_release(&r);
			continue;
		}
		http_response_release(&r);
		if (!strcmp(cls, "authorization_pending"))
			continue;
		if (!strcmp(cls, "slow_down")) {
			interval += 5;
			next = now + interval;
			continue;
		}
		if (!strcmp(cls, "access_denied")) {
			printf("%sthe login was denied: nothing was saved.\n",
			       cr);
			ret = L_DENIED;
			goto out;
		}
		if (!strcmp(cls, "expired_token")) {
			printf("%sthe code expired before it was approved: "
			       "run 'zenmlfs login %s' again.\n",
			       cr, url);
			ret = L_EXPIRED;
			goto out;
		}
		printf("%sthe server refused the login: %s%s%s\n", cr, cls,
		       cls[0] ? ": " : "", msg);
		ret = L_DENIED;
		goto out;
	}

	/* 3. save */
	json_decref(j);
	j = json_loadb(r.body, r.len, 0, NULL);
	v = json_object_get(j, "access_token");
	if (!json_is_string(v)) {
		printf("%smalformed login reply from the server: nothing was "
		       "saved.\n",
		       cr);
		ret = L_SERVER;
		goto out;
	}
	tok = secret_new(json_string_value(v), json_string_length(v));
	if (!tok || session_save(url, tok)) {
		printf("%scannot save the session under $XDG_STATE_HOME/"
		       "zenmlfs\n",
		       cr);
		goto out;
	}
	session_path(url, full, sizeof(full));
	printf("%slogged in to %s%s%s; the session is saved in %s\n"
	       "mount with: zenmlfs --url %s MOUNTPOINT\n",
	       cr, url, device[0] ? " as device " : "", device, full, url);
	ret = L_OK;
out:
	http_response_release(&r);
	json_decref(j);
	secret_unref(code);
	secret_unref(form);
	secret_unref(tok);
	http_client_free(h);
	return ret;
}

int logout_main(int argc, char **argv)
{
	struct http_client *h;
	const char *url;
	int ret;

	if (argc > 1 &&
	    (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		login_usage(stdout);
		return L_OK;
	}
	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		fprintf(stderr,
			"zenmlfs: logout: %s '%s'\n"
			"Try 'zenmlfs login --help'.\n",
			argc > 2 ? "too many arguments:" : "unknown option",
			argv[argc > 2 ? 2 : 1]);
		return L_USAGE;
	}
	optind = 1;
	url = login_url(argc, argv);
	h = client_for(url, NULL);
	if (!h)
		return url ? L_SERVER : L_USAGE;
	ret = session_forget(http_base_url(h));
	if (ret == -ENOENT)
		printf("no saved session for %s\n", http_base_url(h));
	else if (ret)
		fprintf(stderr,
			"zenmlfs: cannot remove the session for '%s': %s\n",
			http_base_url(h), strerror(-ret));
	else
		printf("logged out of %s: the saved session is gone\n",
		       http_base_url(h));
	http_client_free(h);
	return ret && ret != -ENOENT ? L_FAIL : L_OK;
}
