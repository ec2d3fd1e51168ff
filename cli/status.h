/* SPDX-License-Identifier: MIT */
/* "zenmlfs status [MOUNTPOINT]": a mount's status, as an exit code too. */
#ifndef ZENMLFS_STATUS_H
#define ZENMLFS_STATUS_H

/* Exit codes: 0 ok, 1 degraded, 2 expired or unauthenticated, 3 not a
 * zenmlfs mount, or no answer within 2 s. */
#define STATUS_OK 0
#define STATUS_DEGRADED 1
#define STATUS_DOWN 2
#define STATUS_UNKNOWN 3

#include <stddef.h>

/* argv[0] is "status". */
int status_main(int argc, char **argv);

/* The path of the only zenmlfs mount in this namespace, into buf; else
 * -ENOENT and why (none, or several) into why. */
int status_only_mount(char *buf, size_t size, char *why, size_t whysz);

#endif
