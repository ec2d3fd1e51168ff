// SPDX-License-Identifier: MIT
#include "backend/session.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/secret.h"
#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

#define MAGIC "ZMFS1\n"
#define MAGIC_LEN 6
#define FILE_MAX (32 * 1024)

static int state_dir(char *out, size_t size)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	int n;

	if (xdg && xdg[0] == '/')
		n = snprintf(out, size, "%s/zenmlfs", xdg);
	else if (home && home[0] == '/')
		n = snprintf(out, size, "%s/.local/state/zenmlfs", home);
	else
		return -ENOENT;
	return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

/* mkdir -p with mode 0700 for the parts we create. */
static int make_dirs(const char *dir)
{
	char tmp[PATH_MAX];
	size_t n = strlen(dir);

	if (n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, dir, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

int session_path(const char *url, char *out, size_t size)
{
	unsigned char h[16];
	char dir[PATH_MAX], hex[33];
	int ret, n;

	ret = state_dir(dir, sizeof(dir));
	if (ret)
		return ret;
	crypto_generichash(h, sizeof(h), (const unsigned char *)url,
			   strlen(url), NULL, 0);
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	n = snprintf(out, size, "%s/sessions/%s", dir, hex);
	return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

/* The key: BLAKE2b(machine-id || uid || url) — bound to this machine,
 * this user and this server. */
static int derive_key(const char *url, unsigned char *key)
{
	crypto_generichash_state st;
	char mid[128], uid[32];
	ssize_t n;
	int fd;

	fd = open("/etc/machine-id", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fd = open("/var/lib/dbus/machine-id", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -ENOENT;
	n = read(fd, mid, sizeof(mid));
	close(fd);
	if (n < 16)
		return -ENOENT;
	snprintf(uid, sizeof(uid), ":%u:", (unsigned)getuid());
	crypto_generichash_init(&st, (const unsigned char *)"zenmlfs session",
				15, crypto_secretbox_KEYBYTES);
	crypto_generichash_update(&st, (unsigned char *)mid, (size_t)n);
	crypto_generichash_update(&st, (unsigned char *)uid, strlen(uid));
	crypto_generichash_update(&st, (const unsigned char *)url, strlen(url));
	crypto_generichash_final(&st, key, crypto_secretbox_KEYBYTES);
	sodium_memzero(mid, sizeof(mid));
	return 0;
}

/*
 * A sealed file: magic, pre (a salt, or nothing), a random nonce, and
 * plain in a secretbox under key; written to path.tmp, synced, renamed
 * over path (0600, never through a symbolic link), in dir made 0700.
 */
static int write_sealed(const char *path, const char *magic,
			const unsigned char *pre, size_t prelen,
			const unsigned char *key, const struct secret *plain)
{
	unsigned char nonce[crypto_secretbox_NONCEBYTES];
	size_t boxlen = plain->len + crypto_secretbox_MACBYTES;
	char tmp[PATH_MAX + 8], dir[PATH_MAX];
	unsigned char *box;
	int fd, ret = 0;

	if (strlcpy_z(dir, path, sizeof(dir)) >= sizeof(dir))
		return -ENAMETOOLONG;
	*strrchr(dir, '/') = '\0';
	ret = make_dirs(dir);
	if (ret)
		return ret;
	box = malloc(boxlen);
	if (!box)
		return -ENOMEM;
	randombytes_buf(nonce, sizeof(nonce));
	crypto_secretbox_easy(box, (const unsigned char *)plain->buf,
			      plain->len, nonce, key);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	errno = 0;
	if (fchmod(fd, 0600) || write(fd, magic, MAGIC_LEN) != MAGIC_LEN ||
	    (prelen && write(fd, pre, prelen) != (ssize_t)prelen) ||
	    write(fd, nonce, sizeof(nonce)) != (ssize_t)sizeof(nonce) ||
	    write(fd, box, boxlen) != (ssize_t)boxlen || fsync(fd)) {
		ret = errno ? -errno : -EIO;
		unlink(tmp);
	} else if (rename(tmp, path)) {
		ret = -errno;
		unlink(tmp);
	}
	close(fd);
out:
	free(box);
	return ret;
}

/* A sealed file's bytes (malloc'd, *len of them), once its size and magic
 * are checked (prelen: the bytes between magic and nonce).  -ENOENT: no
 * file; -EBADMSG: not one of ours. */
static int read_sealed(const char *path, const char *magic, size_t prelen,
		       unsigned char **buf, size_t *len)
{
	size_t least = MAGIC_LEN + prelen + crypto_secretbox_NONCEBYTES +
		       crypto_secretbox_MACBYTES + 1;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	*buf = malloc(FILE_MAX);
	if (!*buf) {
		close(fd);
		return -ENOMEM;
	}
	*len = 0;
	for (;;) {
		n = read(fd, *buf + *len, FILE_MAX - *len);
		if (n <= 0)
			break;
		*len += (size_t)n;
	}
	close(fd);
	if (*len < least || *len == FILE_MAX ||
	    memcmp(*buf, magic, MAGIC_LEN)) {
		free(*buf);
		*buf = NULL;
		return -EBADMSG;
	}
	return 0;
}

/* Open the box of a sealed file's bytes, its nonce at buf + at, into
 * guarded memory.  -EBADMSG: another key, or altered. */
static int open_sealed(const unsigned char *buf, size_t len, size_t at,
		       const unsigned char *key, struct secret **out)
{
	const unsigned char *box = buf + at + crypto_secretbox_NONCEBYTES;
	size_t boxlen = len - at - crypto_secretbox_NONCEBYTES;
	unsigned char *plain = sodium_malloc(boxlen);
	int ret = 0;

	if (!plain)
		return -ENOMEM;
	if (crypto_secretbox_open_easy(plain, box, boxlen, buf + at, key))
		ret = -EBADMSG;
	else
		*out = secret_new((char *)plain,
				  boxlen - crypto_secretbox_MACBYTES);
	if (!ret && !*out)
		ret = -ENOMEM;
	sodium_free(plain);
	return ret;
}

int session_save(const char *url, const struct secret *token)
{
	char path[PATH_MAX];
	unsigned char *key;
	int ret;

	ret = session_path(url, path, sizeof(path));
	if (ret)
		return ret;
	key = sodium_malloc(crypto_secretbox_KEYBYTES);
	if (!key)
		return -ENOMEM;
	ret = derive_key(url, key);
	if (!ret)
		ret = write_sealed(path, MAGIC, NULL, 0, key, token);
	sodium_free(key);
	return ret;
}

int session_load(const char *url, struct secret **token)
{
	unsigned char *key = NULL, *buf = NULL;
	char path[PATH_MAX];
	size_t len;
	int ret;

	if (session_path(url, path, sizeof(path)))
		return -ENOENT;
	ret = read_sealed(path, MAGIC, 0, &buf, &len);
	if (ret)
		return ret;
	key = sodium_malloc(crypto_secretbox_KEYBYTES);
	if (!key)
		ret = -ENOMEM;
	if (!ret)
		ret = derive_key(url, key);
	if (!ret)
		ret = open_sealed(buf, len, MAGIC_LEN, key, token);
	free(buf);
	sodium_free(key);
	return ret;
}

int session_forget(const char *url)
{
	char path[PATH_MAX];
	int ret = session_path(url, path, sizeof(path));

	if (ret)
		return -ENOENT;
	return unlink(path) ? -errno : 0;
}

int session_client_id(char *out, size_t size)
{
	unsigned char r[16];
	char dir[PATH_MAX], path[PATH_MAX + 16], id[UUID_BUF] = "";
	ssize_t n;
	int fd, ret;

	ret = state_dir(dir, sizeof(dir));
	if (ret)
		return ret;
	snprintf(path, sizeof(path), "%s/client_id", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, id, sizeof(id) - 1);
		close(fd);
		if (n >= 36) {
			id[36] = '\0';
			if (uuid_valid(id)) {
				strlcpy_z(out, id, size);
				return 0;
			}
		}
	}
	ret = make_dirs(dir);
	if (ret)
		return ret;
	randombytes_buf(r, sizeof(r));
	r[6] = (r[6] & 0x0f) | 0x40; /* version 4 */
	r[8] = (r[8] & 0x3f) | 0x80; /* variant */
	snprintf(id, sizeof(id),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
		 r[10], r[11], r[12], r[13], r[14], r[15]);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, id, 36) != 36 || write(fd, "\n", 1) != 1) {
		ret = -EIO;
		close(fd);
		unlink(path);
		return ret;
	}
	close(fd);
	strlcpy_z(out, id, size);
	return 0;
}

/* ---- the session an API key's login gave -------------------------------
 *
 * "ZMFK1\n", a random salt, a nonce, and the session token in a secretbox
 * under BLAKE2b(domain || salt || url || key): whoever holds the key can
 * derive it, nobody else (not root without the key, not another machine
 * with it).  The key is 256 random bits or more, so a slow KDF would buy
 * nothing here; the salt makes every file's key a new one.
 */
#define KMAGIC "ZMFK1\n"
#define SALT_LEN 16

int session_state_dir(char *out, size_t size)
{
	const char *sd = getenv("STATE_DIRECTORY");
	int n;

	if (sd && sd[0] == '/') {
		/* systemd's StateDirectory=: the first of them */
		n = snprintf(out, size, "%.*s", (int)strcspn(sd, ":"), sd);
		return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
	}
	if (!getuid()) {
		n = snprintf(out, size, "/var/lib/zenmlfs");
		return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
	}
	return state_dir(out, size);
}

int keysession_path(const char *dir, const char *url, const struct secret *key,
		    char *out, size_t size)
{
	crypto_generichash_state st;
	unsigned char h[16];
	char hex[33];
	int n;

	crypto_generichash_init(&st, (const unsigned char *)"zenmlfs key file",
				16, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)url,
				  strlen(url) + 1);
	crypto_generichash_update(&st, (const unsigned char *)key->buf,
				  key->len);
	crypto_generichash_final(&st, h, sizeof(h));
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	n = snprintf(out, size, "%s/keysessions/%s", dir, hex);
	return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

static void key_derive(const unsigned char *salt, const char *url,
		       const struct secret *key, unsigned char *out)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st,
				(const unsigned char *)"zenmlfs key session",
				19, crypto_secretbox_KEYBYTES);
	crypto_generichash_update(&st, salt, SALT_LEN);
	crypto_generichash_update(&st, (const unsigned char *)url,
				  strlen(url) + 1);
	crypto_generichash_update(&st, (const unsigned char *)key->buf,
				  key->len);
	crypto_generichash_final(&st, out, crypto_secretbox_KEYBYTES);
	sodium_memzero(&st, sizeof(st));
}

int keysession_save(const char *dir, const char *url, const struct secret *key,
		    const struct secret *sess)
{
	unsigned char salt[SALT_LEN], *k;
	char path[PATH_MAX];
	int ret;

	ret = keysession_path(dir, url, key, path, sizeof(path));
	if (ret)
		return ret;
	k = sodium_malloc(crypto_secretbox_KEYBYTES);
	if (!k)
		return -ENOMEM;
	randombytes_buf(salt, sizeof(salt));
	key_derive(salt, url, key, k);
	ret = write_sealed(path, KMAGIC, salt, sizeof(salt), k, sess);
	sodium_free(k);
	return ret;
}

int keysession_load(const char *dir, const char *url, const struct secret *key,
		    struct secret **sess)
{
	unsigned char *k = NULL, *buf = NULL;
	char path[PATH_MAX];
	size_t len;
	int ret;

	if (keysession_path(dir, url, key, path, sizeof(path)))
		return -ENOENT;
	ret = read_sealed(path, KMAGIC, SALT_LEN, &buf, &len);
	if (ret)
		return ret;
	k = sodium_malloc(crypto_secretbox_KEYBYTES);
	if (!k) {
		ret = -ENOMEM;
	} else {
		key_derive(buf + MAGIC_LEN, url, key, k);
		ret = open_sealed(buf, len, MAGIC_LEN + SALT_LEN, k, sess);
	}
	free(buf);
	sodium_free(k);
	return ret;
}

int keysession_forget(const char *dir, const char *url,
		      const struct secret *key)
{
	char path[PATH_MAX];

	if (keysession_path(dir, url, key, path, sizeof(path)))
		return -ENOENT;
	return unlink(path) ? -errno : 0;
}
