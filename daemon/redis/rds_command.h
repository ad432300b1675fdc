/* rds_command.h: writing a command in RESP, straight into an output
 * buffer. Pure, for unit tests. */
#ifndef FERRY_RDS_COMMAND_H
#define FERRY_RDS_COMMAND_H

#include <stddef.h>

#include "cbuf.h"

/* Appends *argc\r\n and $len\r\n<arg>\r\n per argument to out. */
void rds_command_format(struct cbuf *out, int argc, const char *const *argv, const size_t *lens);

#endif
