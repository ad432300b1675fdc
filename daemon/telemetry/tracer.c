/* tracer.c: see tracer.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cbuf.h"
#include "log.h"
#include "otlp_http.h"
#include "tracer.h"

static void on_bsp_timer(uv_timer_t *h);
static bool print_span(struct span *s);
static void release(struct tracer *t, struct span *s);
static void seal(struct tracer *t);

static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool sample_root(const struct tracer *t, const uint8_t *trace_id)
{
    switch (t->set->sampler) {
    case SAMPLE_ON:
    case SAMPLE_PB_ON:
        return true;
    case SAMPLE_OFF:
    case SAMPLE_PB_OFF:
        return false;
    case SAMPLE_RATIO:
    case SAMPLE_PB_RATIO: {
        /* TraceIdRatioBased: compare the low 8 bytes of the trace id with
         * ratio * 2^64, so every SDK agrees on the same trace. */
        uint64_t x = 0;
        for (int i = 8; i < 16; i++)
            x = x << 8 | trace_id[i];
        return (double)x < t->set->ratio * 18446744073709551616.0;
    }
    }
    return true;
}

struct span *tracer_span_start(struct tracer *t, const char *tp, size_t tp_len, const char *ts, size_t ts_len,
                               enum span_kind kind, const char *name, uint64_t mono_ns, bool late)
{
    if (t->set->disabled || t->set->traces == EXP_NONE || (t->stopping && !late))
        return NULL;
    struct trace_ctx parent;
    bool has_parent = tp && trace_ctx_parse(tp, tp_len, &parent);
    bool sampled;
    uint8_t trace_id[16], span_id[8];
    if (has_parent) {
        memcpy(trace_id, parent.trace_id, 16);
        bool parent_sampled = parent.flags & 1;
        if (t->set->sampler == SAMPLE_ON || t->set->sampler == SAMPLE_OFF || t->set->sampler == SAMPLE_RATIO)
            sampled = sample_root(t, trace_id);
        else
            sampled = parent_sampled;
    } else {
        trace_new_ids(trace_id, span_id);
        sampled = sample_root(t, trace_id);
    }
    if (!sampled)
        return NULL;
    if (t->queued >= t->set->bsp_queue) { /* the specification's full queue: new spans are dropped */
        t->spans_dropped++;
        return NULL;
    }
    struct span *s;
    if (t->nfree) {
        s = t->free_spans[--t->nfree];
        /* The pool is megabytes: fetch the next request's record now, so
         * that writing it then does not wait on memory. */
        if (t->nfree) {
            const char *next = (const char *)t->free_spans[t->nfree - 1];
            __builtin_prefetch(next, 1);
            __builtin_prefetch(next + 64, 1);
        }
    } else if (t->pool_fresh < t->set->bsp_queue) {
        s = &t->pool[t->pool_fresh];
        s->d = &t->pool_data[t->pool_fresh++];
    } else {
        t->spans_dropped++;
        return NULL;
    }
    s->shape = NULL;
    if (has_parent)
        trace_new_ids(NULL, span_id);
    memcpy(s->ctx.trace_id, trace_id, 16);
    memcpy(s->ctx.span_id, span_id, 8);
    s->ctx.flags = 1;
    s->has_parent = has_parent;
    if (has_parent)
        memcpy(s->parent_id, parent.span_id, 8);
    s->trace_state_len = 0;
    if (has_parent && ts && ts_len && ts_len < sizeof(s->d->trace_state)) {
        memcpy(s->d->trace_state, ts, ts_len);
        s->d->trace_state[ts_len] = '\0';
        s->trace_state_len = (uint16_t)ts_len;
    }
    s->kind = (uint8_t)kind;
    s->error = false;
    s->nattrs = 0;
    s->arena_used = 0;
    s->name = name;
    s->start_ns = mono_ns + t->mono_to_unix;
    return s;
}

/* Begins the current batch unless one is open. */
static void open_batch(struct tracer *t)
{
    if (t->cur_open)
        return;
    struct otlp_body mem;
    otlp_http_buffer(t->http, &mem);
    if (!t->span_cache)
        t->span_cache = otlp_span_cache_new();
    otlp_batch_begin(&t->resource, &t->cur, &mem);
    t->cur_open = true;
}

/* Counts a span added to the current batch. A full batch goes out on the
 * next loop iteration, not inside this request's completion. */
static void added(struct tracer *t)
{
    t->queued++;
    if (t->cur.body.ne == t->set->bsp_batch) {
        seal(t);
        if (t->started && !t->stopping && t->nsealed == 1)
            uv_timer_start(&t->bsp_timer, on_bsp_timer, 0, 0);
    }
}

void tracer_span_end(struct tracer *t, struct span *s, uint64_t mono_ns)
{
    s->end_ns = mono_ns + t->mono_to_unix;
    if (s->end_ns < s->start_ns) /* the wall clock was stepped back between the two */
        s->end_ns = s->start_ns;
    if (t->set->traces == EXP_CONSOLE) {
        /* Counted as the OTLP exporter counts, so stats tells the same. */
        if (print_span(s)) {
            t->spans_exported++;
        } else {
            t->export_failures++;
            t->spans_dropped++;
        }
    } else if (!t->http || t->queued >= t->set->bsp_queue) {
        /* No exporter (yet, or any more), or the queue filled while this
         * request ran: tracer_span_start checks it too, but requests
         * started before then end after. */
        t->spans_dropped++;
    } else {
        open_batch(t);
        otlp_batch_add(t->span_cache, &t->cur, s);
        added(t);
    }
    release(t, s);
}

/* The shape has no template (yet): a record on the stack, as
 * tracer_span_start would have made. Apart, so that the common case's
 * frame holds no record. */
static __attribute__((noinline)) void add_shaped_record(struct tracer *t, const struct span_shape *shape,
                                                        const uint8_t *ids, uint64_t start, uint64_t end)
{
    struct span_data d;
    struct span s = {.d = &d, .name = "", .ctx.flags = 1, .start_ns = start, .end_ns = end};
    if (ids) {
        memcpy(s.ctx.trace_id, ids, 16);
        memcpy(s.ctx.span_id, ids + 16, 8);
    } else {
        trace_new_ids(s.ctx.trace_id, s.ctx.span_id);
    }
    span_use_shape(&s, shape);
    otlp_batch_add(t->span_cache, &t->cur, &s);
}

void tracer_span_shaped(struct tracer *t, const struct span_shape *shape, uint64_t start_mono,
                           uint64_t end_mono)
{
    /* Only a ratio sampler needs the trace id to decide; otherwise the
     * ids are drawn straight into the batch. */
    uint8_t ids[24], *given = NULL;
    if (t->set->sampler != SAMPLE_ON && t->set->sampler != SAMPLE_PB_ON) {
        trace_new_ids(ids, ids + 16);
        if (!sample_root(t, ids))
            return;
        given = ids;
    }
    if (!t->http || t->queued >= t->set->bsp_queue) {
        t->spans_dropped++;
        return;
    }
    uint64_t start = start_mono + t->mono_to_unix, end = end_mono + t->mono_to_unix;
    open_batch(t);
    if (!otlp_batch_add_shaped(t->span_cache, &t->cur, shape, given, start, end))
        add_shaped_record(t, shape, given, start, end);
    added(t);
}

static const char *kind_name(uint8_t k)
{
    static const char *const names[] = {"UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"};
    return k < 6 ? names[k] : "?";
}

/* One readable line per span on stderr (OTEL_TRACES_EXPORTER=console).
 * Returns whether the line was written. */
static bool print_span(struct span *s)
{
    span_materialize(s);
    char line[2048], tid[33], sid[17], pid[17] = "-";
    hex_encode(s->ctx.trace_id, 16, tid);
    hex_encode(s->ctx.span_id, 8, sid);
    if (s->has_parent)
        hex_encode(s->parent_id, 8, pid);
    int n = snprintf(line, sizeof(line), "span %s kind=%s trace=%s span=%s parent=%s duration=%.3fms status=%s",
                     s->name, kind_name(s->kind), tid, sid, pid, (double)(s->end_ns - s->start_ns) / 1e6,
                     s->error ? "ERROR" : "UNSET");
    for (size_t i = 0; i < s->nattrs && n > 0 && (size_t)n < sizeof(line); i++) {
        const struct span_attr *a = &s->d->attrs[i];
        if (a->type == SA_STR)
            n += snprintf(line + n, sizeof(line) - (size_t)n, " %s=\"%.*s\"", a->key, (int)a->len,
                          s->d->arena + a->off);
        else if (a->type == SA_BOOL)
            n += snprintf(line + n, sizeof(line) - (size_t)n, " %s=%s", a->key, a->i ? "true" : "false");
        else
            n += snprintf(line + n, sizeof(line) - (size_t)n, " %s=%lld", a->key, (long long)a->i);
    }
    /* Always printed, whatever log_level says: the user asked for it. */
    if (n < 0 || (size_t)n >= sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    return write(STDERR_FILENO, line, (size_t)n) == (ssize_t)n;
}

static void release(struct tracer *t, struct span *s)
{
    t->free_spans[t->nfree++] = s;
}

/* Closes the current batch: it waits in sealed[] for export_spans. The
 * queue bound keeps sealed[] within its bsp_queue / bsp_batch + 1 slots. */
static void seal(struct tracer *t)
{
    struct sealed_batch *sb = &t->sealed[t->nsealed++];
    sb->n = t->cur.body.ne;
    otlp_batch_finish(&t->cur, &sb->body);
    t->cur_open = false;
}

/* Hands every sealed batch to the exporter, and with partial the
 * current one however small. */
static void export_spans(struct tracer *t, bool partial)
{
    if (partial && t->cur_open && t->cur.body.ne)
        seal(t);
    for (size_t i = 0; i < t->nsealed; i++) {
        struct sealed_batch *sb = &t->sealed[i];
        t->queued -= sb->n;
        if (!t->http) { /* closed meanwhile */
            otlp_body_free(&sb->body);
            t->spans_dropped += sb->n;
            continue;
        }
        if (t->set->traces_otlp.gzip && otlp_body_gzip(&sb->body) != 0)
            log_warn("otlp: gzip failed; sending uncompressed");
        t->exporting += sb->n; /* before: a refused post answers at once */
        otlp_http_post(t->http, &t->set->traces_otlp, &sb->body, sb->n, true, t->set->bsp_export_timeout_ms);
    }
    t->nsealed = 0;
}

static void on_bsp_timer(uv_timer_t *h)
{
    struct tracer *t = h->data;
    t->mono_to_unix = unix_ns() - uv_hrtime();
    /* Armed for full batches, those go; at the schedule delay, whatever
     * has ended goes. */
    export_spans(t, t->nsealed == 0);
    if (!t->stopping)
        uv_timer_start(&t->bsp_timer, on_bsp_timer, t->set->bsp_delay_ms, 0);
}

void tracer_export_done(struct tracer *t, bool ok, size_t items)
{
    t->exporting -= items;
    if (ok) {
        t->spans_exported += items;
        return;
    }
    t->export_failures++;
    t->spans_dropped += items;
}

void tracer_init(struct tracer *t, const struct tel_settings *set, const struct otlp_resource *resource)
{
    memset(t, 0, sizeof(*t));
    t->set = set;
    t->resource = *resource;
    /* The pool is reserved, not touched: records are handed out in order
     * the first time, so pages are paid for only when spans are recorded,
     * and an idle daemon stays small. */
    t->pool = xcalloc(set->bsp_queue, sizeof(struct span));
    t->pool_data = xcalloc(set->bsp_queue, sizeof(struct span_data));
    t->free_spans = xcalloc(set->bsp_queue, sizeof(*t->free_spans));
    t->sealed = xcalloc(set->bsp_queue / set->bsp_batch + 1, sizeof(*t->sealed));
    t->mono_to_unix = unix_ns() - uv_hrtime();
}

void tracer_start(struct tracer *t, uv_loop_t *loop, struct otlp_http *http)
{
    uv_timer_init(loop, &t->bsp_timer);
    t->bsp_timer.data = t;
    t->http = http;
    t->started = true;
    if (!t->set->disabled && t->set->traces != EXP_NONE)
        uv_timer_start(&t->bsp_timer, on_bsp_timer, t->set->bsp_delay_ms, 0);
    /* A periodic timer must not keep a draining daemon alive. */
    uv_unref((uv_handle_t *)&t->bsp_timer);
}

void tracer_stop(struct tracer *t)
{
    t->stopping = true;
    if (!t->started)
        return;
    uv_timer_stop(&t->bsp_timer);
    if (!t->set->disabled)
        export_spans(t, true);
}

void tracer_flush(struct tracer *t)
{
    if (t->queued && t->http) /* spans of requests that finished while draining */
        export_spans(t, true);
}

void tracer_detach(struct tracer *t) { t->http = NULL; }

void tracer_close(struct tracer *t)
{
    if (t->started)
        uv_close((uv_handle_t *)&t->bsp_timer, NULL);
}

void tracer_free(struct tracer *t)
{
    otlp_span_cache_free(t->span_cache);
    span_shapes_free(&t->shapes);
    free(t->pool);
    free(t->pool_data);
    free(t->free_spans);
    otlp_batch_free(&t->cur);
    for (size_t i = 0; i < t->nsealed; i++)
        otlp_body_free(&t->sealed[i].body);
    free(t->sealed);
}
