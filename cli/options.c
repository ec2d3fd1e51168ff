// SPDX-License-Identifier: MIT
#include "cli/options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "backend/token.h"
#include "backend/util.h"

#include "backend/banned.h" /* always the last include */

enum otype {
	O_NUM, /* decimal number into an unsigned */
	O_MODE, /* octal mode */
	O_ID, /* uid / gid into a long */
	O_STR, /* a string (url, files) */
	O_BOOL, /* a flag of ours */
	O_FUSE, /* a flag handed on to libfuse */
	O_IGNORE, /* said by mount(8) or fstab; nothing for us to do */
};

struct opt {
	const char *name;
	enum otype type;
	size_t off; /* into struct options */
	unsigned long min, max;
	const char *arg, *help; /* NULL help: not listed */
};

#define F(f) offsetof(struct options, f)

static const struct opt opts[] = {
	{ "url", O_STR, F(url), 0, 0, "URL",
	  "the ZenML server (or SOURCE, --url, ZENML_STORE_URL)" },
	{ "pro_api", O_STR, F(pro_api), 0, 0, "URL",
	  "mount the ZenML Pro management API at URL instead of a server" },
	{ "api_key_file", O_STR, F(key_file), 0, 0, "FILE",
	  "read the API key from FILE (0600, owned by you or root)" },
	{ "cafile", O_STR, F(cafile), 0, 0, "FILE",
	  "trust the CA certificates in FILE too" },
	{ "log", O_STR, F(log_path), 0, 0, "FILE",
	  "append the log to FILE (default: syslog once daemonized)" },
	{ "token_lifetime", O_NUM, F(token_lifetime), TOKEN_LIFETIME_MIN,
	  365UL * 86400, "N", "token lifetime in seconds (default 3600)" },
	{ "meta_ttl", O_NUM, F(meta_ttl), 0, 86400, "N",
	  "metadata at most N seconds old (default 5)" },
	{ "key_window", O_NUM, F(key_window), 1, 86400, "N",
	  "a new key is readable N seconds (default 300)" },
	{ "check_interval", O_NUM, F(check_interval), 0, 86400, "N",
	  "check the credential every N s while the token is read "
	  "(default 60, 0: never)" },
	{ "start_delay", O_NUM, F(start_delay), 0, 600, "N",
	  "wait a random 0 to N s before the first request (default 5 "
	  "under systemd or Kubernetes, else 0)" },
	{ "state_dir", O_STR, F(state_dir), 0, 0, "DIR",
	  "keep the API key's session in DIR across restarts (default "
	  "$STATE_DIRECTORY, /var/lib/zenmlfs as root, else "
	  "$XDG_STATE_HOME/zenmlfs; none: never)" },
	{ "token_mode", O_MODE, F(token_mode), 0, 0777, "MODE",
	  "mode of token and token.json (default 0400)" },
	{ "tree_mode", O_MODE, F(tree_mode), 0, 0777, "MODE",
	  "mode of whoami/, devices/, service-accounts/ (default 0700)" },
	{ "uid", O_ID, F(uid), 0, UINT_MAX - 1, "N",
	  "owner of token, token.json, status, server/" },
	{ "gid", O_ID, F(gid), 0, UINT_MAX - 1, "N", "group of every file" },
	{ "allow_other", O_BOOL, F(allow_other), 0, 0, NULL,
	  "let other users in, as the modes say (implies "
	  "default_permissions)" },
	{ "allow_root", O_BOOL, F(allow_root), 0, 0, NULL,
	  "let root in as well as you" },
	{ "default_permissions", O_BOOL, F(default_permissions), 0, 0, NULL,
	  "let the kernel check the modes" },
	{ "auto_unmount", O_BOOL, F(auto_unmount), 0, 0, NULL,
	  "unmount when the daemon dies (the default)" },
	{ "no_auto_unmount", O_BOOL, F(auto_unmount), 1, 0, NULL,
	  "leave the mount behind if the daemon dies" },
	{ "foreground", O_BOOL, F(foreground), 0, 0, NULL,
	  "stay in the foreground (-f)" },
	{ "debug", O_BOOL, F(debug), 0, 0, NULL, "debug output (-d)" },
	/* kernel mount flags */
	{ "ro", O_FUSE },
	{ "rw", O_FUSE },
	{ "nosuid", O_FUSE },
	{ "suid", O_FUSE },
	{ "nodev", O_FUSE },
	{ "dev", O_FUSE },
	{ "noexec", O_FUSE },
	{ "exec", O_FUSE },
	{ "noatime", O_FUSE },
	{ "atime", O_FUSE },
	{ "relatime", O_IGNORE },
	{ "nodiratime", O_IGNORE },
	{ "sync", O_FUSE },
	{ "async", O_FUSE },
	{ "dirsync", O_FUSE },
	/* mount(8) and fstab words the helper may pass */
	{ "defaults", O_IGNORE },
	{ "auto", O_IGNORE },
	{ "noauto", O_IGNORE },
	{ "user", O_IGNORE },
	{ "users", O_IGNORE },
	{ "nouser", O_IGNORE },
	{ "owner", O_IGNORE },
	{ "group", O_IGNORE },
	{ "nofail", O_IGNORE },
	{ "_netdev", O_IGNORE },
	{ "loud", O_IGNORE },
	{ "silent", O_IGNORE },
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

void options_help(FILE *f)
{
	char left[64];

	fprintf(f,
		"usage: zenmlfs [OPTIONS] [URL] MOUNTPOINT\n"
		"       zenmlfs login [URL] [--trust] [--cafile FILE]\n"
		"       zenmlfs logout [URL]\n"
		"       zenmlfs status [MOUNTPOINT]\n"
		"\n"
		"Mounts a ZenML server's credentials as files: "
		"MOUNTPOINT/token is always a\nvalid short-lived API token.\n"
		"\n"
		"The server URL comes from URL, -o url=, --url or "
		"ZENML_STORE_URL; the\ncredential from ZENML_STORE_API_KEY, "
		"--api-key-file, a systemd credential\n'api-key', the session "
		"saved by 'zenmlfs login', ZENML_STORE_USERNAME and\n"
		"ZENML_STORE_PASSWORD, or a prompt.  Never from the command "
		"line.\n"
		"\n"
		"options:\n"
		"  --url URL            same as -o url=URL\n"
		"  --pro-api URL        same as -o pro_api=URL\n"
		"  --api-key-file FILE  same as -o api_key_file=FILE\n"
		"  --cafile FILE        same as -o cafile=FILE\n"
		"  --log FILE           same as -o log=FILE\n"
		"  -f, --foreground     stay in the foreground\n"
		"  -d, --debug          debug output, in the foreground\n"
		"  -o OPTION[,OPTION]   mount options, below\n"
		"  -h, --help           this text\n"
		"  -V, --version        the version\n"
		"\n"
		"mount options (-o):\n");
	for (size_t i = 0; i < NOPTS; i++) {
		if (!opts[i].help)
			continue;
		snprintf(left, sizeof(left), "%s%s%s", opts[i].name,
			 opts[i].arg ? "=" : "",
			 opts[i].arg ? opts[i].arg : "");
		fprintf(f, "  %-20s %s\n", left, opts[i].help);
	}
	fprintf(f,
		"  and the kernel's ro, rw, nosuid, suid, nodev, dev, noexec, "
		"exec, noatime,\n  atime, relatime, sync, async, dirsync; "
		"fstab's _netdev, nofail, auto,\n  noauto, user, users, "
		"defaults, x-* and comment= are accepted and ignored.\n"
		"\n"
		"exit status: 0 clean unmount, 1 usage, 2 no credential, 3 "
		"server unreachable\nfor good or bad URL (a server that does "
		"not answer is tried again), 4 credential\nrejected, 5 mount "
		"failed, 6 other failure.\n"
		"Unmount with: fusermount3 -u MOUNTPOINT (or umount)\n");
}

static enum opt_result __attribute__((format(printf, 1, 2)))
usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "zenmlfs: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'zenmlfs --help'.\n");
	return OPT_USAGE;
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

static int parse_number(const char *val, int base, unsigned long min,
			unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!*val || *val == '-' || *val == '+' || *val == ' ')
		return -EINVAL;
	v = strtoul(val, &end, base);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static enum opt_result set_string(struct options *o, const char **field,
				  const char *val)
{
	char *copy;

	if ((size_t)o->nowned >= sizeof(o->owned) / sizeof(o->owned[0]))
		return usage_error("too many options");
	copy = strdup(val);
	if (!copy)
		return usage_error("out of memory");
	o->owned[o->nowned++] = copy;
	*field = copy;
	return OPT_OK;
}

static enum opt_result one_opt(struct options *o, const char *name,
			       const char *val)
{
	char range[64];
	unsigned long v;

	/* x-systemd.automount, x-gvfs-show, comment=... are for others */
	if (!strncmp(name, "x-", 2) || !strcmp(name, "comment"))
		return OPT_OK;
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *op = &opts[i];
		char *field = (char *)o + op->off;

		if (strcmp(name, op->name))
			continue;
		if ((op->type <= O_STR) != (val != NULL))
			return val ? usage_error("option '%s' takes no value",
						 name) :
				     usage_error("option '%s' needs a value",
						 name);
		switch (op->type) {
		case O_NUM:
		case O_MODE:
		case O_ID:
			if (parse_number(val, op->type == O_MODE ? 8 : 10,
					 op->min, op->max, &v)) {
				snprintf(range, sizeof(range),
					 op->type == O_MODE ?
						 "an octal mode, at most %lo" :
						 "%lu to %lu",
					 op->type == O_MODE ? op->max : op->min,
					 op->max);
				fprintf(stderr,
					"zenmlfs: invalid value '%s' for "
					"option '%s' (expected %s)\n"
					"Try 'zenmlfs --help'.\n",
					val, name, range);
				return OPT_USAGE;
			}
			if (op->type == O_ID)
				*(long *)field = (long)v;
			else if (op->type == O_MODE)
				*(mode_t *)field = (mode_t)v;
			else
				*(unsigned *)field = (unsigned)v;
			if (op->off == F(token_mode))
				o->token_mode_set = true;
			if (op->off == F(check_interval))
				o->check_interval_set = true;
			if (op->off == F(start_delay))
				o->start_delay_set = true;
			return OPT_OK;
		case O_STR:
			return set_string(o, (const char **)field, val);
		case O_BOOL:
			/* min 1 marks the negative form */
			*(bool *)field = !op->min;
			return OPT_OK;
		case O_FUSE:
			return add_fuse_opt(o, name) ?
				       usage_error("too many options") :
				       OPT_OK;
		default:
			return OPT_OK;
		}
	}
	return usage_error("unknown mount option '%s'", name);
}

/* One -o list. */
static enum opt_result parse_list(struct options *o, const char *list)
{
	char *copy = strdup(list), *rest = copy, *opt, *val;
	enum opt_result r = OPT_OK;

	if (!copy)
		return usage_error("out of memory");
	while (rest && r == OPT_OK) {
		opt = strsep(&rest, ",");
		if (!*opt)
			continue; /* nothing between two commas, or at an end */
		val = strchr(opt, '=');
		if (val)
			*val++ = '\0';
		r = one_opt(o, opt, val);
	}
	free(copy);
	return r;
}

/* Called as mount.fuse.zenmlfs (a mount(8) helper)? */
static bool as_helper(const char *argv0)
{
	const char *base = strrchr(argv0, '/');

	base = base ? base + 1 : argv0;
	return !strncmp(base, "mount.", 6);
}

enum opt_result options_parse(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "pro-api", required_argument, NULL, 'p' },
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
	bool helper = as_helper(argv[0]);
	enum opt_result r;
	int c, npos;

	*o = (struct options){
		.token_lifetime = 3600,
		.meta_ttl = 5,
		.key_window = 300,
		.check_interval = 60,
		.token_mode = 0400,
		.tree_mode = 0700,
		.uid = -1,
		.gid = -1,
		.auto_unmount = true,
	};
	opterr = 0;
	optind = 1;
	/* mount(8) helpers take -s -f -n -v -t TYPE -N NS; -f is "fake" */
	for (;;) {
		c = getopt_long(argc, argv, helper ? "sfnvo:t:N:hV" : "fdho:V",
				longopts, NULL);
		if (c == -1)
			break;
		r = OPT_OK;
		switch (c) {
		case 'u':
			o->url = optarg;
			break;
		case 'p':
			o->pro_api = optarg;
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
			if (helper)
				o->fake = true;
			else
				o->foreground = true;
			break;
		case 'd':
			o->debug = o->foreground = true;
			break;
		case 'o':
			r = parse_list(o, optarg);
			break;
		case 's':
		case 'n':
		case 'v':
		case 't':
		case 'N':
			break;
		case 'h':
			options_help(stdout);
			return OPT_DONE;
		case 'V':
			printf("zenmlfs %s\n", ZENMLFS_VERSION);
			return OPT_DONE;
		case 'K':
			/* The value is in argv already: too late to hide it,
			 * but never use it. */
			return usage_error(
				"secrets are not accepted on the command line "
				"(they show in the process list): use "
				"ZENML_STORE_API_KEY or --api-key-file");
		case '?':
			if (optopt && optopt != '?' &&
			    !strchr("ouklcp", optopt))
				return usage_error("unknown option '-%c'",
						   optopt);
			return usage_error("unknown option, or one without "
					   "its value: '%s'",
					   argv[optind - 1]);
		default:
			return usage_error("option '%s' needs a value",
					   argv[optind - 1]);
		}
		if (r != OPT_OK)
			return r;
	}
	npos = argc - optind;
	if (npos == 0)
		return usage_error("missing MOUNTPOINT");
	if (npos > 2)
		return usage_error("too many arguments: '%s'",
				   argv[optind + 2]);
	if (npos == 2) {
		/* SOURCE: the URL, or a placeholder in an fstab line */
		const char *src = argv[optind];

		if (strcmp(src, "zenmlfs") && strcmp(src, "none") && *src) {
			char a[1100], b[1100]; /* never a password in them */

			url_redact(src, a, sizeof(a));
			url_redact(o->url, b, sizeof(b));
			if (o->url && strcmp(o->url, src))
				return usage_error(
					"two server URLs: '%s' and '%s'", a, b);
			o->url = src;
		}
	}
	o->mountpoint = argv[argc - 1];
	if (o->pro_api && *o->pro_api) {
		/* The management API is the server; ZENML_STORE_URL (a
		 * workspace's) does not count. */
		char a[1100], b[1100];

		url_redact(o->pro_api, a, sizeof(a));
		url_redact(o->url, b, sizeof(b));
		if (o->url && strcmp(o->url, o->pro_api))
			return usage_error("two server URLs: '%s' and '%s'", a,
					   b);
		o->url = o->pro_api;
		o->pro = true;
	}
	if (!o->url)
		o->url = getenv("ZENML_STORE_URL");
	if (o->url && !*o->url)
		o->url = NULL;
	if (!o->url)
		return usage_error("no server URL: give it as SOURCE, with "
				   "--url URL or -o url=URL, or set "
				   "ZENML_STORE_URL");
	if (o->allow_other)
		o->default_permissions = true;
	return OPT_OK;
}

void options_release(struct options *o)
{
	for (int i = 0; i < o->nowned; i++)
		free(o->owned[i]);
	o->nowned = 0;
}
