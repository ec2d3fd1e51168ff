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

int session_save(const char *url, const struct secret *token)
{
	unsigned char *key = NULL, *box = NULL;
	unsigned char nonce[crypto_secretbox_NONCEBYTES];
	char path[PATH_MAX], tmp[PATH_MAX + 8], dir[PATH_MAX];
	size_t boxlen = token->len + crypto_secretbox_MACBYTES;
	int fd = -1, ret;

	ret = session_path(url, path, sizeof(path));
	if (ret)
		return ret;
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	ret = make_dirs(dir);
	if (ret)
		return ret;
	key = sodium_malloc(crypto_secretbox_KEYBYTES);
	box = malloc(boxlen);
	if (!key || !box) {
		ret = -ENOMEM;
		goto out;
	}
	ret = derive_key(url, key);
	if (ret)
		goto out;
	randombytes_buf(nonce, sizeof(nonce));
	crypto_secretbox_easy(box, (const unsigned char *)token->buf,
			      token->len, nonce, key);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if (fchmod(fd, 0600) || write(fd, MAGIC, MAGIC_LEN) != MAGIC_LEN ||
	    write(fd, nonce, sizeof(nonce)) != (ssize_t)sizeof(nonce) ||
	    write(fd, box, boxlen) != (ssize_t)boxlen || fsync(fd)) {
		ret = errno ? -errno : -EIO;
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, path)) {
		ret = -errno;
		unlink(tmp);
	}
out:
	if (fd >= 0)
		close(fd);
	sodium_free(key);
	free(box);
	return ret;
}

int session_load(const char *url, struct secret **token)
{
	unsigned char *key = NULL, *buf = NULL, *plain = NULL;
	char path[PATH_MAX];
	ssize_t n;
	size_t len = 0, hdr = MAGIC_LEN + crypto_secretbox_NONCEBYTES;
	int fd, ret;

	ret = session_path(url, path, sizeof(path));
	if (ret)
		return -ENOENT;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	buf = malloc(FILE_MAX);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		n = read(fd, buf + len, FILE_MAX - len);
		if (n <= 0)
			break;
		len += n;
	}
	close(fd);
	if (len < hdr + crypto_secretbox_MACBYTES + 1 || len == FILE_MAX ||
	    memcmp(buf, MAGIC, MAGIC_LEN)) {
		ret = -EBADMSG;
		goto out;
	}
	key = sodium_malloc(crypto_secretbox_KEYBYTES);
	plain = sodium_malloc(len);
	if (!key || !plain) {
		ret = -ENOMEM;
		goto out;
	}
	ret = derive_key(url, key);
	if (ret)
		goto out;
	if (crypto_secretbox_open_easy(plain, buf + hdr, len - hdr,
				       buf + MAGIC_LEN, key)) {
		ret = -EBADMSG;
		goto out;
	}
	*token = secret_new((char *)plain,
			    len - hdr - crypto_secretbox_MACBYTES);
	ret = *token ? 0 : -ENOMEM;
out:
	free(buf);
	sodium_free(key);
	sodium_free(plain);
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
	unsigned char *k = NULL, *box = NULL;
	unsigned char salt[SALT_LEN], nonce[crypto_secretbox_NONCEBYTES];
	char path[PATH_MAX], tmp[PATH_MAX + 8], sub[PATH_MAX];
	size_t boxlen = sess->len + crypto_secretbox_MACBYTES;
	int fd = -1, ret, n;

	ret = keysession_path(dir, url, key, path, sizeof(path));
	if (ret)
		return ret;
	n = snprintf(sub, sizeof(sub), "%s/keysessions", dir);
	if (n < 0 || (size_t)n >= sizeof(sub))
		return -ENAMETOOLONG;
	ret = make_dirs(sub);
	if (ret)
		return ret;
	k = sodium_malloc(crypto_secretbox_KEYBYTES);
	box = malloc(boxlen);
	if (!k || !box) {
		ret = -ENOMEM;
		goto out;
	}
	randombytes_buf(salt, sizeof(salt));
	randombytes_buf(nonce, sizeof(nonce));
	key_derive(salt, url, key, k);
	crypto_secretbox_easy(box, (const unsigned char *)sess->buf, sess->len,
			      nonce, k);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	errno = 0;
	if (fchmod(fd, 0600) || write(fd, KMAGIC, MAGIC_LEN) != MAGIC_LEN ||
	    write(fd, salt, sizeof(salt)) != (ssize_t)sizeof(salt) ||
	    write(fd, nonce, sizeof(nonce)) != (ssize_t)sizeof(nonce) ||
	    write(fd, box, boxlen) != (ssize_t)boxlen || fsync(fd)) {
		ret = errno ? -errno : -EIO;
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, path)) {
		ret = -errno;
		unlink(tmp);
	}
out:
	if (fd >= 0)
		close(fd);
	sodium_free(k);
	free(box);
	return ret;
}

int keysession_load(const char *dir, const char *url, const struct secret *key,
		    struct secret **sess)
{
	unsigned char *k = NULL, *buf = NULL, *plain = NULL;
	size_t len = 0,
	       hdr = MAGIC_LEN + SALT_LEN + crypto_secretbox_NONCEBYTES;
	char path[PATH_MAX];
	ssize_t n;
	int fd, ret;

	ret = keysession_path(dir, url, key, path, sizeof(path));
	if (ret)
		return -ENOENT;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	buf = malloc(FILE_MAX);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		n = read(fd, buf + len, FILE_MAX - len);
		if (n <= 0)
			break;
		len += n;
	}
	close(fd);
	if (len < hdr + crypto_secretbox_MACBYTES + 1 || len == FILE_MAX ||
	    memcmp(buf, KMAGIC, MAGIC_LEN)) {
		ret = -EBADMSG;
		goto out;
	}
	k = sodium_malloc(crypto_secretbox_KEYBYTES);
	plain = sodium_malloc(len);
	if (!k || !plain) {
		ret = -ENOMEM;
		goto out;
	}
	key_derive(buf + MAGIC_LEN, url, key, k);
	if (crypto_secretbox_open_easy(plain, buf + hdr, len - hdr,
				       buf + MAGIC_LEN + SALT_LEN, k)) {
		ret = -EBADMSG;
		goto out;
	}
	*sess = secret_new((char *)plain,
			   len - hdr - crypto_secretbox_MACBYTES);
	ret = *sess ? 0 : -ENOMEM;
out:
	free(buf);
	sodium_free(k);
	sodium_free(plain);
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
