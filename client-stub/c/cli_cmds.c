/* cli_cmds.c: the table of the `ferry` command's pattern commands. */
#include <stddef.h>

#include "cli_cmds.h"

extern const struct cli_cmd cli_subscribe_cmd;

const struct cli_cmd *const cli_cmds[] = {
    &cli_subscribe_cmd,
};

const size_t cli_ncmds = sizeof(cli_cmds) / sizeof(cli_cmds[0]);
