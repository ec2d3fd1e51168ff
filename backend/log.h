/* SPDX-License-Identifier: MIT */
/*
 * The daemon's log: one line per event, "zenmlfs[PID]: LEVEL: message",
 * to standard error, a file (--log) or syslog once daemonized.  Every
 * message is escaped (control characters, bidi overrides, invalid UTF-8
 * as \xNN or \u{NNNN}, a backslash as \\) so a name from a user or the
 * server can neither forge a line nor hide text.  Callers never pass
 * secrets; messages follow STYLE.md (lowercase, no final period, subjects
 * quoted).  Thread-safe.
 */
#ifndef ZENMLFS_LOG_H
#define ZENMLFS_LOG_H

#include <stdbool.h>
#include <syslog.h>

/*
 * Log to the file at path (NULL: standard error).  A symlink is refused
 * (O_NOFOLLOW), so is anything but a regular file; a new file is made
 * 0600 and an existing one readable by others is made 0600.  0 or -errno.
 */
int log_open(const char *path);
/* Reopen the --log file (after logrotate moved it): SIGHUP. */
int log_reopen(void);
/* Switch from standard error to syslog (after daemonizing, without --log). */
void log_use_syslog(void);
/* Is there a syslog socket to send to (/dev/log)? */
bool log_syslog_available(void);
void log_close(void);

void log_msg(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Does the log go to standard error (no --log file, not syslog)? */
bool log_is_stderr(void);

/* Show LOG_DEBUG lines too (-d). */
void log_set_debug(bool on);

#endif
