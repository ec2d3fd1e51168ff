/* SPDX-License-Identifier: MIT */
/* The exit codes of every zenmlfs command (docs/zenmlfs.md, --help). */
#ifndef ZENMLFS_EXITCODE_H
#define ZENMLFS_EXITCODE_H

#include <errno.h>

enum exit_code {
	EXIT_OK = 0, /* clean unmount; login done; status ok */
	EXIT_USAGE = 1, /* bad option or value */
	EXIT_NOCRED = 2, /* no credential configured or usable */
	EXIT_SERVER = 3, /* server unreachable, not ZenML, or bad URL */
	EXIT_AUTH = 4, /* credential rejected, revoked or expired; login
			  denied */
	EXIT_MOUNT = 5, /* mount failed; login code expired */
	EXIT_RUNTIME = 6, /* anything else */
	EXIT_INTERRUPTED = 130, /* login interrupted */
};

/* The exit code for a startup failure with this -errno. */
static inline enum exit_code exit_for(int err)
{
	switch (-err) {
	case 0:
		return EXIT_OK;
	case ENOENT: /* not a ZenML server (404) */
	case EIO:
	case EFBIG:
	case EPROTO:
	case ETIMEDOUT:
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case EAGAIN:
		return EXIT_SERVER;
	case ENOKEY:
		return EXIT_NOCRED;
	case EPERM:
	case EACCES:
	case EKEYEXPIRED:
	case EKEYREVOKED:
	case EKEYREJECTED:
		return EXIT_AUTH;
	default:
		return EXIT_RUNTIME;
	}
}

#endif
