/* SPDX-License-Identifier: MIT */
/*
 * Secrets (API keys, session tokens, minted tokens, new keys) live only in
 * libsodium guarded memory: locked, guard pages around, wiped on free.
 * The bytes are NUL-terminated for convenience, and len excludes the NUL.
 *
 * A secret is immutable once made and reference-counted, so a reader can
 * hold one across a FUSE reply without holding any lock.
 */
#ifndef ZENMLFS_SECRET_H
#define ZENMLFS_SECRET_H

#include <stddef.h>

#include "backend/util.h"

/*
 * How much of the stack to wipe (sodium_stackzero) below the frame of a
 * function that called something which handled a secret: the frames of a
 * libcurl transfer (TLS records, headers, a bearer token) and of jansson
 * parsing a reply (a minted token) fit in it.  One size for every such
 * place; zeroing it costs microseconds, and only after a call with a
 * secret.
 */
#define STACK_WIPE (64 * 1024)

struct secret {
	size_t len;
	char *buf; /* sodium_malloc'd, len + 1 bytes */
	struct ref refs;
};

/* A new secret holding a copy of s[0..len); NULL when out of memory. */
struct secret *secret_new(const char *s, size_t len);
/* Take another reference; returns s.  s may be NULL. */
struct secret *secret_ref(struct secret *s);
/* Drop a reference; the last one wipes and frees.  s may be NULL. */
void secret_unref(struct secret *s);
/* Constant-time equality of two secrets (either may be NULL). */
int secret_equal(const struct secret *a, const struct secret *b);

/*
 * Read a secret from fd: the first line (without "\n" or "\r\n"), at most
 * 16 KiB, read with read(2) straight into guarded memory (no stdio
 * buffers).  -ENODATA when empty, -E2BIG when too long.
 */
int secret_read_fd(int fd, struct secret **out);

/* Wipe-on-free allocator for jansson, so parsed replies leave no secret. */
void secret_json_allocator(void);
/* Free (wiping) what json_dumps() returned: it comes from that allocator. */
void json_str_free(char *s);

#endif
