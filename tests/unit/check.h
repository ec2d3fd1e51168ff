/* SPDX-License-Identifier: MIT */
/*
 * The unit tests' tiny runner: CHECK(cond) counts a pass or prints the
 * failed condition; CHECK_DONE() prints "N passed, N failed" and gives the
 * exit status.  Include once per test program.
 */
#ifndef ZENMLFS_CHECK_H
#define ZENMLFS_CHECK_H

#include <stdio.h>

static int n_pass, n_fail;

#define CHECK(cond)                                                    \
	do {                                                           \
		if (cond) {                                            \
			n_pass++;                                      \
		} else {                                               \
			n_fail++;                                      \
			fprintf(stderr, "%s:%d: FAIL: %s\n", __FILE__, \
				__LINE__, #cond);                      \
		}                                                      \
	} while (0)

#define CHECK_DONE() \
	(printf("%d passed, %d failed\n", n_pass, n_fail), n_fail != 0)

#endif
