// SPDX-License-Identifier: MIT
/*
 * zenmlfs: mount a ZenML server's credentials as files.
 *
 * The story: parse the command line; check, without a word to the
 * network, the URL, the mount point and the credential; go to the
 * background (the terminal waits for the outcome); log in and mint a first
 * token; mount; start the threads; tell the terminal and systemd once the
 * token is readable; serve; unmount (only our own mount); clean up.
 * Each stage that can fail has its own exit code (backend/exitcode.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backend/cred.h"
#include "backend/exitcode.h"
#include "backend/http.h"
#include "backend/log.h"
#include "backend/secret.h"
#include "backend/session.h"
#include "backend/store.h"
#include "backend/token.h"
#include "backend/util.h"
#include "backend/zenml.h"
#include "cli/exec.h"
#include "cli/login.h"
#include "fs/channel.h"
#include "fs/defer.h"
#include "fs/housekeeping.h"
#include "fs/mount.h"
#include "fs/notify.h"
#include "fs/ops.h"
#include "cli/options.h"
#include "fs/publish.h"
#include "fs/self.h"
#include "cli/service.h"
#include "cli/status.h"

#include "backend/banned.h" /* always the last include */

#define FUSE_THREADS_MAX 16
/* The first token: retried from 1 s, doubling, capped at a minute, with
 * full jitter, for as long as the server does not answer (or answers
 * 429/5xx). */
#define START_BACKOFF_MS 1000
#define START_BACKOFF_MAX_MS 60000
/* start_delay when started by systemd or Kubernetes: a fleet that boots
 * together spreads its first logins over this many seconds. */
#define START_DELAY_SERVICE 5
#define MALLOC_ARENAS 2
/* what main writes to the stop eventfd to end the stopper thread */
#define STOPPER_QUIT (1ULL << 62)
/* How long a stop keeps answering a detached mount that something still
 * uses (an open file, a working directory in it). */
#define STOP_DRAIN_MS 2000

/* Everything the daemon is made of: mount_main() allocates it, and
 * daemon_free() joins its threads and frees it, in one place. */
struct daemon {
	struct options o;
	struct fs fs;
	struct fuse_args args;
	struct fuse_session *se;
	char mountpoint[PATH_MAX];
	char state_dir[PATH_MAX]; /* where the key's session is kept; "" */
	int mount_id; /* ours, in /proc/self/mountinfo */
	bool mounted; /* fuse_session_mount() succeeded */
	bool detached; /* a stop took our mount out of the tree */
	bool log_lost; /* in the background, with nowhere to log to */
	int ready_fd; /* to the waiting terminal (cli/service.h); -1 */
	/* posted by SIGINT, SIGTERM, SIGQUIT: the stopper ends the mount */
	int stop_fd;
	pthread_t main_thread; /* runs the FUSE loop */
	pthread_t ready, stopper;
	bool ready_started, stopper_started; /* atomic access */
	bool stopped; /* stop_serving() ran (main, or the stopper) */
	/* orders stop_serving() (once) and the readiness thread's start */
	pthread_mutex_t stop_lock;
};

/* The daemon the signal handlers reach: set before they are installed,
 * NULL before its descriptors are closed (atomic access). */
static struct daemon *signalled;

static void harden(void)
{
	struct rlimit no_core = { 0, 0 };

	/* No core dumps, no ptrace by the same uid, no /proc/PID/mem. */
	prctl(PR_SET_DUMPABLE, 0);
	setrlimit(RLIMIT_CORE, &no_core);
	/* A few malloc arenas, not one per FUSE thread. */
	mallopt(M_ARENA_MAX, MALLOC_ARENAS);
	/* Large blocks (a list reply of megabytes) in their own mappings,
	 * handed back when freed; a fixed threshold, where glibc's would
	 * rise after the first such free and keep the next one in the
	 * heap. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
}

/* A startup failure: one line on the terminal, and in the log file too
 * when there is one. */
static void __attribute__((format(printf, 1, 2))) report(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "zenmlfs: %s\n", msg);
	if (!log_is_stderr())
		log_err("%s", msg);
}

/*
 * SIGHUP: read the key (or the saved session) again, and make it the
 * daemon's only once the server takes it: a login with it on the side (a
 * saved session: one request with it), the session in use untouched.  A
 * credential the server refuses, or that cannot be checked, is not used:
 * the one in use stays, the log and status say why.
 */
static void reload(void *arg)
{
	struct daemon *d = arg;
	struct zen_err e = { 0 };
	struct zen_cred cred;
	char why[800];
	int ret;

	if (log_reopen())
		log_warn("SIGHUP: cannot reopen the log file");
	ret = cred_reload(d->o.url, d->o.key_file, &cred, why, sizeof(why));
	if (ret) {
		log_warn("SIGHUP: %s", why);
		return;
	}
	if (cred.kind == CRED_SESSION) {
		ret = api_whoami_as(d->fs.zen, cred.secret, NULL, &e);
		if (!ret)
			zen_set_cred(d->fs.zen, &cred);
	} else {
		ret = zen_login_with(d->fs.zen, &cred, &e);
	}
	if (ret) {
		snprintf(why, sizeof(why),
			 "SIGHUP: the new credential from %s %s, keeping the "
			 "one in use: %s",
			 cred_source(),
			 e.status ? "was refused" : "could not be checked",
			 e.msg);
		log_err("%s", why);
		token_engine_note_error(d->fs.te, why);
		cred_release(&cred);
		return;
	}
	ret = token_engine_mint(d->fs.te, &e);
	if (ret)
		log_err("SIGHUP: cannot get a token with %s: %s", cred_source(),
			e.msg);
	else
		log_info("SIGHUP: logged in again with %s", cred_source());
}

/* systemd's view of the state: STATUS= follows status's "state". */
static void tell_systemd(void *arg)
{
	struct fs *fs = arg;

	service_notify("STATUS=state: %s",
		       token_state_name(token_engine_state(fs->te)));
}

static void token_changed(void *arg)
{
	publish_changed(arg);
	tell_systemd(arg);
}

/* The mount ID of what is now on top at path: ours, just mounted. */
static int our_mount_id(const char *path)
{
	struct mnt_info mi;

	return service_mount_at(path, &mi) ? -1 : mi.id;
}

/* Block the signals that stop the daemon in the threads we start, so they
 * reach main (or a FUSE worker), whose waits they interrupt. */
static void block_signals(bool block, sigset_t *old)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGQUIT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(block ? SIG_BLOCK : SIG_SETMASK, block ? &set : old,
			block ? old : NULL);
}

/* Once the kernel's INIT is answered, read the token back through the
 * mount: only then is the mount ready (terminal, systemd). */
static void *ready_main(void *arg)
{
	struct daemon *d = arg;
	char path[PATH_MAX + 8];
	dev_t dev;
	long n;

	/* through the helper: never a thread of ours on our own mount */
	snprintf(path, sizeof(path), "%s/token", d->mountpoint);
	n = self_read(d->fs.self, path);
	if (n <= 0)
		log_debug("readiness check: cannot read '%s': %s", path,
			  n ? strerror((int)-n) : "it is empty");
	/* only while the mount at the path is still ours */
	if (our_mount_id(d->mountpoint) == d->mount_id &&
	    !self_stat_dev(d->fs.self, d->mountpoint, &dev))
		publish_mounted(&d->fs, d->mountpoint, dev);
	log_info("mounted '%s' at '%s' (auth: %s from %s, token lifetime "
		 "%u s)",
		 zen_url(d->fs.zen), d->mountpoint,
		 cred_kind_name(zen_cred_kind(d->fs.zen)), cred_source(),
		 d->o.token_lifetime);
	service_notify("READY=1\nSTATUS=state: %s",
		       token_state_name(token_engine_state(d->fs.te)));
	if (d->log_lost)
		fprintf(stderr,
			"zenmlfs: warning: no syslog socket (/dev/log) and no "
			"--log: the daemon's log will be lost (pass --log "
			"FILE)\n");
	service_ready(&d->ready_fd);
	return NULL;
}

/* The INIT reply is out: the readiness check runs on its own thread
 * (it waits on the helper), joined at the stop. */
static void on_init(void *arg)
{
	struct daemon *d = arg;
	sigset_t old;

	pthread_mutex_lock(&d->stop_lock);
	block_signals(true, &old);
	if (!d->stopped && !pthread_create(&d->ready, NULL, ready_main, d))
		__atomic_store_n(&d->ready_started, true, __ATOMIC_RELEASE);
	block_signals(false, &old);
	pthread_mutex_unlock(&d->stop_lock);
}

static void on_hup_signal(int sig)
{
	struct daemon *d = __atomic_load_n(&signalled, __ATOMIC_ACQUIRE);

	if (d)
		hk_hup(d->fs.hk);
}

static void on_stop_signal(int sig)
{
	struct daemon *d = __atomic_load_n(&signalled, __ATOMIC_ACQUIRE);
	int e = errno;

	if (d && d->stop_fd >= 0)
		eventfd_write(d->stop_fd, 1);
	errno = e;
}

/* Signals: INT, TERM and QUIT stop the mount (the stopper thread), HUP
 * re-reads the key, the rest that would kill the daemon are ignored. */
static int setup_signals(struct daemon *d)
{
	static const int ignored[] = { SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM,
				       SIGPROF, SIGIO,	 SIGPWR,  SIGTTIN,
				       SIGTTOU, SIGXFSZ, SIGTSTP, SIGPIPE };
	static const int stops[] = { SIGINT, SIGTERM, SIGQUIT };
	struct sigaction sa = { 0 };

	d->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (d->stop_fd < 0)
		return -1;
	__atomic_store_n(&signalled, d, __ATOMIC_RELEASE);
	/* no SA_RESTART: the FUSE loop's wait must see EINTR */
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++)
		sigaction(stops[i], &sa, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_hup_signal;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
		sigaction(ignored[i], &sa, NULL);
	for (int s = SIGRTMIN; s <= SIGRTMAX; s++)
		sigaction(s, &sa, NULL);
	return 0;
}

/* The mount options for libfuse. */
static int fuse_args_for(struct daemon *d, const char *argv0,
			 struct fuse_args *args)
{
	const struct options *o = &d->o;
	const char *url = zen_url(d->fs.zen);
	char fopts[1600];

	snprintf(fopts, sizeof(fopts), "fsname=%s,subtype=zenmlfs%s%s%s%s%s%s",
		 strpbrk(url, ",\\") ? "zenmlfs" : url,
		 o->allow_other ? ",allow_other" : "",
		 o->allow_root ? ",allow_root" : "",
		 o->default_permissions ? ",default_permissions" : "",
		 o->auto_unmount ? ",auto_unmount" : "",
		 o->fuse_opts[0] ? "," : "", o->fuse_opts);
	if (fuse_opt_add_arg(args, argv0) || fuse_opt_add_arg(args, "-o") ||
	    fuse_opt_add_arg(args, fopts) ||
	    (o->debug && fuse_opt_add_arg(args, "-d")))
		return -ENOMEM;
	return 0;
}

/* Unmount, but only our own mount: one mounted over ours, or one that
 * replaced ours after it was detached, is left alone. */
static void unmount_ours(struct daemon *d)
{
	struct pollfd pfd = { .fd = fuse_session_fd(d->se) };
	struct mnt_info mi;
	bool ours, dead;

	ours = !d->detached && !service_mount_at(d->mountpoint, &mi) &&
	       mi.id == d->mount_id;
	/* A severed connection (unmounted already): libfuse only closes. */
	dead = poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR);
	if (ours || dead) {
		fuse_session_unmount(d->se);
		if (!d->detached)
			log_info("unmounted '%s'", d->mountpoint);
		return;
	}
	if (!d->detached)
		log_warn("'%s' now holds another mount: left as it is",
			 d->mountpoint);
	/* Our connection, wherever it is now, ends with its descriptor
	 * (/dev/null takes its number, for libfuse to close later). */
	int nul = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (nul >= 0) {
		dup2(nul, pfd.fd);
		close(nul);
	}
}

/*
 * Take our mount out of the tree while the loop still answers: a request
 * already past the mount point gets its answer, a new lookup finds the
 * directory underneath (ENOENT), and none is cut half-way (the kernel
 * ends what is queued on a closing connection with ECONNABORTED).  The
 * kernel ends the connection itself once nothing uses the detached mount;
 * an open file or a working directory in it may hold it longer, hence
 * the bound.
 */
static void detach_ours(struct daemon *d)
{
	struct pollfd pfd = { .fd = fuse_session_fd(d->se) };
	struct mnt_info mi;
	int ret;

	if (!d->mounted || service_mount_at(d->mountpoint, &mi) ||
	    mi.id != d->mount_id)
		return;
	ret = service_detach(d->mountpoint);
	if (ret) {
		log_warn("stopping: cannot detach '%s': %s", d->mountpoint,
			 strerror(-ret));
		return;
	}
	d->detached = true;
	log_info("unmounted '%s'", d->mountpoint);
	while (poll(&pfd, 1, STOP_DRAIN_MS) < 0 && errno == EINTR)
		;
}

/* Sleep ms, a stop signal ending the process meanwhile (none is
 * caught yet). */
static void nap_ms(unsigned long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
			       .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Was the daemon started by a service manager, with others like it? */
static bool in_a_fleet(void)
{
	return getenv("NOTIFY_SOCKET") || getenv("INVOCATION_ID") ||
	       getenv("KUBERNETES_SERVICE_HOST");
}

static void say_failed(struct daemon *d, int ret, const struct zen_err *e,
		       bool login)
{
	if (login)
		report("cannot log in to '%s': %s", d->o.url, e->msg);
	else if (zen_cred_kind(d->fs.zen) == CRED_SESSION &&
		 exit_for(ret) == EXIT_AUTH)
		report("cannot get a token from '%s': %s; run 'zenmlfs "
		       "login %s' again",
		       d->o.url, e->msg, d->o.url);
	else
		report("cannot get a token from '%s': %s", d->o.url, e->msg);
}

/*
 * Login (or the session kept from the last start) and the first token, on
 * the terminal.  A server that does not answer, or answers 429 or 5xx, is
 * asked again with backoff for as long as it takes (the mount point stays
 * as it is meanwhile; the terminal and the log say so); a refusal of the
 * credential or a server that is not ZenML ends the start at once.
 */
static int first_token(struct daemon *d)
{
	const char *state_dir = d->state_dir;
	struct zen_err e = { 0 };
	unsigned long wait;
	unsigned delay = d->o.start_delay;
	bool have_session;
	int ret;

	if (!d->o.start_delay_set && in_a_fleet())
		delay = START_DELAY_SERVICE;
	have_session = zen_cred_kind(d->fs.zen) == CRED_SESSION;
	if (!have_session && !zen_resume(d->fs.zen, state_dir)) {
		have_session = true;
		log_info("using the session kept in '%s' (no login)",
			 state_dir);
	}
	if (delay)
		nap_ms(randombytes_uniform(delay * 1000 + 1));
	for (unsigned attempt = 1;; attempt++) {
		bool login = !have_session;

		memset(&e, 0, sizeof(e));
		ret = login ? zen_login(d->fs.zen, &e) : 0;
		if (!ret) {
			have_session = true;
			ret = token_engine_mint(d->fs.te, &e);
		}
		if (!ret)
			return EXIT_OK;
		if (!zen_err_transient(ret, &e)) {
			say_failed(d, ret, &e, login);
			return exit_for(ret);
		}
		wait = backoff_ms(attempt, START_BACKOFF_MS,
				  START_BACKOFF_MAX_MS, JITTER_FULL,
				  e.retry_after);
		fprintf(stderr,
			"zenmlfs: %s '%s' failed: %s; trying again in %.1f s\n",
			login ? "login to" : "first token from", d->o.url,
			e.msg, wait / 1000.0);
		if (!log_is_stderr())
			log_warn("%s '%s' failed: %s; trying again in %.1f s",
				 login ? "login to" : "first token from",
				 d->o.url, e.msg, wait / 1000.0);
		service_notify("STATUS=state: starting (%s '%s' failed: %s; "
			       "trying again in %.1f s)",
			       login ? "login to" : "first token from",
			       d->o.url, e.msg, wait / 1000.0);
		nap_ms(wait);
	}
}

/*
 * End the mount's service, in an order in which nothing waits on a
 * request the daemon will not answer: cut the requests to the server (the
 * pool's jobs then reply at once) and stop the pool; withdraw the token
 * and stop both notifiers while the FUSE loop still answers (a page drop
 * waits for a READ of that page, an entry drop for a LOOKUP in that
 * directory); wake whatever waits on the helper; detach the mount and
 * answer what is already on its way; only then end the loop.
 * Each step is bounded, so a stop ends within seconds whatever is in
 * flight.  Runs once, from the stopper thread (a signal) or from main
 * (the loop ended by itself: unmounted from outside).
 */
static void stop_serving(struct daemon *d)
{
	bool first;

	/* Held only to mark the stop: op_init, which starts the readiness
	 * thread under it, must not wait on the steps below. */
	pthread_mutex_lock(&d->stop_lock);
	first = !d->stopped;
	d->stopped = true;
	pthread_mutex_unlock(&d->stop_lock);
	if (!first)
		return;
	zen_shutdown(d->fs.zen);
	defer_stop(d->fs.pool);
	if (!publish_withdraw(&d->fs))
		log_warn("stopping: the kernel did not drop the token's pages "
			 "in time");
	publish_stop(&d->fs);
	defer_stop(d->fs.tpool);
	notifier_stop(d->fs.meta);
	self_cancel(d->fs.self);
	if (__atomic_load_n(&d->ready_started, __ATOMIC_ACQUIRE)) {
		pthread_join(d->ready, NULL);
		__atomic_store_n(&d->ready_started, false, __ATOMIC_RELEASE);
	}
	detach_ours(d);
	fuse_session_exit(d->se);
}

/* Waits for a stop signal; main wakes it with ~0 to end it. */
static void *stopper_main(void *arg)
{
	struct daemon *d = arg;
	eventfd_t v = 0;

	while (eventfd_read(d->stop_fd, &v) && errno == EINTR)
		;
	if (v >= STOPPER_QUIT)
		return NULL;
	log_info("stopping on a signal");
	stop_serving(d);
	/* The loop's wait ends on a signal (EINTR): main's, blocked in
	 * every thread of ours. */
	pthread_kill(d->main_thread, SIGTERM);
	return NULL;
}

static int serve(struct daemon *d)
{
	struct fuse_loop_config *cfg;
	int ret;

	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return EXIT_RUNTIME;
	fuse_loop_cfg_set_max_threads(cfg, FUSE_THREADS_MAX);
	ret = fuse_session_loop_mt(d->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	if (ret < 0) {
		log_err("the FUSE loop failed: %s", strerror(-ret));
		return EXIT_RUNTIME;
	}
	return EXIT_OK;
}

/* 1. The command line and the server's URL: -1 to go on, else the exit
 * code. */
static int parse_command_line(struct daemon *d, int argc, char **argv)
{
	const char *why;

	switch (options_parse(argc, argv, &d->o)) {
	case OPT_DONE:
		return EXIT_OK;
	case OPT_USAGE:
		return EXIT_USAGE;
	default:
		break;
	}
	if (url_check(d->o.url, &why)) {
		char shown[1100]; /* never the password it may hold */

		url_redact(d->o.url, shown, sizeof(shown));
		fprintf(stderr, "zenmlfs: invalid server URL '%s': %s\n", shown,
			why);
		return EXIT_SERVER;
	}
	return -1;
}

/* 2. The mount point, and the log: -1 to go on, else the exit code. */
static int check_mountpoint_and_log(struct daemon *d)
{
	char why[700];
	int ret;

	ret = service_check_mountpoint(d->o.mountpoint, d->o.fake,
				       d->mountpoint, sizeof(d->mountpoint),
				       why, sizeof(why));
	if (ret) {
		fprintf(stderr, "zenmlfs: cannot mount at '%s': %s\n",
			d->o.mountpoint, why);
		return EXIT_MOUNT;
	}
	if (d->o.fake)
		return EXIT_OK; /* mount -f: everything checked, nothing done */
	log_set_debug(d->o.debug);
	ret = d->o.log_path ? log_open(d->o.log_path) : 0;
	if (ret) {
		fprintf(stderr, "zenmlfs: cannot open log file '%s': %s\n",
			d->o.log_path,
			ret == -ELOOP  ? "it is a symbolic link" :
			ret == -EINVAL ? "not a regular file" :
					 strerror(-ret));
		return EXIT_USAGE;
	}
	return -1;
}

/* 3. The credential, and 4. the background (the terminal waits for the
 * outcome): -1 to go on, else the exit code. */
static int credential_and_background(struct daemon *d, struct zen_cred *cred)
{
	char why[700];
	int ret;

	ret = cred_find(d->o.url, d->o.key_file, true, cred, why, sizeof(why));
	if (ret) {
		report("%s", why);
		return exit_for(ret);
	}
	if (d->o.token_mode_set && !d->o.allow_other)
		fprintf(stderr,
			"zenmlfs: warning: token_mode has no effect without "
			"allow_other: only you can enter the mount\n");
	ret = d->o.foreground ? 0 : service_daemonize(&d->ready_fd);
	if (ret) {
		cred_release(cred);
		report("cannot go to the background: %s", strerror(-ret));
		return EXIT_RUNTIME;
	}
	return -1;
}

/* 5. The server: the session (it takes cred), the token engine, the first
 * token.  -1 to go on, else the exit code. */
static int connect_server(struct daemon *d, struct zen_cred *cred)
{
	struct http_client *http;
	int ret;

	http = http_client_new(&(struct http_opts){ .base_url = d->o.url,
						    .cafile = d->o.cafile });
	if (!http) {
		cred_release(cred);
		return EXIT_RUNTIME;
	}
	d->fs.zen = zen_new(http, cred, d->o.pro ? ZS_PRO_API : ZS_WORKSPACE);
	if (!d->fs.zen) {
		cred_release(cred);
		http_client_free(http);
		return EXIT_RUNTIME;
	}
	d->fs.te = token_engine_new(
		d->fs.zen, &(struct token_opts){
				   .lifetime = d->o.token_lifetime,
				   .check_interval = d->o.check_interval,
				   .check_default = !d->o.check_interval_set,
				   .on_change = token_changed,
				   .arg = &d->fs,
			   });
	if (!d->fs.te)
		return EXIT_RUNTIME;
	if (!d->o.state_dir) {
		if (session_state_dir(d->state_dir, sizeof(d->state_dir)))
			d->state_dir[0] = '\0';
	} else if (strcmp(d->o.state_dir, "none")) {
		strlcpy_z(d->state_dir, d->o.state_dir, sizeof(d->state_dir));
	}
	ret = first_token(d);
	return ret ? ret : -1;
}

/* 6. The tree: the cache, the settings, the first token published. */
static int make_tree(struct daemon *d)
{
	struct fs *fs = &d->fs;

	fs->store = store_new(fs->zen, d->o.meta_ttl);
	fs->uid = d->o.uid >= 0 ? (uid_t)d->o.uid : getuid();
	fs->gid = d->o.gid >= 0 ? (gid_t)d->o.gid : getgid();
	fs->owner = getuid();
	fs->token_mode = d->o.token_mode;
	fs->tree_mode = d->o.tree_mode;
	fs->meta_ttl = d->o.meta_ttl;
	fs->key_window = d->o.key_window;
	fs->mount_time = time(NULL);
	fs->pid = getpid();
	fs->mountpoint = d->mountpoint;
	if (!fs->store || publish_first(fs))
		return EXIT_RUNTIME;
	store_on_gone(fs->store, ops_object_gone, fs);
	return -1;
}

/* 7. The mount: -1 to go on, else the exit code. */
static int mount_it(struct daemon *d, const char *argv0)
{
	struct channel_fds fds;
	int unmount_sock;

	if (fuse_args_for(d, argv0, &d->args))
		return EXIT_RUNTIME;
	d->se = fuse_session_new(&d->args, &zen_ops, sizeof(zen_ops), &d->fs);
	if (!d->se) {
		report("cannot start a FUSE session (bad mount options?)");
		return EXIT_USAGE;
	}
	if (setup_signals(d))
		return EXIT_RUNTIME;
	channel_fds_snapshot(&fds);
	if (fuse_session_mount(d->se, d->mountpoint)) {
		report("cannot mount at '%s'", d->mountpoint);
		return EXIT_MOUNT;
	}
	d->mounted = true;
	d->mount_id = our_mount_id(d->mountpoint);
	unmount_sock = channel_unmount_socket(fuse_session_fd(d->se), &fds);
	if (unmount_sock >= 0 && self_hold(d->fs.self, unmount_sock))
		log_warn("the mount helper cannot hold the auto_unmount "
			 "socket: a killed daemon may leave a dead mount");
	if (channel_setup(d->se)) {
		report("cannot set up the FUSE channel");
		return EXIT_RUNTIME;
	}
	if (!d->o.foreground && !d->o.log_path) {
		d->log_lost = !log_syslog_available();
		log_use_syslog();
	}
	return -1;
}

/* 8. The threads (after the fork), with the stop signals blocked in
 * them.  0 or -errno. */
static int start_threads(struct daemon *d)
{
	sigset_t old;
	int ret;

	block_signals(true, &old);
	ops_on_init(&d->fs, on_init, d);
	d->main_thread = pthread_self();
	ret = notifier_start(d->fs.meta, d->se);
	if (!ret)
		ret = publish_start(&d->fs, d->se);
	if (!ret)
		ret = defer_start(d->fs.pool);
	if (!ret)
		ret = defer_start(d->fs.tpool);
	if (!ret)
		ret = token_engine_start(d->fs.te);
	if (!ret)
		ret = hk_start(d->fs.hk, reload, d);
	if (!ret) {
		ret = -pthread_create(&d->stopper, NULL, stopper_main, d);
		d->stopper_started = !ret;
	}
	block_signals(false, &old);
	return ret;
}

/* Serve until a stop, then end the service: the exit code. */
static int run(struct daemon *d)
{
	int code = EXIT_RUNTIME;

	if (!start_threads(d))
		code = serve(d);
	service_notify("STOPPING=1");
	/* After a signal the stopper did this already; after an unmount
	 * from outside, main does (the connection is gone: nothing waits). */
	stop_serving(d);
	if (d->stopper_started) {
		eventfd_write(d->stop_fd, STOPPER_QUIT);
		pthread_join(d->stopper, NULL);
		d->stopper_started = false;
	}
	return code;
}

static struct daemon *daemon_new(void)
{
	struct daemon *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->ready_fd = -1;
	d->stop_fd = -1;
	d->args = (struct fuse_args)FUSE_ARGS_INIT(0, NULL);
	pthread_mutex_init(&d->stop_lock, NULL);
	return d;
}

/*
 * Everything the daemon made, however far the start got, in the order in
 * which nothing is freed while a thread may use it: our mount goes, the
 * helper and the threads are joined (the readiness thread by
 * stop_serving(), which ran if the loop did), then the session, the
 * mount's objects, the server's.
 */
static void daemon_free(struct daemon *d)
{
	int fd = d->stop_fd;

	if (d->mounted)
		unmount_ours(d);
	if (d->fs.self)
		self_stop(d->fs.self);
	if (d->fs.hk)
		hk_stop(d->fs.hk);
	if (d->fs.te)
		token_engine_stop(d->fs.te);
	if (__atomic_load_n(&d->ready_started, __ATOMIC_ACQUIRE))
		pthread_join(d->ready, NULL);
	/* a late signal finds no daemon before its descriptor closes */
	__atomic_store_n(&signalled, NULL, __ATOMIC_RELEASE);
	if (fd >= 0)
		close(fd);
	if (d->se)
		fuse_session_destroy(d->se);
	fuse_opt_free_args(&d->args);
	fs_destroy(&d->fs);
	store_free(d->fs.store);
	token_engine_free(d->fs.te);
	zen_free(d->fs.zen);
	if (d->ready_fd >= 0)
		close(d->ready_fd);
	options_release(&d->o);
	pthread_mutex_destroy(&d->stop_lock);
	free(d);
}

/* The mount, from the command line to the unmount: the exit code. */
static int mount_main(int argc, char **argv)
{
	struct daemon *d = daemon_new();
	struct zen_cred cred;
	int code, ret;

	if (!d)
		return EXIT_RUNTIME;
	code = parse_command_line(d, argc, argv);
	if (code < 0)
		code = check_mountpoint_and_log(d);
	if (code >= 0) {
		daemon_free(d);
		return code;
	}
	code = credential_and_background(d, &cred);
	if (code < 0 && fs_create(&d->fs)) {
		cred_release(&cred);
		code = EXIT_RUNTIME;
	}
	if (code < 0) {
		/* The helper for the daemon's own trips through the mount,
		 * before any FUSE descriptor exists (fs/self.h). */
		ret = self_start(d->fs.self);
		if (ret)
			log_warn("cannot start the mount helper: %s (the "
				 "folder's watchers get no event)",
				 strerror(-ret));
		code = connect_server(d, &cred);
	}
	if (code < 0)
		code = make_tree(d);
	if (code < 0)
		code = mount_it(d, argv[0]);
	if (code < 0)
		code = run(d);
	daemon_free(d);
	log_close();
	return code;
}

int main(int argc, char **argv)
{
	int code;

	if (argc == 2 && !strcmp(argv[1], SELF_HELPER_ARG))
		return self_helper_main();
	if (argc > 1 && !strcmp(argv[1], "exec")) /* its own set-up: no */
		return exec_main(argc - 1, argv + 1); /* rlimit for COMMAND */
	harden();
	if (sodium_init() < 0) {
		fprintf(stderr, "zenmlfs: cannot initialise libsodium\n");
		return EXIT_RUNTIME;
	}
	/* Before any thread or fork, and before anything could leak them. */
	cred_take_env();
	secret_json_allocator();
	if (http_global_init()) {
		fprintf(stderr, "zenmlfs: cannot initialise libcurl\n");
		return EXIT_RUNTIME;
	}
	if (argc > 1 && !strcmp(argv[1], "login"))
		code = login_main(argc - 1, argv + 1);
	else if (argc > 1 && !strcmp(argv[1], "logout"))
		code = logout_main(argc - 1, argv + 1);
	else if (argc > 1 && !strcmp(argv[1], "status"))
		code = status_main(argc - 1, argv + 1);
	else
		code = mount_main(argc, argv);
	http_global_cleanup();
	return code;
}
