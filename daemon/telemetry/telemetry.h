/* telemetry.h: spans and metrics, OpenTelemetry style, exported over
 * OTLP/HTTP (otlp_encode.c, otlp_http.c) or printed (console).
 *
 * The request path writes into preallocated span records and bumps
 * counters; when a request ends its span is added to the current batch
 * (mostly as its template and a few values) and the record is free
 * again. HTTP happens per batch, on the next loop iteration or a timer.
 * When the queue of ended spans is full (the collector is slow or down), new
 * spans are dropped and counted, so memory stays bounded. */
#ifndef FERRY_TELEMETRY_H
#define FERRY_TELEMETRY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "cbuf.h"
#include "histogram.h"
#include "trace_context.h"

#define SPAN_MAX_ATTRS 20
#define SPAN_ARENA 768

enum span_kind { SK_INTERNAL = 1, SK_SERVER = 2, SK_CLIENT = 3, SK_PRODUCER = 4, SK_CONSUMER = 5 };
enum span_attr_type { SA_STR, SA_INT, SA_BOOL };

struct span_attr {
    const char *key;      /* refers: a static string */
    uint8_t type;
    int64_t i;            /* SA_INT, SA_BOOL */
    uint16_t off, len;    /* SA_STR: bytes in the span's arena */
};

struct span_shape;

#define SPAN_NAME_MAX 96

/* What most spans never touch: a span that uses a shape keeps its
 * attributes there, and a status message or trace state is rare. Kept
 * apart from struct span so that the records every span touches are small
 * and dense (the pool runs to megabytes; cache and TLB misses on 2 KiB
 * records were most of what recording a span cost, measured with perf). */
struct span_data {
    char name[SPAN_NAME_MAX];
    struct span_attr attrs[SPAN_MAX_ATTRS];
    char arena[SPAN_ARENA];
    char status_msg[160];
    char trace_state[512];
};

/* One span, recorded in place. */
struct span {
    /* refers: when set, the span's name, kind and attributes are the
     * shape's, and its own are unused (see span_use_shape) */
    const struct span_shape *shape;
    struct span_data *d;  /* refers: this record's data, in the pool */
    const char *name;     /* refers: a static string, or d->name */
    struct trace_ctx ctx; /* its trace id, its own span id, its flags */
    uint8_t parent_id[8];
    bool has_parent;
    bool error;           /* then d->status_msg holds the status message */
    uint8_t kind;
    uint8_t nattrs;       /* in d->attrs, values in d->arena */
    uint16_t arena_used;
    uint16_t trace_state_len; /* 0: no trace state (d->trace_state is stale) */
    uint64_t start_ns, end_ns; /* Unix time */
};

enum sampler { SAMPLE_ON, SAMPLE_OFF, SAMPLE_RATIO, SAMPLE_PB_ON, SAMPLE_PB_OFF, SAMPLE_PB_RATIO };
enum exporter { EXP_OTLP, EXP_CONSOLE, EXP_NONE };

/* OTLP settings of one signal: OTEL_EXPORTER_OTLP_<SIGNAL>_*, else
 * OTEL_EXPORTER_OTLP_*. */
struct otlp_signal {
    char url[512];
    char headers[1024];       /* "k: v" lines joined by \n */
    char ca_file[512];
    bool gzip;
    uint64_t timeout_ms;      /* per export request */
};

struct telemetry_settings {
    bool disabled;
    enum sampler sampler;
    double ratio;
    enum exporter traces, metrics;
    struct otlp_signal traces_otlp, metrics_otlp;
    uint64_t bsp_delay_ms, bsp_export_timeout_ms;
    size_t bsp_queue, bsp_batch;
    uint64_t metric_interval_ms, metric_timeout_ms;
};

struct telemetry;
struct server;
struct op;

/* Reads the OTEL_* environment (and the daemon's config) into t. Returns
 * 0, or -1 with err set. Does not touch the loop. */
int telemetry_init(struct telemetry **t, struct server *s, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Starts the timers. */
void telemetry_start(struct telemetry *t);
/* Sends what is queued and the last metrics, each tried once, waits for
 * them at most STOP_FLUSH_MS (telemetry.c), then closes every handle. */
void telemetry_stop(struct telemetry *t);
void telemetry_free(struct telemetry *t);
const struct telemetry_settings *telemetry_settings(const struct telemetry *t);

/* Starts a span named name (a string that outlives the span: static, or
 * an op's name) at mono_ns (a uv_hrtime() reading), continuing the W3C
 * traceparent/tracestate when they are valid. Returns NULL when the
 * sampler says no, telemetry is off, or the queue is full (then it is
 * counted as dropped). */
struct span *telemetry_span_start(struct telemetry *t, const char *tp, size_t tp_len, const char *ts,
                                  size_t ts_len, enum span_kind kind, const char *name, uint64_t mono_ns);
/* Ends s at mono_ns and hands it to the exporter (s is freed: do not use
 * it afterwards). error_type is NULL on
 * success, else the ferry error code's name (or "abandoned"), recorded as
 * error.type with an ERROR status carrying message. */
void telemetry_span_end(struct telemetry *t, struct span *s, uint64_t mono_ns, const char *error_type,
                        const char *message);

/* Whether a request's root span may be left unrecorded until needed
 * (spans go to an OTLP exporter, which telemetry_span_shaped feeds). */
bool telemetry_on_demand(const struct telemetry *t);
/* The record of a root SERVER span left on demand, started at mono_ns:
 * as telemetry_span_start without a parent, and also while telemetry is
 * stopping, since its request was admitted to tracing before. */
struct span *telemetry_span_on_demand(struct telemetry *t, const char *name, uint64_t mono_ns);
/* A root span that was never recorded: shape's name, kind and
 * attributes, from start to end (uv_hrtime() readings), sampled and
 * added to the current batch now, with its ids. */
void telemetry_span_shaped(struct telemetry *t, const struct span_shape *shape, uint64_t start_mono,
                           uint64_t end_mono);

void span_set_name(struct span *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Names s with the first n bytes of name (copied). */
void span_copy_name(struct span *s, const char *name, size_t n);
/* Attributes: key is a static string, set at most once per span. String
 * values are copied (up to the span's arena). */
void span_attr_str(struct span *s, const char *key, const char *v, size_t n);
void span_attr_cstr(struct span *s, const char *key, const char *v);
void span_attr_int(struct span *s, const char *key, int64_t v);
void span_attr_bool(struct span *s, const char *key, bool v);
/* Shapes. Many spans share their name, kind and attributes (a Redis GET
 * to one server, say); recording a shape by reference instead of copying
 * the attributes, and packing it once for export, is most of what makes
 * tracing cheap. telemetry_shape() interns what s has recorded so far and
 * returns it (NULL when the table of shapes is full); telemetry owns the
 * shape until telemetry_free(). span_use_shape() gives s that shape;
 * setting a name or an attribute on s afterwards first copies the shape's
 * into s (span_materialize), so an error can still be added. */
const struct span_shape *telemetry_shape(struct telemetry *t, const struct span *s);
void span_use_shape(struct span *s, const struct span_shape *shape);
void span_materialize(struct span *s);

/* The traceparent naming s as the parent, for propagation. */
void span_traceparent(const struct span *s, char out[TRACEPARENT_LEN + 1]);

/* Metrics recorded at the end of every request. */
void telemetry_request_done(struct telemetry *t, struct op *op, uint64_t duration_ns);
void telemetry_db_operation(struct telemetry *t, const char *system, const char *operation, uint64_t duration_ns);


/* Counters for stats: spans waiting for export (ended, in the queue or
 * in a POST not yet answered), spans exported (the collector accepted
 * them, or the console exporter printed them), spans dropped (queue
 * full, or their export failed for good), and failed exports. */
struct telemetry_counts {
    uint64_t spans_queued, spans_exported, spans_dropped, export_failures;
};
void telemetry_counts(const struct telemetry *t, struct telemetry_counts *c);

#endif
