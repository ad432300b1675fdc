/* telemetry.h: spans and metrics, OpenTelemetry style, exported over
 * OTLP/HTTP or printed (console). This is the daemon-facing top of the
 * telemetry layers:
 *
 *   reqtrace.c          a request's trace, beside the request path
 *   telemetry.c         lifecycle, timers, standalone spans (this header)
 *   tracer.c metrics.c  spans sampled and batched; metrics collected
 *   otlp_http.c         POSTs driven by the loop
 *   tel_settings.c      the OTEL_* environment, the resource
 *   otlp_trace_encode.c otlp_body.c otlp_metrics.c otlp_pb.c   no I/O
 *   span.c trace_context.c                          the span model, ids
 *
 * A file includes only those below it. What the metrics read from the
 * daemon comes through struct metrics_source, given at init. */
#ifndef FERRY_TELEMETRY_H
#define FERRY_TELEMETRY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "metrics.h"
#include "span.h"
#include "tel_settings.h"
#include "tracer.h"

/* Its parts are embedded so that reqtrace.c, on every request, reaches
 * them without a call; everything else treats it as opaque. */
struct telemetry {
    struct tel_settings set;
    struct tel_resource resource;       /* owns */
    struct tracer tracer;               /* owns */
    struct metrics metrics;             /* owns */
    uv_loop_t *loop;                    /* refers; from telemetry_start */
    uv_timer_t metric_timer, stop_timer;
    struct otlp_http *http;             /* owns; NULL unless an exporter is otlp */
    uint64_t metric_failures;           /* metrics exports given up */
    bool started, stopping, closed;
    uint64_t stop_deadline;             /* uv_now() ms: stop waiting for exports */
    struct reqtrace_slot *slots;        /* owns: reqtrace.c's shape cache; NULL until used */
};

/* Reads the OTEL_* environment; duration_buckets is the configuration's.
 * src is copied. Returns 0, or -1 with err set. Does not touch the loop. */
int telemetry_init(struct telemetry **t, const struct metrics_source *src, const char *duration_buckets, char *err,
                   size_t errlen) __attribute__((warn_unused_result));
/* Starts the timers and the exporter on loop. */
void telemetry_start(struct telemetry *t, uv_loop_t *loop);
/* Sends what is queued and the last metrics, each tried once, waits for
 * them at most STOP_FLUSH_MS (telemetry.c), then closes every handle. */
void telemetry_stop(struct telemetry *t);
void telemetry_free(struct telemetry *t);
const struct tel_settings *telemetry_settings(const struct telemetry *t);

/* A span of its own, beside any request (a delivered message's CONSUMER
 * span): named name (a string that outlives the span), started at mono_ns
 * (a uv_hrtime() reading), continuing the W3C traceparent/tracestate when
 * they are valid. NULL when the sampler says no, telemetry is off, or
 * the queue is full (then it is counted as dropped). Set its name and
 * attributes with span.h, and give it to telemetry_span_end. */
struct span *telemetry_span_start(struct telemetry *t, const char *tp, size_t tp_len, const char *ts,
                                  size_t ts_len, enum span_kind kind, const char *name, uint64_t mono_ns);
/* Ends s at mono_ns and hands it to the exporter (s is freed: do not use
 * it afterwards). error_type is NULL on success, else recorded as
 * error.type with an ERROR status carrying message. */
void telemetry_span_end(struct telemetry *t, struct span *s, uint64_t mono_ns, const char *error_type,
                        const char *message);

/* Counters for stats: spans waiting for export (ended, in the queue or
 * in a POST not yet answered), spans exported (the collector accepted
 * them, or the console exporter printed them), spans dropped (queue
 * full, or their export failed for good), and failed exports. */
struct telemetry_counts {
    uint64_t spans_queued, spans_exported, spans_dropped, export_failures;
};
void telemetry_counts(const struct telemetry *t, struct telemetry_counts *c);

#endif
