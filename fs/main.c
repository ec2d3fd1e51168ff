// SPDX-License-Identifier: MIT
/*
 * zenmlfs: mount a ZenML server's credentials as files.
 *
 * The story: parse options; take secrets out of the environment; find the
 * credential; on the user's terminal, check the server, log in and mint a
 * first token (any failure is reported here, before anything is
 * mounted); mount; daemonize; start the threads; serve; clean up.
 */
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backend/cache.h"
#include "backend/cred.h"
#include "backend/http.h"
#include "backend/log.h"
#include "backend/login.h"
#include "backend/secret.h"
#include "backend/token.h"
#include "backend/util.h"
#include "backend/zenml.h"
#include "fs/model.h"
#include "fs/notify.h"
#include "fs/ops.h"
#include "fs/tree.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_USAGE = 1,
	EXIT_NOCRED = 2,
	EXIT_SERVER = 3,
	EXIT_AUTH = 4,
	EXIT_MOUNT = 5,
	EXIT_RUNTIME = 6,
};

struct options {
	const char *url, *key_file, *cafile, *log_path, *mountpoint;
	bool foreground, debug, allow_other, default_permissions;
	unsigned token_lifetime, meta_ttl, key_window, check_interval;
	mode_t token_mode;
	long uid, gid;
	char fuse_opts[1024]; /* passed on to libfuse */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: zenmlfs [--url URL] [--api-key-file FILE] "
		"[--cafile FILE] [--log FILE]\n"
		"               [-f] [-d] [-o OPTION[,OPTION...]] MOUNTPOINT\n"
		"       zenmlfs login URL [--trust] [--cafile FILE]\n"
		"       zenmlfs logout URL\n"
		"\n"
		"Mounts a ZenML server's credentials as files: MOUNTPOINT/"
		"token is always a\nvalid short-lived API token.\n"
		"\n"
		"The server URL comes from --url or ZENML_STORE_URL; the "
		"credential from\nZENML_STORE_API_KEY, --api-key-file, the "
		"session saved by 'zenmlfs login',\nZENML_STORE_USERNAME/"
		"ZENML_STORE_PASSWORD, or a prompt.  Never from argv.\n"
		"\n"
		"options (-o):\n"
		"  token_lifetime=N   token lifetime in seconds (default "
		"3600, at least 60)\n"
		"  meta_ttl=N         metadata at most N seconds old "
		"(default 5)\n"
		"  key_window=N       a new key is readable N seconds "
		"(default 300)\n"
		"  check_interval=N   check the served token every N s "
		"(default 10, 0: never)\n"
		"  token_mode=MODE    mode of token and token.json "
		"(default 0400)\n"
		"  uid=N, gid=N       owner and group of the files\n"
		"  allow_other        let other users in (implies "
		"default_permissions)\n"
		"  default_permissions  let the kernel check modes\n"
		"\n"
		"Unmount with: fusermount3 -u MOUNTPOINT\n");
}

static int parse_num(const char *name, const char *val, unsigned long min,
		     unsigned long max, int base, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!*val || *val == '-' || *val == '+')
		goto bad;
	v = strtoul(val, &end, base);
	if (errno || *end || v < min || v > max)
		goto bad;
	*out = v;
	return 0;
bad:
	fprintf(stderr,
		"zenmlfs: invalid value '%s' for option '%s' (expected %lu .. "
		"%lu)\n",
		val, name, min, max);
	return -EINVAL;
}

static int add_fuse_opt(struct options *o, const char *opt)
{
	size_t n = strlen(o->fuse_opts);

	if (n + strlen(opt) + 2 > sizeof(o->fuse_opts))
		return -E2BIG;
	snprintf(o->fuse_opts + n, sizeof(o->fuse_opts) - n, "%s%s",
		 n ? "," : "", opt);
	return 0;
}

/* Our numeric -o options. */
struct num_opt {
	const char *name;
	unsigned long min, max;
	int base;
	size_t off; /* offset of the field in struct options */
	bool is_long;
};

#define NUM_OPT(n, lo, hi, b, f, l)                          \
	{                                                    \
		n, lo, hi, b, offsetof(struct options, f), l \
	}

static const struct num_opt num_opts[] = {
	NUM_OPT("token_lifetime", TOKEN_LIFETIME_MIN, 365UL * 86400, 10,
		token_lifetime, false),
	NUM_OPT("meta_ttl", 0, 86400, 10, meta_ttl, false),
	NUM_OPT("key_window", 1, 86400, 10, key_window, false),
	NUM_OPT("check_interval", 0, 86400, 10, check_interval, false),
	NUM_OPT("token_mode", 0, 0777, 8, token_mode, false),
	NUM_OPT("uid", 0, UINT_MAX - 1, 10, uid, true),
	NUM_OPT("gid", 0, UINT_MAX - 1, 10, gid, true),
};

/* Plain mount flags handed on to libfuse as they are. */
static const char *const fuse_flags[] = {
	"ro", "rw", "nosuid", "nodev", "noexec", "noatime", "auto_unmount",
};

static int parse_one_opt(struct options *o, const char *opt, const char *val)
{
	unsigned long v;

	for (size_t i = 0; i < sizeof(num_opts) / sizeof(num_opts[0]); i++) {
		const struct num_opt *n = &num_opts[i];
		char *field = (char *)o + n->off;

		if (strcmp(opt, n->name))
			continue;
		if (!val) {
			fprintf(stderr, "zenmlfs: option '%s' needs a value\n",
				opt);
			return -EINVAL;
		}
		if (parse_num(opt, val, n->min, n->max, n->base, &v))
			return -EINVAL;
		if (n->is_long)
			*(long *)field = (long)v;
		else if (n->off == offsetof(struct options, token_mode))
			*(mode_t *)field = (mode_t)v;
		else
			*(unsigned *)field = (unsigned)v;
		return 0;
	}
	if (!val && !strcmp(opt, "allow_other")) {
		o->allow_other = true;
		return 0;
	}
	if (!val && !strcmp(opt, "default_permissions")) {
		o->default_permissions = true;
		return 0;
	}
	for (size_t i = 0; !val && i < sizeof(fuse_flags) / sizeof(*fuse_flags);
	     i++)
		if (!strcmp(opt, fuse_flags[i]))
			return add_fuse_opt(o, opt);
	fprintf(stderr, "zenmlfs: unknown mount option '%s'\n", opt);
	return -EINVAL;
}

/* One -o list: ours are taken, the rest go to libfuse. */
static int parse_mount_opts(struct options *o, char *list)
{
	char *save = NULL, *opt, *val;

	for (opt = strtok_r(list, ",", &save); opt;
	     opt = strtok_r(NULL, ",", &save)) {
		val = strchr(opt, '=');
		if (val)
			*val++ = '\0';
		if (parse_one_opt(o, opt, val))
			return -EINVAL;
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "api-key-file", required_argument, NULL, 'k' },
		{ "cafile", required_argument, NULL, 'c' },
		{ "log", required_argument, NULL, 'l' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "api-key", required_argument, NULL, 'K' },
		{ "password", required_argument, NULL, 'K' },
		{ 0 },
	};
	char *copy;
	int c;

	*o = (struct options){
		.token_lifetime = 3600,
		.meta_ttl = 5,
		.key_window = 300,
		.check_interval = 10,
		.token_mode = 0400,
		.uid = -1,
		.gid = -1,
	};
	while ((c = getopt_long(argc, argv, "+fdho:V", longopts, NULL)) != -1) {
		switch (c) {
		case 'u':
			o->url = optarg;
			break;
		case 'k':
			o->key_file = optarg;
			break;
		case 'c':
			o->cafile = optarg;
			break;
		case 'l':
			o->log_path = optarg;
			break;
		case 'f':
			o->foreground = true;
			break;
		case 'd':
			o->debug = o->foreground = true;
			break;
		case 'o':
			copy = strdup(optarg);
			if (!copy || parse_mount_opts(o, copy)) {
				free(copy);
				return -EINVAL;
			}
			free(copy);
			break;
		case 'h':
			usage(stdout);
			exit(EXIT_OK);
		case 'V':
			printf("zenmlfs %s\n", ZENMLFS_VERSION);
			exit(EXIT_OK);
		case 'K':
			/* The value is in argv already: too late to hide it,
			 * but never use it. */
			fprintf(stderr,
				"zenmlfs: secrets are not accepted on the "
				"command line (they show in the process "
				"list): use ZENML_STORE_API_KEY or "
				"--api-key-file\n");
			return -EINVAL;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, optind == argc ?
					"zenmlfs: missing MOUNTPOINT\n" :
					"zenmlfs: too many arguments\n");
		usage(stderr);
		return -EINVAL;
	}
	o->mountpoint = argv[optind];
	if (!o->url)
		o->url = getenv("ZENML_STORE_URL");
	if (!o->url || !*o->url) {
		fprintf(stderr, "zenmlfs: no server URL: pass --url URL or set "
				"ZENML_STORE_URL\n");
		return -EINVAL;
	}
	if (strncmp(o->url, "http://", 7) && strncmp(o->url, "https://", 8)) {
		fprintf(stderr,
			"zenmlfs: invalid server URL '%s': it must start "
			"with http:// or https://\n",
			o->url);
		return -EINVAL;
	}
	if (o->allow_other)
		o->default_permissions = true;
	return 0;
}

static enum exit_code exit_for(int err)
{
	switch (-err) {
	case ENOKEY:
		return EXIT_NOCRED;
	case EKEYREJECTED:
	case EKEYREVOKED:
	case EKEYEXPIRED:
	case EPERM:
		return EXIT_AUTH;
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case ETIMEDOUT:
	case EPROTO:
	case EIO:
	case EFBIG:
	case ENOENT:
		return EXIT_SERVER;
	default:
		return EXIT_RUNTIME;
	}
}

static void harden(void)
{
	struct rlimit no_core = { 0, 0 };

	/* No core dumps, no ptrace by the same uid, no /proc/PID/mem. */
	prctl(PR_SET_DUMPABLE, 0);
	setrlimit(RLIMIT_CORE, &no_core);
}

/* A failure before daemonizing: on the user's terminal, and in the log
 * file too when there is one. */
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

static struct fs g_fs;

static void fs_invalidate(const char *path)
{
	ops_stale(path);
	notify_path(path ? path : "/");
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *loop_cfg = NULL;
	struct fuse_session *se = NULL;
	struct token_engine *te = NULL;
	struct http_client *http;
	struct zen *zen = NULL;
	struct zen_cred cred;
	struct options o;
	char why[600], err[600], fopts[1200];
	json_t *info = NULL;
	int ret, code = EXIT_RUNTIME;

	harden();
	if (sodium_init() < 0) {
		fprintf(stderr, "zenmlfs: cannot initialise libsodium\n");
		return EXIT_RUNTIME;
	}
	/* Before any thread or fork, and before anything could leak them. */
	cred_take_env();
	secret_json_allocator();
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		fprintf(stderr, "zenmlfs: cannot initialise libcurl\n");
		return EXIT_RUNTIME;
	}
	if (argc > 1 && !strcmp(argv[1], "login"))
		return login_main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "logout"))
		return logout_main(argc - 1, argv + 1);

	if (parse_args(argc, argv, &o)) {
		code = EXIT_USAGE;
		goto out_curl;
	}
	log_set_debug(o.debug);
	if (o.log_path && (ret = log_open(o.log_path))) {
		fprintf(stderr, "zenmlfs: cannot open log file '%s': %s\n",
			o.log_path, strerror(-ret));
		code = EXIT_USAGE;
		goto out_curl;
	}

	/* The credential. */
	ret = cred_find(o.url, o.key_file, true, &cred, why, sizeof(why));
	if (ret) {
		report("%s", why);
		code = exit_for(ret);
		goto out_log;
	}

	/* The server, on the user's terminal. */
	http = http_client_new(
		&(struct http_opts){ .base_url = o.url, .cafile = o.cafile });
	if (!http) {
		cred_release(&cred);
		fprintf(stderr, "zenmlfs: invalid server URL '%s'\n", o.url);
		code = EXIT_USAGE;
		goto out_log;
	}
	zen = zen_new(http, &cred);
	if (!zen) {
		cred_release(&cred);
		http_client_free(http);
		goto out_log;
	}
	ret = zen_info(zen, &info);
	if (ret) {
		zen_last_error(zen, err, sizeof(err));
		report("cannot reach the ZenML server at '%s': %s", o.url, err);
		code = EXIT_SERVER;
		goto out_zen;
	}
	json_decref(info);
	if (zen_cred_kind(zen) != CRED_SESSION) {
		ret = zen_login(zen);
		if (ret) {
			zen_last_error(zen, err, sizeof(err));
			report("cannot log in to '%s': %s", o.url, err);
			code = exit_for(ret);
			goto out_zen;
		}
	}
	te = token_engine_new(zen, &(struct token_opts){
					   .lifetime = o.token_lifetime,
					   .check_interval = o.check_interval,
					   .on_change = notify_token_changed,
				   });
	if (!te)
		goto out_zen;
	ret = token_engine_mint(te);
	if (ret) {
		zen_last_error(zen, err, sizeof(err));
		if (zen_cred_kind(zen) == CRED_SESSION &&
		    (ret == -EKEYREJECTED || ret == -EKEYEXPIRED ||
		     ret == -EKEYREVOKED))
			snprintf(err + strlen(err), sizeof(err) - strlen(err),
				 "; the saved login session is no longer "
				 "valid: run 'zenmlfs login %s' again",
				 o.url);
		report("cannot get a token from '%s': %s", o.url, err);
		code = exit_for(ret);
		goto out_engine;
	}

	/* The tree. */
	g_fs = (struct fs){
		.zen = zen,
		.te = te,
		.cache = cache_new(o.meta_ttl),
		.uid = o.uid >= 0 ? (uid_t)o.uid : getuid(),
		.gid = o.gid >= 0 ? (gid_t)o.gid : getgid(),
		.owner = getuid(),
		.token_mode = o.token_mode,
		.meta_ttl = o.meta_ttl,
		.key_window = o.key_window,
		.mount_time = time(NULL),
		.invalidate = fs_invalidate,
		.sync_token = notify_token_sync,
	};
	if (!g_fs.cache || ops_init(&g_fs))
		goto out_fs;

	/* The mount. */
	snprintf(fopts, sizeof(fopts), "fsname=zenmlfs,subtype=zenmlfs%s%s%s%s",
		 o.allow_other ? ",allow_other" : "",
		 o.default_permissions ? ",default_permissions" : "",
		 o.fuse_opts[0] ? "," : "", o.fuse_opts);
	if (fuse_opt_add_arg(&args, argv[0]) || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, fopts) ||
	    (o.debug && fuse_opt_add_arg(&args, "-d")))
		goto out_fs;
	se = fuse_session_new(&args, &zen_ops, sizeof(zen_ops), NULL);
	if (!se) {
		code = EXIT_USAGE;
		goto out_fs;
	}
	if (fuse_set_signal_handlers(se))
		goto out_session;
	if (fuse_session_mount(se, o.mountpoint)) {
		report("cannot mount at '%s'", o.mountpoint);
		code = EXIT_MOUNT;
		goto out_signals;
	}
	log_info("mounted '%s' at '%s' (auth: %s, token lifetime %u s)", o.url,
		 o.mountpoint, cred_kind_name(zen_cred_kind(zen)),
		 o.token_lifetime);
	if (fuse_daemonize(o.foreground))
		goto out_unmount;
	if (!o.foreground && !o.log_path)
		log_use_syslog();

	/* Threads start after the fork. */
	if (notify_start(se, &g_fs))
		goto out_unmount;
	if (token_engine_start(te))
		goto out_notify;
	loop_cfg = fuse_loop_cfg_create();
	if (!loop_cfg)
		goto out_threads;
	fuse_loop_cfg_set_max_threads(loop_cfg, 16);
	ret = fuse_session_loop_mt(se, loop_cfg);
	code = ret < 0 ? EXIT_RUNTIME : EXIT_OK;
	if (code == EXIT_OK)
		log_info("unmounted '%s'", o.mountpoint);
	else
		log_err("the FUSE loop failed: %s", strerror(-ret));

	fuse_loop_cfg_destroy(loop_cfg);
out_threads:
	token_engine_stop(te);
out_notify:
	notify_stop();
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_fs:
	fuse_opt_free_args(&args);
	keys_release();
	ops_release();
	cache_free(g_fs.cache);
out_engine:
	token_engine_free(te);
out_zen:
	zen_free(zen);
out_log:
	log_close();
out_curl:
	curl_global_cleanup();
	return code;
}
