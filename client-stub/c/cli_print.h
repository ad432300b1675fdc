/* cli_print.h: how the `ferry` command prints replies and errors. */
#ifndef FERRY_CLI_PRINT_H
#define FERRY_CLI_PRINT_H

#include <cbor.h>

#include "ferry.h"

/* Prints a value the way redis-cli's raw mode does: a string as its
 * bytes and a newline, an array one element per line, nil as "". */
void cli_print_raw(const cbor_item_t *it);
/* Prints a nested map as "a.b.c: value" lines. */
void cli_print_flat(const char *prefix, const cbor_item_t *it);
/* 0 when m is a result; else prints the error and returns the exit
 * status: 2 for a connection failure (rc), 1 for an error answer. */
int cli_check_result(ferry_msg_t *m, int rc);
/* The value of text key in map m, or NULL (also when m is no map). */
const cbor_item_t *cli_map_get(const cbor_item_t *m, const char *key);
/* map[key] = value (moved in). */
void cli_map_put(cbor_item_t *map, const char *key, cbor_item_t *value);

#endif
