/* cli_cmds.h: the `ferry` command's pattern commands (subscribe, stream,
 * lock, cache, ratelimit ...), one file each (cli_<name>.c), listed in
 * cli_cmds.c. ferry_cli.c parses the global options and hands each of
 * these its own words. */
#ifndef FERRY_CLI_CMDS_H
#define FERRY_CLI_CMDS_H

#include <stddef.h>
#include <stdint.h>

#include "ferry.h"

/* What the global options set. */
struct cli_ctx {
    uint32_t deadline; /* --timeout: each request's deadline, ms */
    int wait_ms;       /* how long to wait for an answer (a little past deadline) */
    int verbose;       /* -v */
};

struct cli_cmd {
    const char *name;  /* the command's first word */
    const char *usage; /* its lines of --help, each ending in \n */
    /* Runs it: words are what followed the name (global options taken
     * out; "--" and everything after it kept as they are). Returns the
     * exit status: 0, 1 for an error answer, 2 when the daemon cannot be
     * reached, 3 when nothing came in time, 64 for bad usage. */
    int (*run)(ferry_t *f, int nwords, char **words, const struct cli_ctx *ctx);
};

extern const struct cli_cmd *const cli_cmds[];
extern const size_t cli_ncmds;

extern const struct cli_cmd cli_lock_cmd;
extern const struct cli_cmd cli_stream_cmd;
extern const struct cli_cmd cli_ratelimit_cmd;
extern const struct cli_cmd cli_cache_cmd;
extern const struct cli_cmd cli_subscribe_cmd;

#endif
