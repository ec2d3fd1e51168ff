// SPDX-License-Identifier: MIT
/*
 * zenmlfs login: the OAuth 2.0 device authorization grant
 * (backend/login.c) on a terminal: show where to approve the code, poll
 * at the server's interval (slower on "slow_down") with a live countdown,
 * save the session.  zenmlfs logout: forget it.
 */
#include "cli/login.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/exitcode.h"
#include "backend/http.h"
#include "backend/login.h"
#include "backend/secret.h"
#include "backend/session.h"
#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

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

/* What a poll's last step means: said on stdout; the exit code. */
static int said(enum device_step step, const char *url, const char *cr,
		const char *why)
{
	switch (step) {
	case DL_APPROVED:
		return L_OK;
	case DL_DENIED:
		printf("%sthe login was denied: nothing was saved.\n", cr);
		return L_DENIED;
	case DL_EXPIRED:
		printf("%sthe code expired before it was approved: "
		       "run 'zenmlfs login %s' again.\n",
		       cr, url);
		return L_EXPIRED;
	case DL_MALFORMED:
		printf("%smalformed login reply from the server: nothing was "
		       "saved.\n",
		       cr);
		return L_SERVER;
	case DL_NOMEM:
		printf("%scannot save the session under $XDG_STATE_HOME/"
		       "zenmlfs\n",
		       cr);
		return L_FAIL;
	default:
		printf("%sthe server refused the login: %s\n", cr, why);
		return L_DENIED;
	}
}

/* The options of "zenmlfs login": -1 to go on, else the exit code. */
static int login_args(int argc, char **argv, bool *trust, const char **cafile)
{
	static const struct option opts[] = {
		{ "trust", no_argument, NULL, 't' },
		{ "cafile", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	optind = 1;
	opterr = 0;
	for (;;) {
		c = getopt_long(argc, argv, "h", opts, NULL);
		if (c == -1)
			break;
		switch (c) {
		case 't':
			*trust = true;
			break;
		case 'c':
			*cafile = optarg;
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
	return -1;
}

static void show_code(const struct device_login *dl, const char *url,
		      bool trust)
{
	printf("To log in to %s, open this URL in a browser and approve "
	       "the device:\n\n  %s\n\nuser code: %s\n",
	       url, dl->verification, dl->user_code);
	if (trust)
		printf("Tick \"trust this device\" when approving: a trusted "
		       "device's session lasts longer.\n");
	printf("\n");
	fflush(stdout);
}

/*
 * Poll until the code is approved (0, *session set) or not (the exit
 * code, said on stdout), with a countdown on a terminal (cr: "\r" to go
 * back to the start of its line).
 */
static int wait_approval(struct device_login *dl, const char *url,
			 const char *cr, struct secret **session)
{
	time_t deadline = time(NULL) + dl->expires;
	time_t next = time(NULL) + dl->interval;
	enum device_step step = DL_PENDING;
	char why[400];

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	while (step == DL_PENDING) {
		time_t now = time(NULL);

		if (interrupted) {
			printf("%sinterrupted: nothing was saved.\n", cr);
			return L_INTERRUPTED;
		}
		if (now >= deadline) {
			step = DL_EXPIRED;
			break;
		}
		/* A countdown on a terminal; plain lines otherwise. */
		if (cr[0]) {
			printf("\rwaiting for approval... %3lds left ",
			       (long)(deadline - now));
			fflush(stdout);
		}
		if (now < next) {
			sleep(1);
			continue;
		}
		step = device_login_poll(dl, session, why, sizeof(why));
		next = now + dl->interval;
	}
	return said(step, url, cr, why);
}

/* Save the approved session and say how to mount with it. */
static int save(const char *url, const struct device_login *dl,
		const struct secret *session, const char *cr)
{
	char path[2048];

	if (session_save(url, session)) {
		printf("%scannot save the session under $XDG_STATE_HOME/"
		       "zenmlfs\n",
		       cr);
		return L_FAIL;
	}
	session_path(url, path, sizeof(path));
	printf("%slogged in to %s%s%s; the session is saved in %s\n"
	       "mount with: zenmlfs --url %s MOUNTPOINT\n",
	       cr, url, dl->device[0] ? " as device " : "", dl->device, path,
	       url);
	return L_OK;
}

int login_main(int argc, char **argv)
{
	struct device_login dl = { 0 };
	struct secret *session = NULL;
	struct http_client *h;
	const char *cafile = NULL, *url;
	/* After a countdown line, start over at its beginning. */
	const char *cr = isatty(STDOUT_FILENO) ? "\r" : "";
	char client[40], why[2200];
	bool trust = false;
	int ret;

	ret = login_args(argc, argv, &trust, &cafile);
	if (ret >= 0)
		return ret;
	url = login_url(argc, argv);
	h = client_for(url, cafile);
	if (!h)
		return url ? L_SERVER : L_USAGE;
	url = http_base_url(h);
	ret = L_FAIL;
	if (session_client_id(client, sizeof(client))) {
		fprintf(stderr, "zenmlfs: cannot create the client id under "
				"$XDG_STATE_HOME/zenmlfs\n");
		goto out;
	}
	ret = device_login_start(&dl, h, client, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "zenmlfs: %s\n", why);
		ret = ret == -ENOMEM ? L_FAIL : L_SERVER;
		goto out;
	}
	show_code(&dl, url, trust);
	ret = wait_approval(&dl, url, cr, &session);
	if (!ret)
		ret = save(url, &dl, session, cr);
out:
	secret_unref(session);
	device_login_release(&dl);
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
