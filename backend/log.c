// SPDX-License-Identifier: MIT
#include "backend/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* log_lock protects log_fd and log_syslog and orders whole lines. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = STDERR_FILENO;
static bool log_syslog;
static bool log_debug_on;

int log_open(const char *path)
{
	int fd;

	if (!path)
		return 0;
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&log_lock);
	log_fd = fd;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

void log_use_syslog(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_fd == STDERR_FILENO) {
		openlog("zenmlfs", LOG_PID, LOG_DAEMON);
		log_syslog = true;
	}
	pthread_mutex_unlock(&log_lock);
}

void log_close(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = STDERR_FILENO;
	if (log_syslog)
		closelog();
	log_syslog = false;
	pthread_mutex_unlock(&log_lock);
}

bool log_is_stderr(void)
{
	bool ret;

	pthread_mutex_lock(&log_lock);
	ret = !log_syslog && log_fd == STDERR_FILENO;
	pthread_mutex_unlock(&log_lock);
	return ret;
}

void log_set_debug(bool on)
{
	log_debug_on = on;
}

static const char *level_name(int level)
{
	switch (level) {
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warning";
	case LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

void log_msg(int level, const char *fmt, ...)
{
	char msg[1024], line[1200], stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, saved = errno;

	if (level == LOG_DEBUG && !log_debug_on)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One line per event: a newline from a server message would forge one. */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';

	pthread_mutex_lock(&log_lock);
	if (log_syslog) {
		syslog(level, "%s: %s", level_name(level), msg);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
		n = snprintf(line, sizeof(line), "%s zenmlfs[%d]: %s: %s\n",
			     stamp, (int)getpid(), level_name(level), msg);
		if (n > (int)sizeof(line))
			n = sizeof(line);
		if (write(log_fd, line, n) < 0) {
			/* nowhere left to report it */
		}
	}
	pthread_mutex_unlock(&log_lock);
	errno = saved;
}
