// SPDX-License-Identifier: MIT
#include "backend/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

#define SYSLOG_SOCKET "/dev/log"

/* log_lock protects log_fd, log_path and log_syslog, and orders whole
 * lines. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = STDERR_FILENO;
static char *log_path;
static bool log_syslog;
static bool log_debug_on;

static int open_file(const char *path)
{
	struct stat st;
	int fd;

	fd = open(path,
		  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW |
			  O_NOCTTY,
		  0600);
	if (fd < 0)
		return errno == ELOOP ? -ELOOP : -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	/* The log names devices, addresses and accounts: ours only. */
	if ((st.st_mode & 077) && st.st_uid == geteuid())
		fchmod(fd, st.st_mode & 0600);
	return fd;
}

int log_open(const char *path)
{
	char *copy;
	int fd;

	if (!path)
		return 0;
	fd = open_file(path);
	if (fd < 0)
		return fd;
	copy = strdup(path);
	if (!copy) {
		close(fd);
		return -ENOMEM;
	}
	pthread_mutex_lock(&log_lock);
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = fd;
	free(log_path);
	log_path = copy;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

int log_reopen(void)
{
	int fd, ret = 0;

	pthread_mutex_lock(&log_lock);
	if (log_path) {
		fd = open_file(log_path);
		if (fd < 0) {
			ret = fd;
		} else {
			close(log_fd);
			log_fd = fd;
		}
	}
	pthread_mutex_unlock(&log_lock);
	return ret;
}

bool log_syslog_available(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, ret;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	memcpy(sa.sun_path, SYSLOG_SOCKET, sizeof(SYSLOG_SOCKET));
	ret = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return ret == 0;
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
	free(log_path);
	log_path = NULL;
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

/*
 * Is standard error the journal?  systemd says so in JOURNAL_STREAM
 * ("DEV:INODE" of the stream it connected): then each line carries its
 * priority as "<N>" and no time or name, which the journal adds itself.
 */
static bool stderr_is_journal(void)
{
	static int known = -1; /* under log_lock */
	unsigned long long dev, ino;
	const char *env;
	struct stat st;

	if (known < 0) {
		env = getenv("JOURNAL_STREAM");
		known = env && sscanf(env, "%llu:%llu", &dev, &ino) == 2 &&
			!fstat(STDERR_FILENO, &st) &&
			(unsigned long long)st.st_dev == dev &&
			(unsigned long long)st.st_ino == ino;
	}
	return known;
}

void log_msg(int level, const char *fmt, ...)
{
	char raw[1024], msg[1400], line[1500], stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, saved = errno;

	if (level == LOG_DEBUG && !log_debug_on)
		return;
	va_start(ap, fmt);
	n = vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(raw))
		n = sizeof(raw) - 1;
	/* One line per event: a newline or a bidi override in a name would
	 * forge or hide text, and a backslash in one would pass for an
	 * escape. */
	text_escape_log(raw, (size_t)n, msg, sizeof(msg));

	pthread_mutex_lock(&log_lock);
	if (log_syslog) {
		syslog(level, "%s: %s", level_name(level), msg);
	} else if (log_fd == STDERR_FILENO && stderr_is_journal()) {
		n = snprintf(line, sizeof(line), "<%d>%s: %s\n", level,
			     level_name(level), msg);
		if (n > (int)sizeof(line))
			n = sizeof(line);
		if (write(log_fd, line, n) < 0) {
			/* nowhere left to report it */
		}
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
