/* otlp_trace_encode.h: spans to OTLP protobuf (protoc-c generated code
 * from proto/), batch by batch, and the request bodies that carry them.
 * Pure: no I/O. */
#ifndef FERRY_OTLP_TRACE_ENCODE_H
#define FERRY_OTLP_TRACE_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "cbuf.h"
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

/* A request body, ready to send. Flat (head alone: metrics, gzip), or a
 * batch of spans: head holds the envelope, and the spans are written out
 * as the body is read (otlp_body_read), each from its template and the
 * few values that differ, straight into the HTTP client's buffer. See
 * "batches" in otlp_trace_encode.c. */
struct otlp_entry;
struct span_tpl;
struct otlp_body {
    struct cbuf head;        /* the body's first bytes */
    struct cbuf whole;       /* spans packed whole (framed), which entries point into */
    struct otlp_entry *e;    /* owns: the spans in order, e[0..ne) */
    size_t ne, cap;
    struct span_tpl **tpls;  /* owns the array and a reference on each template in it */
    size_t ntpls, ctpls;
    size_t len;              /* bytes of the whole body */
    bool gzip;               /* head is the body gzip-compressed */
    uint64_t id_seed[3];     /* random: the ids of entries that draw them (see "ids") */
};
/* Where a reader of a body is. Zeroed: at the start. */
struct otlp_cursor {
    size_t pos;              /* bytes read */
    size_t i;                /* the entry being read */
    size_t in;               /* bytes of it read */
};
void otlp_body_init(struct otlp_body *b);
/* A flat body of bytes (taken). */
void otlp_body_from(struct otlp_body *b, struct cbuf *bytes);
/* Writes up to cap of b's next bytes to dst; returns how many (0 at the
 * end). */
size_t otlp_body_read(const struct otlp_body *b, struct otlp_cursor *c, uint8_t *dst, size_t cap);
/* Places c at byte off of b; false past the end. */
bool otlp_body_seek(const struct otlp_body *b, struct otlp_cursor *c, size_t off);
/* Makes b flat: every byte in head. */
void otlp_body_flatten(struct otlp_body *b);
/* Makes b flat and gzip-compressed. Returns 0, or -1 (b is then flat
 * and uncompressed). */
int otlp_body_gzip(struct otlp_body *b) __attribute__((warn_unused_result));
/* Empties b, keeping its memory for another batch. */
void otlp_body_clear(struct otlp_body *b);
void otlp_body_free(struct otlp_body *b);

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
