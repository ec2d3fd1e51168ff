/* SPDX-License-Identifier: MIT */
/*
 * The command line: flags, -o options (one table, which --help prints and
 * the man page is tested against), and the calling conventions of
 * mount(8) and mount.fuse3 ("zenmlfs SOURCE MOUNTPOINT -o OPTS", and
 * "mount.fuse.zenmlfs SOURCE MOUNTPOINT [-sfnv] -o OPTS").  Every setting a
 * boot needs has a -o form.
 */
#ifndef ZENMLFS_OPTIONS_H
#define ZENMLFS_OPTIONS_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

struct options {
	const char *url, *key_file, *cafile, *log_path, *mountpoint;
	const char *pro_api; /* the ZenML Pro management API, not a server */
	bool pro; /* url is the management API (pro_api) */
	bool foreground, debug;
	bool allow_other, allow_root, default_permissions;
	bool auto_unmount; /* on unless -o no_auto_unmount */
	bool fake; /* mount -f: check the options, mount nothing */
	bool token_mode_set;
	bool check_interval_set; /* given, not the default */
	unsigned token_lifetime, meta_ttl, key_window, check_interval;
	unsigned start_delay; /* s: the first request waits up to this */
	bool start_delay_set;
	const char *state_dir; /* "none": keep no session; NULL: default */
	mode_t token_mode, tree_mode;
	long uid, gid; /* -1: the caller's */
	char fuse_opts[1024]; /* handed on to libfuse */
	char *owned[16]; /* copies of -o string values */
	int nowned;
};

/* Parsed; --help / --version printed (exit 0); an error printed as one
 * line plus "Try 'zenmlfs --help'." (exit 1). */
enum opt_result { OPT_OK, OPT_DONE, OPT_USAGE };

enum opt_result options_parse(int argc, char **argv, struct options *o);
void options_release(struct options *o);
void options_help(FILE *f);

#endif
