/* SPDX-License-Identifier: MIT */
/*
 * "zenmlfs exec [OPTION...] [--] COMMAND [ARG...]": runs COMMAND so that
 * the ZenML SDK and CLI in it use the mount's current token on every
 * request, with no secret in COMMAND's environment, argv or files.
 */
#ifndef ZENMLFS_EXEC_H
#define ZENMLFS_EXEC_H

/*
 * argv[0] is "exec".  Returns COMMAND's exit status (a COMMAND killed by
 * a signal kills exec with the same signal), or 125 when exec itself
 * fails, 126 when COMMAND cannot be run, 127 when it is not found.
 * Call it before anything else in main(): it sets up its own process.
 */
int exec_main(int argc, char **argv);

#endif
