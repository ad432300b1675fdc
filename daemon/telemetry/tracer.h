/* tracer.h: sampling, the pool of span records, and batching ended spans
 * for export (OTLP through otlp_http.c, or printed on stderr).
 *
 * The request path writes into preallocated span records; when a span
 * ends it is added to the current batch (mostly as its template and a few
 * values) and the record is free again. HTTP happens per batch, on the
 * next loop iteration or a timer. When the queue of ended spans is full
 * (the collector is slow or down), new spans are dropped and counted, so
 * memory stays bounded. */
#ifndef FERRY_TRACER_H
#define FERRY_TRACER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "otlp_trace_encode.h"
#include "span.h"
#include "tel_settings.h"

struct otlp_http;

struct tracer {
    const struct tel_settings *set;     /* refers: telemetry's */
    struct otlp_resource resource;      /* refers to telemetry's resource */
    struct otlp_http *http;             /* refers; NULL unless traces go to OTLP */

    struct span *pool;                  /* owns: set->bsp_queue records */
    struct span_data *pool_data;        /* owns: their data, pool[i].d == &pool_data[i] */
    size_t pool_fresh;                  /* records [pool_fresh, bsp_queue) never used yet */
    /* Arrays of pointers rather than lists through the records, so that
     * queueing and releasing a span do not touch it again. */
    struct span **free_spans;           /* owns: records used and given back, a stack */
    size_t nfree;
    /* Ended spans are added at once to the current batch (see "batches"
     * in otlp_trace_encode.c) and their records given back; a full batch
     * is sealed, and sent on the next loop iteration. */
    struct otlp_span_batch cur;         /* owns */
    bool cur_open;
    struct sealed_batch {
        struct otlp_body body;          /* owns */
        size_t n;
    } *sealed;                          /* owns: bsp_queue / bsp_batch + 1 entries */
    size_t nsealed;
    size_t queued;                      /* ended spans not yet handed to the exporter, < bsp_queue */
    uint64_t spans_dropped, export_failures, spans_exported;
    uint64_t exporting;                 /* spans handed to the exporter, not yet answered */
    /* Unix time minus uv_hrtime(): spans are timed with the monotonic
     * readings requests take anyway, anchored to the wall clock and
     * re-read with every export so the wall clock's adjustments reach
     * the spans. */
    uint64_t mono_to_unix;

    struct span_shapes shapes;          /* owns */
    struct otlp_span_cache *span_cache; /* owns */
    uv_timer_t bsp_timer;
    bool started, stopping;
};

void tracer_init(struct tracer *tr, const struct tel_settings *set, const struct otlp_resource *resource);
/* Arms the schedule delay's timer; http is the exporter, or NULL. */
void tracer_start(struct tracer *tr, uv_loop_t *loop, struct otlp_http *http);
/* No new spans from here on (but those admitted before, see
 * tracer_span_start's late); what has ended is handed to the exporter. */
void tracer_stop(struct tracer *tr);
/* Hands what ended since tracer_stop to the exporter. */
void tracer_flush(struct tracer *tr);
/* The exporter is gone: spans ending from now on are dropped. */
void tracer_detach(struct tracer *tr);
void tracer_close(struct tracer *tr);
void tracer_free(struct tracer *tr);
/* The exporter's answer to a POST of items spans. */
void tracer_export_done(struct tracer *tr, bool ok, size_t items);

/* Starts a span named name (a string that outlives the span) at mono_ns
 * (a uv_hrtime() reading), continuing the W3C traceparent/tracestate when
 * they are valid. NULL when the sampler says no, tracing is off, or the
 * queue is full (then it is counted as dropped). late: the span of a
 * request admitted to tracing before stopping began, recorded only now. */
struct span *tracer_span_start(struct tracer *tr, const char *tp, size_t tp_len, const char *ts, size_t ts_len,
                               enum span_kind kind, const char *name, uint64_t mono_ns, bool late);
/* Ends s at mono_ns and adds it to the current batch; s is free again. */
void tracer_span_end(struct tracer *tr, struct span *s, uint64_t mono_ns);
/* Whether a root span may be left unrecorded until needed: spans go to
 * an OTLP exporter, which tracer_span_shaped feeds. */
static inline bool tracer_on_demand(const struct tracer *tr)
{
    return !tr->set->disabled && tr->set->traces == EXP_OTLP && !tr->stopping;
}
/* A root span that was never recorded: shape's name, kind and
 * attributes, from start to end (uv_hrtime() readings), sampled and
 * added to the current batch now, with its ids. */
void tracer_span_shaped(struct tracer *tr, const struct span_shape *shape, uint64_t start_mono, uint64_t end_mono);

#endif
