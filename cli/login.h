/* SPDX-License-Identifier: MIT */
/* "zenmlfs login URL [--trust]" (OAuth device flow) and "zenmlfs logout". */
#ifndef ZENMLFS_CLI_LOGIN_H
#define ZENMLFS_CLI_LOGIN_H

/* argv[0] is "login" / "logout".  Return the process exit code. */
int login_main(int argc, char **argv);
int logout_main(int argc, char **argv);

#endif
