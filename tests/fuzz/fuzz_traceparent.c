/* Fuzz target: W3C traceparent headers from clients and from messages
 * (telemetry/trace_context.c). Properties: no crash or overread, and a
 * header that parses formats back to a header that parses to the same
 * ids and flags. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trace_context.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1);
    memcpy(s, data, size);
    struct trace_ctx a, b;
    if (trace_ctx_parse(s, size, &a)) {
        char out[TRACEPARENT_LEN + 1];
        trace_ctx_format(&a, out);
        assert(strlen(out) == TRACEPARENT_LEN);
        assert(trace_ctx_parse(out, TRACEPARENT_LEN, &b));
        assert(memcmp(a.trace_id, b.trace_id, 16) == 0 && memcmp(a.span_id, b.span_id, 8) == 0);
        assert(a.flags == b.flags);
    }
    free(s);
    return 0;
}
