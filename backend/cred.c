// SPDX-License-Identifier: MIT
#include "backend/cred.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "backend/secret.h"
#include "backend/session.h"
#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

extern char **environ;

enum source {
	SRC_NONE,
	SRC_ENV,
	SRC_FILE,
	SRC_SYSTEMD,
	SRC_SESSION,
	SRC_PASSWORD,
	SRC_PROMPT
};

static struct secret *env_key, *env_password;
static char *env_username;
static enum source found;

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

/*
 * Is the open key file fit to hold a secret?  Like ssh: a regular file,
 * nobody but its owner may read or write it, owned by us or root.
 */
static int check_key_file(int fd, const char *path, char *why, size_t whysz)
{
	struct stat st;

	if (fstat(fd, &st))
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, whysz, "API key file '%s' is not a regular file",
			 path);
		return -EINVAL;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		snprintf(why, whysz,
			 "API key file '%s' is owned by uid %u: it must be "
			 "yours or root's (chown %u '%s')",
			 path, (unsigned)st.st_uid, (unsigned)geteuid(), path);
		return -EPERM;
	}
	if (st.st_mode & 077) {
		snprintf(why, whysz,
			 "API key file '%s' has mode %04o: others may read or "
			 "change it; it must be readable by its owner only "
			 "(chmod 600 '%s')",
			 path, (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	return 0;
}

static int read_key_file(const char *path, struct secret **out, char *why,
			 size_t whysz)
{
	int fd, ret;

	/* O_NONBLOCK: a FIFO with no writer must not hang the open before
	 * check_key_file() can refuse it (it is meaningless for a regular
	 * file). */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		snprintf(why, whysz, "cannot open API key file '%s': %s", path,
			 strerror(errno));
		return ret;
	}
	ret = check_key_file(fd, path, why, whysz);
	if (!ret) {
		ret = secret_read_fd(fd, out);
		if (ret)
			snprintf(why, whysz,
				 "cannot read API key file '%s': %s", path,
				 ret == -ENODATA ? "it is empty" :
				 ret == -E2BIG	 ? "it is too long" :
						   strerror(-ret));
	}
	close(fd);
	return ret;
}

/* The systemd credential "api-key", when the unit passes one. */
static int systemd_key_path(char *buf, size_t size)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	int n;

	if (!dir || dir[0] != '/')
		return -ENOENT;
	n = snprintf(buf, size, "%s/api-key", dir);
	if (n < 0 || (size_t)n >= size || access(buf, F_OK))
		return -ENOENT;
	return 0;
}

static int prompt_key(const char *url, struct secret **out)
{
	struct termios old, quiet;
	int fd, ret;
	bool echo_off = false;

	fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -ENOKEY;
	/* Echo off before the prompt shows: a key typed or pasted as soon
	 * as the prompt appears is neither echoed nor flushed away. */
	if (!tcgetattr(fd, &old)) {
		quiet = old;
		quiet.c_lflag &= ~(ECHO | ECHONL);
		quiet.c_lflag |= ICANON;
		echo_off = !tcsetattr(fd, TCSAFLUSH, &quiet);
	}
	dprintf(fd, "ZenML API key for %s: ", url);
	ret = secret_read_fd(fd, out);
	if (echo_off)
		tcsetattr(fd, TCSAFLUSH, &old);
	dprintf(fd, "\n");
	close(fd);
	return ret ? -ENOKEY : 0;
}

static int from_file(const char *path, enum source src, struct zen_cred *out,
		     char *why, size_t whysz)
{
	struct secret *s = NULL;
	int ret = read_key_file(path, &s, why, whysz);

	if (ret)
		return -ENOKEY;
	out->kind = CRED_API_KEY;
	out->secret = s;
	found = src;
	return 0;
}

static int from_session(const char *url, struct zen_cred *out, char *why,
			size_t whysz)
{
	struct secret *s = NULL;
	int ret = session_load(url, &s);

	if (!ret) {
		out->kind = CRED_SESSION;
		out->secret = s;
		found = SRC_SESSION;
		return 0;
	}
	if (ret != -ENOENT)
		snprintf(why, whysz,
			 "the saved login session for '%s' cannot be used "
			 "(%s): run 'zenmlfs login %s' again",
			 url, strerror(-ret), url);
	return ret == -ENOENT ? -ENOENT : -EKEYEXPIRED;
}

int cred_find(const char *url, const char *key_file, bool prompt,
	      struct zen_cred *out, char *why, size_t whysz)
{
	char path[PATH_MAX];
	struct secret *s = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	why[0] = '\0';
	if (env_key) {
		out->kind = CRED_API_KEY;
		out->secret = secret_ref(env_key);
		found = SRC_ENV;
		return 0;
	}
	if (key_file)
		return from_file(key_file, SRC_FILE, out, why, whysz);
	if (!systemd_key_path(path, sizeof(path)))
		return from_file(path, SRC_SYSTEMD, out, why, whysz);
	ret = from_session(url, out, why, whysz);
	if (ret != -ENOENT)
		return ret;
	if (env_username && env_password) {
		out->kind = CRED_PASSWORD;
		out->secret = secret_ref(env_password);
		out->username = strdup(env_username);
		found = SRC_PASSWORD;
		return out->username ? 0 : -ENOMEM;
	}
	if (prompt && isatty(STDIN_FILENO) && !prompt_key(url, &s)) {
		out->kind = CRED_API_KEY;
		out->secret = s;
		found = SRC_PROMPT;
		return 0;
	}
	snprintf(why, whysz,
		 "no credential for '%s': set ZENML_STORE_API_KEY, pass "
		 "--api-key-file FILE, or run 'zenmlfs login %s'",
		 url, url);
	return -ENOKEY;
}

int cred_reload(const char *url, const char *key_file, struct zen_cred *out,
		char *why, size_t whysz)
{
	char path[PATH_MAX];
	int ret;

	memset(out, 0, sizeof(*out));
	why[0] = '\0';
	switch (found) {
	case SRC_FILE:
		return from_file(key_file, SRC_FILE, out, why, whysz);
	case SRC_SYSTEMD:
		if (systemd_key_path(path, sizeof(path))) {
			snprintf(why, whysz,
				 "the systemd credential 'api-key' is gone");
			return -ENOKEY;
		}
		return from_file(path, SRC_SYSTEMD, out, why, whysz);
	case SRC_SESSION:
		ret = from_session(url, out, why, whysz);
		if (ret == -ENOENT) {
			snprintf(why, whysz, "no saved login session for '%s'",
				 url);
			ret = -ENOKEY;
		}
		return ret;
	default:
		snprintf(why, whysz,
			 "the credential came from %s: there is nothing to "
			 "read again",
			 cred_source());
		return -ENOENT;
	}
}

const char *cred_source(void)
{
	switch (found) {
	case SRC_ENV:
		return "ZENML_STORE_API_KEY";
	case SRC_FILE:
		return "the API key file";
	case SRC_SYSTEMD:
		return "the systemd credential 'api-key'";
	case SRC_SESSION:
		return "the saved login session";
	case SRC_PASSWORD:
		return "ZENML_STORE_USERNAME/ZENML_STORE_PASSWORD";
	case SRC_PROMPT:
		return "the prompt";
	default:
		return "nowhere";
	}
}

void cred_release(struct zen_cred *c)
{
	secret_unref(c->secret);
	free(c->username);
	memset(c, 0, sizeof(*c));
}
