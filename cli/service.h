/* SPDX-License-Identifier: MIT */
/*
 * The daemon as a system service: going to the background early while the
 * starting terminal waits for the outcome, readiness and status for
 * systemd (sd_notify's protocol, without libsystemd), and what the mount
 * table says about a mount point.
 */
#ifndef ZENMLFS_SERVICE_H
#define ZENMLFS_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Fork now.  The parent waits until the child calls service_ready() (then
 * exits 0) or exits (then exits with the child's code), so the daemon has
 * one PID for its whole life and the terminal still sees every startup
 * error.  Returns 0 in the child, with *ready_fd its end of the pipe to the
 * parent; -errno on failure.
 */
int service_daemonize(int *ready_fd);
/* The mount is up: release the waiting parent (through *ready_fd, then
 * -1; nothing when it is -1 already), detach from the terminal (standard
 * streams to /dev/null). */
void service_ready(int *ready_fd);

/* Send one sd_notify message ("READY=1", "STATUS=...") if NOTIFY_SOCKET
 * is set. */
void service_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
void service_unescape(char *s);

/* The topmost mount at path in this mount namespace. */
struct mnt_info {
	int id; /* mount ID */
	char fstype[64];
};
/* 0 with *out, -ENOENT when nothing is mounted at path. */
int service_mount_at(const char *path, struct mnt_info *out);

/* Detach the mount at abs (lazily: what uses it keeps it until done):
 * umount2() as root, fusermount3 otherwise (it lets a user remove the
 * mounts they made).  0 or -errno. */
int service_detach(const char *abs);

/*
 * Check a mount point before anything is sent anywhere: it exists, is a
 * directory, has no live zenmlfs mounted on it, and the caller may mount
 * there.  A dead zenmlfs mount there (its daemon gone) is detached, said
 * on stderr, unless dry_run.  abs gets its absolute path.  0, or -errno
 * with why set.
 */
int service_check_mountpoint(const char *path, bool dry_run, char *abs,
			     size_t size, char *why, size_t whysz);

#endif
