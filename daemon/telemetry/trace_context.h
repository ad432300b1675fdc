/* trace_context.h: W3C Trace Context (traceparent) and span ids. Pure. */
#ifndef FERRY_TRACE_CONTEXT_H
#define FERRY_TRACE_CONTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;       /* bit 0: sampled */
};

#define TRACEPARENT_LEN 55

/* Parses "00-<32 hex>-<16 hex>-<2 hex>". Returns false for anything the
 * spec says to treat as absent: wrong lengths, upper-case hex, all-zero
 * ids, version ff. Later versions are read by their first four fields, as
 * the spec asks. */
bool trace_ctx_parse(const char *s, size_t len, struct trace_ctx *out);
/* Writes the 55 characters and a NUL into out (56 bytes). */
void trace_ctx_format(const struct trace_ctx *c, char *out);
void hex_encode(const uint8_t *p, size_t n, char *out);

/* Fills p with random bytes for ids; never all zero when n is 8 or 16. */
void trace_random_id(uint8_t *p, size_t n);
/* A new span's ids at once: a trace id (16 bytes, unless trace_id is
 * NULL) and a span id (8 bytes), neither all zero. */
void trace_new_ids(uint8_t *trace_id, uint8_t *span_id);

#endif
