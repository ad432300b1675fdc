/* rds_command.h: the 'redis' op's command: read from the request's args
 * in place, and written in RESP straight into an output buffer. Pure,
 * for unit tests and fuzzing. */
#ifndef FERRY_RDS_COMMAND_H
#define FERRY_RDS_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#include "cbuf.h"

#define RDS_COMMAND_SMALL 16

/* Reads the args of a 'redis' request (an array of byte or text strings,
 * len bytes of CBOR at args, NULL when absent) into argv and lens, which
 * point into args: small and small_lens (RDS_COMMAND_SMALL entries) when
 * they fit, else new arrays the caller frees (*argv != small). Returns
 * NULL, or what is wrong. */
const char *rds_command_parse(const uint8_t *args, size_t len, int *argc, const char ***argv, size_t **lens,
                              const char **small, size_t *small_lens);

/* Appends *argc\r\n and $len\r\n<arg>\r\n per argument to out. */
void rds_command_format(struct cbuf *out, int argc, const char *const *argv, const size_t *lens);

#endif
