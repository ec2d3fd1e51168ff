// SPDX-License-Identifier: MIT
#include "backend/cred.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "backend/secret.h"
#include "backend/session.h"
#include "backend/util.h"

extern char **environ;

static struct secret *env_key, *env_password;
static char *env_username;

/* Copy NAME's value to guarded memory, wipe it in the environment block
 * and remove the variable. */
static struct secret *take(const char *name, bool allow_empty)
{
	size_t n = strlen(name);
	struct secret *s = NULL;

	for (char **e = environ; e && *e; e++) {
		if (strncmp(*e, name, n) || (*e)[n] != '=')
			continue;
		char *val = *e + n + 1;
		size_t len = strlen(val);

		if (!s && (len || allow_empty))
			s = secret_new(val, len);
		/* The bytes stay in the process's initial environment block
		 * (what /proc/PID/environ shows) unless overwritten. */
		explicit_bzero(val, len);
	}
	unsetenv(name);
	return s;
}

void cred_take_env(void)
{
	struct secret *u;

	env_key = take("ZENML_STORE_API_KEY", false);
	/* The server's auto-activated "default" user has an empty password. */
	env_password = take("ZENML_STORE_PASSWORD", true);
	u = take("ZENML_STORE_USERNAME", false);
	if (u) {
		env_username = strdup(u->buf);
		secret_unref(u);
	}
}

static int read_key_file(const char *path, struct secret **out, char *why,
			 size_t whysz)
{
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		snprintf(why, whysz, "cannot open API key file '%s': %s", path,
			 strerror(errno));
		return ret;
	}
	ret = secret_read_fd(fd, out);
	close(fd);
	if (ret)
		snprintf(why, whysz, "cannot read API key file '%s': %s", path,
			 ret == -ENODATA ? "it is empty" :
			 ret == -E2BIG	 ? "it is too long" :
					   strerror(-ret));
	return ret;
}

static int prompt_key(const char *url, struct secret **out)
{
	struct termios old, quiet;
	int fd, ret;
	bool echo_off = false;

	fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -ENOKEY;
	dprintf(fd, "ZenML API key for %s: ", url);
	if (!tcgetattr(fd, &old)) {
		quiet = old;
		quiet.c_lflag &= ~(ECHO | ECHONL);
		quiet.c_lflag |= ICANON;
		echo_off = !tcsetattr(fd, TCSAFLUSH, &quiet);
	}
	ret = secret_read_fd(fd, out);
	if (echo_off)
		tcsetattr(fd, TCSAFLUSH, &old);
	dprintf(fd, "\n");
	close(fd);
	return ret ? -ENOKEY : 0;
}

int cred_find(const char *url, const char *key_file, bool prompt,
	      struct zen_cred *out, char *why, size_t whysz)
{
	struct secret *s = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	why[0] = '\0';
	if (env_key) {
		out->kind = CRED_API_KEY;
		out->secret = secret_ref(env_key);
		return 0;
	}
	if (key_file) {
		ret = read_key_file(key_file, &s, why, whysz);
		if (ret)
			return ret;
		out->kind = CRED_API_KEY;
		out->secret = s;
		return 0;
	}
	ret = session_load(url, &s);
	if (!ret) {
		out->kind = CRED_SESSION;
		out->secret = s;
		return 0;
	}
	if (ret != -ENOENT) {
		snprintf(why, whysz,
			 "the saved login session for '%s' cannot be used "
			 "(%s): run 'zenmlfs login %s' again",
			 url, strerror(-ret), url);
		return -EKEYEXPIRED;
	}
	if (env_username && env_password) {
		out->kind = CRED_PASSWORD;
		out->secret = secret_ref(env_password);
		out->username = strdup(env_username);
		return out->username ? 0 : -ENOMEM;
	}
	if (prompt && isatty(STDIN_FILENO) && !prompt_key(url, &s)) {
		out->kind = CRED_API_KEY;
		out->secret = s;
		return 0;
	}
	snprintf(why, whysz,
		 "no credential for '%s': set ZENML_STORE_API_KEY, pass "
		 "--api-key-file FILE, or run 'zenmlfs login %s'",
		 url, url);
	return -ENOKEY;
}

void cred_release(struct zen_cred *c)
{
	secret_unref(c->secret);
	free(c->username);
	memset(c, 0, sizeof(*c));
}
