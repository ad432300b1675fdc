/* cli_cmds.c: the table of the `ferry` command's pattern commands. */
#include <stddef.h>

#include "cli_cmds.h"

const struct cli_cmd *const cli_cmds[] = {
    &cli_stream_cmd,
    &cli_lock_cmd,
    &cli_ratelimit_cmd,
    &cli_cache_cmd,
    &cli_subscribe_cmd,
};

const size_t cli_ncmds = sizeof(cli_cmds) / sizeof(cli_cmds[0]);
