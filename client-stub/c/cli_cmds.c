/* cli_cmds.c: the table of the `ferry` command's pattern commands. */
#include <stddef.h>

#include "cli_cmds.h"

const struct cli_cmd *const cli_cmds[] = {
    NULL,
};

const size_t cli_ncmds = 0;
