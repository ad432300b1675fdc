/* otlp_trace_encode.h: spans to OTLP protobuf (protoc-c generated code
 * from proto/), batch by batch, and the request bodies that carry them.
 * Pure: no I/O. */
#ifndef FERRY_OTLP_TRACE_ENCODE_H
#define FERRY_OTLP_TRACE_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "cbuf.h"
#include "otlp_body.h"
#include "otlp_pb.h"
#include "span.h"

/* What span encoding keeps between batches: packed attributes and packed
 * span templates, since most spans repeat the shape of earlier ones. A
 * template lives while the cache or a body refers to it, so the cache
 * may be freed before bodies built with it. */
struct otlp_span_cache;
struct otlp_span_cache *otlp_span_cache_new(void);
void otlp_span_cache_free(struct otlp_span_cache *c);
/* How many spans were emitted from a template and how many packed whole. */
void otlp_span_cache_counts(const struct otlp_span_cache *c, uint64_t *templated, uint64_t *whole);

/* The bytes spans' trace ids are templated with (for tests: a span whose
 * attribute holds them must still encode correctly). */
const uint8_t *otlp_template_sentinel(size_t *len);

/* An ExportTraceServiceRequest built as its spans end: begin takes mem's
 * memory (an emptied body) for it, add records one span (the record is
 * not needed afterwards), finish hands the request over as body. */
struct otlp_span_batch {
    struct otlp_body body;   /* the spans so far; head is packed by finish */
    size_t spans_len;        /* bytes of the spans, framed (body.ne of them) */
    uint64_t id;             /* 0 until the first template is used */
    /* refers: the shape of the last root span added and its template,
     * which the body holds; NULL after begin */
    const struct span_shape *last_shape;
    struct span_tpl *last_t;
    struct cbuf env;         /* the packed resource, then the packed scope */
    size_t resource_len;
};
/* b starts zeroed; after finish it may begin again, with the same
 * resource (packed once, kept in b). */
void otlp_batch_begin(const struct otlp_resource *r, struct otlp_span_batch *b, struct otlp_body *mem);
void otlp_batch_add(struct otlp_span_cache *c, struct otlp_span_batch *b, struct span *s);
/* Adds a root span of shape with these times (Unix ns) from the shape's
 * template: ids is its trace id and span id (16 + 8 bytes), or NULL for
 * new random ones, drawn as the body is written out (the same on every
 * reading of it). False, adding nothing, when the shape
 * has no template yet (then add a record that uses the shape). */
bool otlp_batch_add_shaped(struct otlp_span_cache *c, struct otlp_span_batch *b, const struct span_shape *shape,
                           const uint8_t *ids, uint64_t start, uint64_t end);
void otlp_batch_finish(struct otlp_span_batch *b, struct otlp_body *body);
void otlp_batch_free(struct otlp_span_batch *b);
#endif
