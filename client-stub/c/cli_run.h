/* cli_run.h: runs a command for `ferry serve`, feeding it a request body on
 * stdin and collecting its stdout as the reply. */
#ifndef FERRY_CLI_RUN_H
#define FERRY_CLI_RUN_H

#include <stddef.h>
#include <stdint.h>

/* Runs argv (argv[0] looked up in PATH) with in on its stdin and its
 * stdout collected into *out (malloc'd, *outlen bytes; at most max bytes
 * are kept, the rest is read and dropped); its stderr is ours. *status
 * gets its exit status, or 128 + the signal that killed it. Returns 0, or
 * -1 with errno set when it could not be started. */
int cli_run_command(char *const *argv, const uint8_t *in, size_t inlen, size_t max, uint8_t **out,
                    size_t *outlen, int *status);

#endif
