/* otlp_encode.h: spans and metrics to OTLP protobuf (protoc-c generated
 * code from proto/), and gzip. Pure: no I/O. */
#ifndef FERRY_OTLP_ENCODE_H
#define FERRY_OTLP_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "cbuf.h"
#include "telemetry.h"

struct otlp_kv {
    const char *key;
    const char *str;  /* a string value, or NULL for ival */
    int64_t ival;
};

struct otlp_resource {
    const struct otlp_kv *attrs;
    size_t n;
};

enum otlp_metric_type { OM_SUM, OM_GAUGE, OM_HISTOGRAM };

struct otlp_point {
    struct otlp_kv attrs[3];
    size_t nattrs;
    int64_t value;                /* OM_SUM, OM_GAUGE */
    const struct histogram *hist; /* OM_HISTOGRAM */
};

struct otlp_metric {
    const char *name, *description, *unit;
    enum otlp_metric_type type;
    bool monotonic;
    const struct otlp_point *points;
    size_t npoints;
};

/* What span encoding keeps between batches: packed attributes and packed
 * span templates, since most spans repeat the shape of earlier ones. */
struct otlp_span_cache;
struct otlp_span_cache *otlp_span_cache_new(void);
void otlp_span_cache_free(struct otlp_span_cache *c);
/* How many spans were emitted from a template and how many packed whole. */
void otlp_span_cache_counts(const struct otlp_span_cache *c, uint64_t *templated, uint64_t *whole);

/* The bytes spans' trace ids are templated with (for tests: a span whose
 * attribute holds them must still encode correctly). */
const uint8_t *otlp_template_sentinel(size_t *len);

/* An ExportTraceServiceRequest built as its spans end (see "batches" in
 * otlp_encode.c): begin takes mem's memory for it, add encodes one span
 * (the record is not needed afterwards), finish hands the request over
 * as body->data[offset, body->len), the offset returned. */
struct otlp_span_batch {
    struct cbuf buf;     /* room for the envelope (gap bytes), then the spans */
    size_t gap;
    size_t n;            /* spans added */
    struct cbuf env;     /* the packed resource, then the packed scope */
    size_t resource_len;
    size_t expect;       /* bytes of spans to reserve room for: the last batch's */
};
/* b starts zeroed; it may be reused after finish. */
void otlp_batch_begin(const struct otlp_resource *r, struct otlp_span_batch *b, struct cbuf *mem);
void otlp_batch_add(struct otlp_span_cache *c, struct otlp_span_batch *b, struct span *s);
size_t otlp_batch_finish(struct otlp_span_batch *b, struct cbuf *body);
/* An ExportMetricsServiceRequest, cumulative since start_ns. */
void otlp_encode_metrics(const struct otlp_resource *r, const struct otlp_metric *m, size_t n,
                         const double *bounds, size_t nbounds, uint64_t start_ns, uint64_t now_ns,
                         struct cbuf *out);
/* Replaces b's bytes with their gzip form. Returns 0 or -1. */
int otlp_gzip(struct cbuf *b) __attribute__((warn_unused_result));

#endif
