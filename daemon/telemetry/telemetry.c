/* telemetry.c: see telemetry.h. It owns the parts (settings, resource,
 * tracer, metrics, the HTTP exporter) and the timers that drive them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "log.h"
#include "otlp_http.h"
#include "telemetry.h"

/* How long the last exports are waited for at shutdown. They are tried
 * once (otlp_http_last_try): a collector that is not there refuses at
 * once, and this bounds one that takes the POST and never answers, so
 * that ferryd exits within drain_timeout_ms and this after a SIGTERM. */
#define STOP_FLUSH_MS 3000

int telemetry_init(struct telemetry **out, const struct metrics_source *src, const char *duration_buckets, char *err,
                   size_t errlen)
{
    struct telemetry *t = xcalloc(1, sizeof(*t));
    tel_settings_read(&t->set);
    tel_settings_resource(&t->resource);
    struct otlp_resource r = {t->resource.kv, t->resource.n};
    if (metrics_init(&t->metrics, src, &t->set, &r, duration_buckets, err, errlen) != 0) {
        tel_settings_resource_free(&t->resource);
        free(t);
        return -1;
    }
    tracer_init(&t->tracer, &t->set, &r);
    *out = t;
    return 0;
}

const struct tel_settings *telemetry_settings(const struct telemetry *t) { return &t->set; }

void telemetry_counts(const struct telemetry *t, struct telemetry_counts *c)
{
    const struct tracer *tr = &t->tracer;
    c->spans_queued = tr->queued + tr->exporting;
    c->spans_exported = tr->spans_exported;
    c->spans_dropped = tr->spans_dropped;
    c->export_failures = tr->export_failures + t->metric_failures;
}

struct span *telemetry_span_start(struct telemetry *t, const char *tp, size_t tp_len, const char *ts,
                                  size_t ts_len, enum span_kind kind, const char *name, uint64_t mono_ns)
{
    if (!t)
        return NULL;
    return tracer_span_start(&t->tracer, tp, tp_len, ts, ts_len, kind, name, mono_ns, false);
}

void telemetry_span_end(struct telemetry *t, struct span *s, uint64_t mono_ns, const char *error_type,
                        const char *message)
{
    if (error_type)
        span_set_error(s, error_type, message);
    tracer_span_end(&t->tracer, s, mono_ns);
}

static void on_http_done(void *arg, bool ok, size_t items, bool traces)
{
    struct telemetry *t = arg;
    if (traces)
        tracer_export_done(&t->tracer, ok, items);
    else if (!ok)
        t->metric_failures++;
}

static void export_metrics(struct telemetry *t)
{
    const struct tracer *tr = &t->tracer;
    metrics_export(&t->metrics, t->http, tr->spans_dropped, tr->export_failures + t->metric_failures);
}

static void on_metric_timer(uv_timer_t *h) { export_metrics(h->data); }

/* ---- lifecycle ---- */

void telemetry_start(struct telemetry *t, uv_loop_t *loop)
{
    t->loop = loop;
    uv_timer_init(loop, &t->metric_timer);
    uv_timer_init(loop, &t->stop_timer);
    t->metric_timer.data = t->stop_timer.data = t;
    t->started = true;
    if (t->set.disabled) {
        tracer_start(&t->tracer, loop, NULL);
        log_info("telemetry: off (OTEL_SDK_DISABLED)");
        return;
    }
    if (t->set.traces == EXP_OTLP || t->set.metrics == EXP_OTLP) {
        t->http = otlp_http_new(loop, &t->set, on_http_done, t);
        if (!t->http) { /* no libcurl: keep serving, without export */
            if (t->set.traces == EXP_OTLP)
                t->set.traces = EXP_NONE;
            if (t->set.metrics == EXP_OTLP)
                t->set.metrics = EXP_NONE;
        }
    }
    tracer_start(&t->tracer, loop, t->set.traces == EXP_OTLP ? t->http : NULL);
    if (t->set.metrics != EXP_NONE)
        uv_timer_start(&t->metric_timer, on_metric_timer, t->set.metric_interval_ms, t->set.metric_interval_ms);
    /* A periodic timer must not keep a draining daemon alive. */
    uv_unref((uv_handle_t *)&t->metric_timer);
    log_info("telemetry: traces %s%s%s, metrics %s%s%s every %llu ms",
             t->set.traces == EXP_OTLP ? "otlp " : t->set.traces == EXP_CONSOLE ? "console" : "none",
             t->set.traces == EXP_OTLP ? t->set.traces_otlp.url : "", t->set.traces_otlp.gzip ? " (gzip)" : "",
             t->set.metrics == EXP_OTLP ? "otlp " : t->set.metrics == EXP_CONSOLE ? "console" : "none",
             t->set.metrics == EXP_OTLP ? t->set.metrics_otlp.url : "", t->set.metrics_otlp.gzip ? " (gzip)" : "",
             (unsigned long long)t->set.metric_interval_ms);
}

static void http_closed(void *arg)
{
    struct telemetry *t = arg;
    otlp_http_free(t->http);
    t->http = NULL;
    tracer_detach(&t->tracer);
}

static void close_all(struct telemetry *t)
{
    if (t->closed)
        return;
    t->closed = true;
    if (t->http)
        otlp_http_close(t->http, http_closed, t);
    tracer_close(&t->tracer);
    uv_close((uv_handle_t *)&t->metric_timer, NULL);
    uv_close((uv_handle_t *)&t->stop_timer, NULL);
}

static void on_stop_poll(uv_timer_t *h)
{
    struct telemetry *t = h->data;
    tracer_flush(&t->tracer);
    if (!t->http || otlp_http_pending(t->http) == 0) {
        close_all(t);
    } else if (uv_now(t->loop) >= t->stop_deadline) {
        log_warn("telemetry: gave up waiting for %zu exports after %d ms", otlp_http_pending(t->http),
                 STOP_FLUSH_MS);
        close_all(t);
    }
}

void telemetry_stop(struct telemetry *t)
{
    if (!t->started || t->stopping)
        return;
    t->stopping = true;
    uv_timer_stop(&t->metric_timer);
    if (t->http)
        otlp_http_last_try(t->http);
    tracer_stop(&t->tracer);
    if (!t->set.disabled)
        export_metrics(t);
    t->stop_deadline = uv_now(t->loop) + STOP_FLUSH_MS;
    uv_timer_start(&t->stop_timer, on_stop_poll, 0, 20);
}

void telemetry_free(struct telemetry *t)
{
    if (!t)
        return;
    tracer_free(&t->tracer);
    metrics_free(&t->metrics);
    tel_settings_resource_free(&t->resource);
    free(t->slots);
    free(t);
}
