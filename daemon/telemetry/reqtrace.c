/* reqtrace.c: see reqtrace.h. The layer above telemetry.c: it reaches the
 * tracer and the metrics inside struct telemetry directly, since it runs
 * for every request. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cbuf.h"
#include "reqtrace.h"
#include "telemetry.h"

/* The shape cache: a span's attributes follow from its description, so
 * a description seen before finds its shape here instead of recording
 * attributes. */
#define SLOTS 256

/* A slot's key: the operation as two words (zero padded), its length and
 * argument count, the system, the connection and its generation, and the
 * query mode. Comparing words instead of hashing and comparing the name
 * byte by byte keeps the lookup cheap for every traced request.
 * Operations of 16 bytes or more (few commands) are never cached. */
struct reqtrace_slot {
    uint64_t w[2];
    int argc;
    uint8_t n;
    uint8_t query;
    unsigned conn_gen;
    const void *conn;                /* refers: only compared */
    const char *system;              /* refers: only compared */
    const struct span_shape *shape;  /* refers: owned by the tracer */
};

void reqtrace_begin(struct reqtrace *t, struct telemetry *tel, const char *name, uint64_t start_ns, const char *tp,
                    size_t tp_len, const char *ts, size_t ts_len, bool may_defer)
{
    t->tel = tel;
    t->name = name;
    t->start_ns = start_ns;
    t->shape = NULL;
    t->db_system = NULL;
    t->db_operation[0] = '\0';
    /* ferryd serves the application: a SERVER span, unless the
     * description makes it a CLIENT, PRODUCER ... span of its own kind. */
    t->on_demand = !tp && may_defer && tracer_on_demand(&tel->tracer);
    t->span = t->on_demand ? NULL
                           : tracer_span_start(&tel->tracer, tp, tp_len, ts, ts_len, SK_SERVER, name, start_ns, false);
}

struct span *reqtrace_span(struct reqtrace *t)
{
    if (t->on_demand) {
        t->on_demand = false;
        /* late: the request was admitted to tracing, even if telemetry
         * has begun stopping since. */
        t->span = tracer_span_start(&t->tel->tracer, NULL, 0, NULL, 0, SK_SERVER, t->name, t->start_ns, true);
        if (t->span && t->shape)
            span_use_shape(t->span, t->shape);
    }
    return t->span;
}

/* The span's part of reqtrace_end, apart so that an untraced request's
 * end stays a short function. */
static __attribute__((noinline)) void end_span(struct reqtrace *t, uint64_t now, const char *error_type,
                                               const char *message)
{
    struct tracer *tr = &t->tel->tracer;
    if (t->on_demand) {
        if (t->shape && !error_type)
            tracer_span_shaped(tr, t->shape, t->start_ns, now);
        else
            reqtrace_span(t); /* an error adds attributes to the span */
    }
    if (t->span) {
        if (error_type)
            span_set_error(t->span, error_type, message);
        tracer_span_end(tr, t->span, now);
        t->span = NULL;
    }
}

void reqtrace_end(struct reqtrace *t, struct histogram *op_duration, const char *error_type, const char *message)
{
    struct metrics *m = &t->tel->metrics;
    uint64_t now = uv_hrtime(), took = now - t->start_ns;
    metrics_request(m, op_duration, took);
    if (t->db_system)
        metrics_db_operation(m, t->db_system, t->db_operation, took);
    /* Most traced requests end here: shaped, no record. */
    if (t->on_demand && t->shape && !error_type)
        tracer_span_shaped(&t->tel->tracer, t->shape, t->start_ns, now);
    else if (t->on_demand || t->span)
        end_span(t, now, error_type, message);
}

static struct reqtrace_slot *slot_of(struct telemetry *tel, uint64_t h)
{
    if (!tel->slots)
        tel->slots = xcalloc(SLOTS, sizeof(*tel->slots));
    return &tel->slots[(h >> 56) % SLOTS];
}

/* The query text: the operation, then a ? per argument (or the argument
 * itself when full), cut at 252 bytes. */
static size_t query_text(const struct reqtrace *t, const struct reqtrace_desc *d, char *q, size_t cap)
{
    size_t u = 0;
    bool full = d->query == RQ_FULL;
    for (int i = 0; i < d->argc && u < cap - 4; i++) {
        if (i)
            q[u++] = ' ';
        const char *a = i == 0 ? t->db_operation : full ? d->argv[i] : "?";
        size_t l = i == 0 ? strlen(a) : full ? d->lens[i] : 1;
        if (l > cap - 4 - u)
            l = cap - 4 - u;
        memcpy(q + u, a, l);
        u += l;
    }
    return u;
}

/* Records the description on sp, per the semantic conventions. */
static void record(const struct reqtrace *t, struct span *sp, const struct reqtrace_desc *d, size_t n)
{
    sp->kind = (uint8_t)d->kind;
    if (d->span_name)
        span_copy_name(sp, d->span_name, strlen(d->span_name));
    else
        span_copy_name(sp, t->db_operation, n);
    if (d->database) {
        size_t sl = strlen(d->system);
        span_attr_str(sp, "db.system.name", d->system, sl);
        span_attr_str(sp, "db.system", d->system, sl);
        span_attr_str(sp, "db.operation.name", t->db_operation, n);
        if (d->db_namespace)
            span_attr_cstr(sp, "db.namespace", d->db_namespace);
    }
    if (d->server_address) {
        span_attr_str(sp, "server.address", d->server_address, d->server_address_len);
        if (d->server_port)
            span_attr_int(sp, "server.port", d->server_port);
    }
    if (d->database && d->procedure)
        span_attr_str(sp, "db.stored_procedure.name", d->procedure, d->procedure_len);
    if (d->database && d->query != RQ_OFF) {
        char q[256];
        span_attr_str(sp, "db.query.text", q, query_text(t, d, q, sizeof(q)));
    }
    if (d->peer_address)
        span_attr_cstr(sp, "network.peer.address", d->peer_address);
    for (size_t i = 0; i < d->nextra; i++) {
        const struct reqtrace_attr *a = &d->extra[i];
        if (a->str)
            span_attr_str(sp, a->key, a->str, a->len);
        else
            span_attr_int(sp, a->key, a->i);
    }
}

/* A description the cache did not have: its span is recorded, and its
 * shape goes into slot (when there is one). Apart, so that the common
 * cases stay a short function. */
static __attribute__((noinline)) void describe_span(struct reqtrace *t, const struct reqtrace_desc *d, size_t n,
                                                    struct reqtrace_slot *slot, const uint64_t *w)
{
    struct span *sp = reqtrace_span(t);
    if (!sp)
        return;
    record(t, sp, d, n);
    if (slot) {
        const struct span_shape *sh = span_shapes_intern(&t->tel->tracer.shapes, sp);
        if (sh) {
            slot->w[0] = w[0];
            slot->w[1] = w[1];
            slot->n = (uint8_t)n;
            slot->argc = d->argc;
            slot->conn = d->conn;
            slot->conn_gen = d->conn_gen;
            slot->query = (uint8_t)d->query;
            slot->system = d->system;
            slot->shape = sh;
        }
    }
}

/* A traced request's description: its shape from the cache, or its
 * span recorded. Apart from reqtrace_describe, and from describe_span,
 * so that each path pays only for the registers it uses. */
static __attribute__((noinline)) void describe_traced(struct reqtrace *t, const struct reqtrace_desc *d, size_t n)
{
    struct reqtrace_slot *slot = NULL;
    uint64_t w[2];
    if (d->query != RQ_FULL && !d->procedure && !d->nextra && !d->span_name && n < 16) {
        memcpy(w, t->db_operation, 16);
        uint64_t h = (w[0] * 0x9e3779b97f4a7c15ull) ^ (w[1] * 0xff51afd7ed558ccdull) ^
                     ((uint64_t)(uintptr_t)d->conn + (uint64_t)d->argc) * 0xc4ceb9fe1a85ec53ull;
        slot = slot_of(t->tel, h);
        if (slot->shape && slot->w[0] == w[0] && slot->w[1] == w[1] && slot->n == n && slot->argc == d->argc &&
            slot->conn == d->conn && slot->conn_gen == d->conn_gen && slot->query == d->query &&
            slot->system == d->system) {
            if (t->span)
                span_use_shape(t->span, slot->shape);
            else
                t->shape = slot->shape; /* the span stays on demand */
            return;
        }
    }
    describe_span(t, d, n, slot, w);
}

void reqtrace_describe(struct reqtrace *t, const struct reqtrace_desc *d)
{
    size_t n = d->operation_len < sizeof(t->db_operation) - 1 ? d->operation_len : sizeof(t->db_operation) - 1;
    /* Zero padded: the first 16 bytes are the cache's key, and the
     * metrics compare all 32 as words. */
    memset(t->db_operation, 0, sizeof(t->db_operation));
    for (size_t i = 0; i < n; i++) /* a few bytes: a call to memcpy costs more */
        t->db_operation[i] = d->operation[i];
    if (d->database)
        t->db_system = d->system;
    if (t->span || t->on_demand)
        describe_traced(t, d, n);
}

void reqtrace_status_code(struct reqtrace *t, const char *code, size_t len)
{
    struct span *sp = reqtrace_span(t);
    if (sp)
        span_attr_str(sp, "db.response.status_code", code, len);
}

bool reqtrace_traceparent(struct reqtrace *t, const char *client_tp, size_t client_tp_len, const char *client_ts,
                          size_t client_ts_len, char out[TRACEPARENT_LEN + 1], const char **ts, size_t *ts_len)
{
    struct span *sp = reqtrace_span(t);
    struct trace_ctx tc;
    *ts = client_ts;
    *ts_len = client_ts_len;
    if (sp) {
        span_traceparent(sp, out);
        /* The span carries the client's tracestate when it had one. */
        if (!sp->trace_state_len) {
            *ts = NULL;
            *ts_len = 0;
        }
        return true;
    }
    /* Not sampled: the client's context goes on unchanged, so the trace
     * stays whole downstream. */
    if (client_tp && trace_ctx_parse(client_tp, client_tp_len, &tc)) {
        trace_ctx_format(&tc, out);
        return true;
    }
    out[0] = '\0';
    return false;
}
