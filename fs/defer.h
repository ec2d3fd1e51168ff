/* SPDX-License-Identifier: MIT */
/*
 * Requests that must wait on the server.
 *
 * A FUSE worker never waits on the server: it marks itself
 * (zen_never_wait), and when an operation would have to wait (a request
 * to send, or a fetch in flight to join: ZEN_WOULD_WAIT), the request is
 * queued here and the worker goes back to the kernel at once.  A few
 * threads of this pool take the queued requests in order, run them again
 * (they may wait) and reply.  So:
 *
 *  - the kernel always finds a free worker for what needs no server: the
 *    token and token.json, cached metadata, status, a refresh write, and
 *    the daemon's own rename of a new token through the mount;
 *  - at most as many requests as the pool has threads wait on the server
 *    at once, however many a user sends; the rest wait in its queue, in
 *    order;
 *  - a stop replies to every queued request at once (ENOTCONN) and joins
 *    the threads once the requests in flight were cut (zen_shutdown).
 */
#ifndef ZENMLFS_DEFER_H
#define ZENMLFS_DEFER_H

#include <stdbool.h>

#define DEFER_THREADS_MAX 8

/* The head of a queued request (embedded first in the caller's job). */
struct defer_job {
	struct defer_job *next;
};

/* run: do the job and reply (then free it); cancel: reply that the daemon
 * is stopping (then free it). */
typedef void defer_fn(struct defer_job *job);

struct defer;

/* A pool of threads (at most DEFER_THREADS_MAX); name names them. */
struct defer *defer_new(const char *name, unsigned threads, defer_fn *run,
			defer_fn *cancel);
int defer_start(struct defer *d);
/* Queue job.  False when the pool is stopping: the caller replies. */
bool defer_push(struct defer *d, struct defer_job *job);
/* Is the calling thread one of the pool's? */
bool defer_on_pool(void);
/* No more jobs: cancel() the queued ones, join the threads (after the
 * job each may be running).  d may be NULL. */
void defer_stop(struct defer *d);
void defer_free(struct defer *d);

#endif
