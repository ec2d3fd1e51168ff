// SPDX-License-Identifier: MIT
#define _GNU_SOURCE /* pipe2 */
#include "cli/service.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/mount.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/banned.h" /* always the last include */

int service_daemonize(int *ready_fd)
{
	int fds[2], status;
	char byte;
	pid_t pid;
	ssize_t n;

	if (pipe2(fds, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -errno;
	}
	if (pid == 0) {
		close(fds[0]);
		*ready_fd = fds[1];
		setsid();
		return 0;
	}
	/* The parent: wait for "ready", or for the child to exit. */
	close(fds[1]);
	do
		n = read(fds[0], &byte, 1);
	while (n < 0 && errno == EINTR);
	if (n == 1)
		_exit(0);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 6);
}

void service_ready(int *ready_fd)
{
	int fd;

	if (*ready_fd < 0)
		return;
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	if (write(*ready_fd, "1", 1) < 0) {
		/* the parent is gone: nobody to tell */
	}
	close(*ready_fd);
	*ready_fd = -1;
}

void service_notify(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char msg[1024];
	socklen_t len;
	va_list ap;
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@') ||
	    strlen(path) >= sizeof(sa.sun_path))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memcpy(sa.sun_path, path, strlen(path));
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	len = offsetof(struct sockaddr_un, sun_path) + strlen(path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   len) < 0) {
		/* systemd is not listening: nothing to do */
	}
	close(fd);
}

void service_unescape(char *s)
{
	char *o = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				      (s[3] - '0'));
			s += 4;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
}

int service_mount_at(const char *path, struct mnt_info *out)
{
	char line[4096], mp[PATH_MAX], type[64];
	int id, ret = -ENOENT;
	FILE *f;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - TYPE SRC ..."
	 * Later lines are mounted later: the last match is on top. */
	while (fgets(line, sizeof(line), f)) {
		char *dash = strstr(line, " - ");

		if (!dash ||
		    sscanf(line, "%d %*d %*s %*s %4095s", &id, mp) != 2 ||
		    sscanf(dash + 3, "%63s", type) != 1)
			continue;
		service_unescape(mp);
		if (strcmp(mp, path))
			continue;
		out->id = id;
		memcpy(out->fstype, type, sizeof(type));
		ret = 0;
	}
	fclose(f);
	return ret;
}

/*
 * path made absolute without touching it (a dead mount cannot be
 * resolved): the working directory prepended, "." and ".." and repeated
 * slashes folded.  Symbolic links stay as they are.  0 or -errno.
 */
static int lexical_abspath(const char *path, char *out, size_t size)
{
	char tmp[PATH_MAX];
	size_t len = 0;
	char *rest, *part;
	int n;

	if (path[0] == '/') {
		n = snprintf(tmp, sizeof(tmp), "%s", path);
	} else {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd)))
			return -errno;
		n = snprintf(tmp, sizeof(tmp), "%s/%s", cwd, path);
	}
	if (n < 0 || (size_t)n >= sizeof(tmp) || size < 2)
		return -ENAMETOOLONG;
	rest = tmp;
	while (rest) {
		size_t plen;

		part = strsep(&rest, "/");
		if (!*part)
			continue; /* "//", or a slash at an end */
		plen = strlen(part);
		if (!strcmp(part, "."))
			continue;
		if (!strcmp(part, "..")) {
			/* drop the last component and its slash */
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--;
			continue;
		}
		if (len + 1 + plen >= size)
			return -ENAMETOOLONG;
		out[len++] = '/';
		memcpy(out + len, part, plen);
		len += plen;
	}
	if (len == 0)
		out[len++] = '/';
	out[len] = '\0';
	return 0;
}

int service_detach(const char *abs)
{
	int status;
	pid_t pid;

	/* Not through a symbolic link put where the mount point was. */
	if (geteuid() == 0)
		return umount2(abs, MNT_DETACH | UMOUNT_NOFOLLOW) ? -errno : 0;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		execlp("fusermount3", "fusermount3", "-u", "-z", "--", abs,
		       (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EPERM;
}

/*
 * A zenmlfs mount at abs whose daemon is gone (a crashed or killed daemon,
 * or a container whose daemon was PID 1): detach it so this daemon can
 * take its place, as a restarted service expects.  Another file system's
 * dead mount is not ours to remove.  0 when it is gone (or would be, for
 * a dry run), -errno with why set otherwise.
 */
static int replace_dead_mount(const char *abs, bool dry_run, char *why,
			      size_t whysz)
{
	struct mnt_info mi;
	int ret;

	if (service_mount_at(abs, &mi) || strcmp(mi.fstype, "fuse.zenmlfs")) {
		snprintf(why, whysz,
			 "it is a dead mount (its daemon is gone): "
			 "unmount it with 'fusermount3 -u %s'",
			 abs);
		return -ENOTCONN;
	}
	if (dry_run)
		return 0;
	ret = service_detach(abs);
	if (ret) {
		snprintf(why, whysz,
			 "it is a dead zenmlfs mount that could not be "
			 "removed (%s): unmount it with 'fusermount3 -u %s'",
			 strerror(-ret), abs);
		return ret;
	}
	fprintf(stderr,
		"zenmlfs: removed the dead zenmlfs mount at '%s' (its "
		"daemon was gone)\n",
		abs);
	return 0;
}

/* A zenmlfs mount is at abs, and it is alive. */
static bool zenmlfs_at(const char *abs, bool *dead)
{
	struct mnt_info mi;
	struct statfs sfs;

	if (service_mount_at(abs, &mi) || strcmp(mi.fstype, "fuse.zenmlfs"))
		return false;
	/* statfs always reaches the daemon: stat may be answered from
	 * attributes the kernel still holds */
	*dead = statfs(abs, &sfs) && errno == ENOTCONN;
	return true;
}

int service_check_mountpoint(const char *path, bool dry_run, char *abs,
			     size_t size, char *why, size_t whysz)
{
	char buf[PATH_MAX];
	bool dead = false;
	struct stat st;
	int ret;

	if (!realpath(path, buf)) {
		if (errno != ENOTCONN) {
			snprintf(why, whysz, "%s", strerror(errno));
			return -errno;
		}
		ret = lexical_abspath(path, buf, sizeof(buf));
		if (ret) {
			snprintf(why, whysz, "%s", strerror(-ret));
			return ret;
		}
		dead = true;
	} else {
		zenmlfs_at(buf, &dead);
	}
	if (dead) {
		ret = replace_dead_mount(buf, dry_run, why, whysz);
		if (ret)
			return ret;
		if (dry_run) /* mount -f: it would be replaced */
			goto done;
		if (!realpath(path, buf)) {
			snprintf(why, whysz, "%s", strerror(errno));
			return -errno;
		}
	}
	if (stat(buf, &st)) {
		snprintf(why, whysz, "%s", strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(why, whysz, "not a directory");
		return -ENOTDIR;
	}
	if (zenmlfs_at(buf, &dead)) {
		snprintf(why, whysz,
			 "zenmlfs is already mounted there (unmount it "
			 "first: fusermount3 -u %s)",
			 buf);
		return -EBUSY;
	}
	if (geteuid() != 0 && access(buf, W_OK)) {
		snprintf(why, whysz,
			 "you may not mount there (a mount point must be "
			 "writable by you)");
		return -EACCES;
	}
done:
	if (strlen(buf) >= size) {
		snprintf(why, whysz, "the path is too long");
		return -ENAMETOOLONG;
	}
	memcpy(abs, buf, strlen(buf) + 1);
	return 0;
}
