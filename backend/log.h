/* SPDX-License-Identifier: MIT */
/*
 * The daemon's log: one line per event, "zenmlfs[PID]: LEVEL: message",
 * to standard error, a file (--log) or syslog once daemonized.  Callers
 * never pass secrets; messages follow STYLE.md (lowercase, no final period,
 * subjects quoted).  Thread-safe.
 */
#ifndef ZENMLFS_LOG_H
#define ZENMLFS_LOG_H

#include <stdbool.h>
#include <syslog.h>

/* path NULL: standard error.  Returns 0 or -errno (file cannot be opened). */
int log_open(const char *path);
/* Switch from standard error to syslog (after daemonizing, without --log). */
void log_use_syslog(void);
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
