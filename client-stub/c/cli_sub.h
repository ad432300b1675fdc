/* cli_sub.h: the `ferry` command's subscriptions (consume, subscribe,
 * stream consume): open one, then read its pushes. */
#ifndef FERRY_CLI_SUB_H
#define FERRY_CLI_SUB_H

#include <stdint.h>
#include <cbor.h>

#include "ferry.h"

/* Sends op with args (kept by the caller) and waits for its answer:
 * ferryd answers a subscription before any of its pushes. Returns 0 with
 * *sub set to the subscription's id, or an exit status, the error
 * printed. */
int cli_sub_open(ferry_t *f, const char *op, const cbor_item_t *args, uint32_t deadline, int wait_ms,
                 uint64_t *sub);
/* Waits up to wait_ms (-1: without limit) for the next push of sub, of
 * any kind, which goes to *out (the caller frees it). Returns 0, 3 when
 * the wait passed (nothing printed: the caller says what it waited for),
 * or 2 when the connection failed (printed). */
int cli_sub_next(ferry_t *f, uint64_t sub, int wait_ms, ferry_msg_t **out);

#endif
