/* Unit tests: W3C traceparent parsing (trace_context.c), histograms, and
 * OTLP encoding checked by decoding it back with protobuf-c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "otlp_trace_encode.h"
#include "histogram.h"
#include "span.h"
#include "trace_context.h"

static bool parse(const char *s, struct trace_ctx *c) { return trace_ctx_parse(s, strlen(s), c); }

static void test_valid(void **st)
{
    (void)st;
    struct trace_ctx c;
    assert_true(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c));
    assert_int_equal(c.trace_id[0], 0x4b);
    assert_int_equal(c.span_id[7], 0xb7);
    assert_int_equal(c.flags, 1);
    char out[56];
    trace_ctx_format(&c, out);
    assert_string_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /* A later version with more fields: read by its first four. */
    assert_true(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra", &c));
    assert_int_equal(c.flags, 0);
}

static void test_invalid(void **st)
{
    (void)st;
    struct trace_ctx c;
    const char *bad[] = {
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero span id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version ff */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* v00 with more */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        NULL,
    };
    for (int i = 0; bad[i]; i++)
        assert_false(parse(bad[i], &c));
}

static void test_random_ids(void **st)
{
    (void)st;
    uint8_t a[16], b[16];
    trace_random_id(a, 16);
    trace_random_id(b, 16);
    assert_memory_not_equal(a, b, 16);

    /* A span's ids come together; a child span gets only a span id. The
     * bytes of many ids are spread over all values, none id all zero. */
    static const uint8_t zero[16];
    unsigned seen[256] = {0};
    uint8_t last[8] = {0};
    for (int i = 0; i < 4096; i++) {
        uint8_t t[16], sp[8];
        trace_new_ids(i % 2 ? t : NULL, sp);
        assert_memory_not_equal(sp, zero, 8);
        assert_memory_not_equal(sp, last, 8);
        memcpy(last, sp, 8);
        if (i % 2)
            assert_memory_not_equal(t, zero, 16);
        for (int k = 0; k < 8; k++)
            seen[sp[k]]++;
    }
    for (int v = 0; v < 256; v++) /* 128 expected each; a stuck bit would leave half at 0 */
        assert_true(seen[v] > 40);
}

static void test_histogram(void **st)
{
    (void)st;
    double bounds[] = {0.001, 0.01, 0.1};
    struct histogram h;
    histogram_init(&h, 3);
    histogram_record(&h, bounds, 3, 0.0005);
    histogram_record(&h, bounds, 3, 0.001); /* on a bound: that bucket */
    histogram_record(&h, bounds, 3, 0.05);
    histogram_record(&h, bounds, 3, 7);
    assert_int_equal(h.count, 4);
    assert_int_equal(h.counts[0], 2);
    assert_int_equal(h.counts[1], 0);
    assert_int_equal(h.counts[2], 1);
    assert_int_equal(h.counts[3], 1);
    assert_true(h.min == 0.0005 && h.max == 7);
    histogram_free(&h);
}

/* An ExportTraceServiceRequest with spans[0..n), appended to out: the
 * batch calls ferryd makes as spans end, in one go. */
static void otlp_encode_spans(const struct otlp_resource *r, struct otlp_span_cache *cache, struct span *const *spans,
                              size_t n, struct cbuf *out)
{
    struct otlp_span_batch b = {0};
    struct otlp_body body;
    otlp_body_init(&body);
    otlp_batch_begin(r, &b, &body);
    for (size_t i = 0; i < n; i++)
        otlp_batch_add(cache, &b, spans[i]);
    otlp_batch_finish(&b, &body);
    otlp_batch_free(&b);
    otlp_body_flatten(&body);
    cbuf_put(out, body.head.data, body.head.len);
    otlp_body_free(&body);
}

/* A sampled CLIENT span with fresh ids, named name, from start to
 * start + 1000 ns; d holds its data. */
static void new_span(struct span *s, struct span_data *d, const char *name, uint64_t start)
{
    memset(s, 0, sizeof(*s));
    memset(d, 0, sizeof(*d));
    s->d = d;
    trace_random_id(s->ctx.trace_id, 16);
    trace_random_id(s->ctx.span_id, 8);
    s->ctx.flags = 1;
    s->kind = SK_CLIENT;
    s->start_ns = start;
    s->end_ns = start + 1000;
    s->name = name;
}

static void test_span_encoding_round_trip(void **st)
{
    (void)st;
    static struct span s;
    static struct span_data d;
    new_span(&s, &d, "GET", 1000);
    span_attr_cstr(&s, "db.system.name", "redis");
    span_attr_int(&s, "server.port", 6379);
    span_attr_bool(&s, "flag", true);
    struct span *list[1] = {&s};
    struct otlp_kv res[] = {{"service.name", "ferryd", 0}, {"process.pid", NULL, 42}};
    struct otlp_resource r = {res, 2};
    struct cbuf out;
    cbuf_init(&out);
    struct otlp_span_cache *cache = otlp_span_cache_new();
    otlp_encode_spans(&r, cache, list, 1, &out);
    /* Twice: the second time the attributes come from the cache. */
    struct cbuf again;
    cbuf_init(&again);
    otlp_encode_spans(&r, cache, list, 1, &again);
    assert_int_equal(again.len, out.len);
    assert_memory_equal(again.data, out.data, out.len);
    cbuf_free(&again);
    otlp_span_cache_free(cache);
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, out.len, out.data);
    assert_non_null(req);
    assert_int_equal(req->n_resource_spans, 1);
    Opentelemetry__Proto__Trace__V1__Span *p = req->resource_spans[0]->scope_spans[0]->spans[0];
    assert_string_equal(p->name, "GET");
    assert_int_equal(p->kind, 3);
    assert_int_equal(p->trace_id.len, 16);
    assert_memory_equal(p->trace_id.data, s.ctx.trace_id, 16);
    assert_int_equal(p->n_attributes, 3);
    assert_string_equal(p->attributes[0]->value->string_value, "redis");
    assert_int_equal(p->attributes[1]->value->int_value, 6379);
    assert_int_equal(req->resource_spans[0]->resource->attributes[1]->value->int_value, 42);
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);
    size_t plain = out.len;
    assert_int_equal(otlp_pb_gzip(&out), 0);
    assert_true(out.len > 10 && out.data[0] == 0x1f && out.data[1] == 0x8b); /* gzip magic */
    assert_true(plain > 0);
    cbuf_free(&out);
}

/* The packing bound in pack_span() must hold for the largest
 * span a request can make: every string field full, every attribute. */
static void test_largest_span_packs(void **st)
{
    (void)st;
    static struct span s;
    static struct span_data d;
    new_span(&s, &d, d.name, 0);
    s.has_parent = true;
    s.error = true;
    s.kind = SK_CONSUMER;
    s.start_ns = UINT64_MAX - 1;
    s.end_ns = UINT64_MAX;
    s.ctx.flags = 0xff;
    memset(d.name, 'n', sizeof(d.name) - 1);
    s.name = d.name;
    memset(d.status_msg, 'm', sizeof(d.status_msg) - 1);
    memset(d.trace_state, 't', sizeof(d.trace_state) - 1);
    s.trace_state_len = sizeof(d.trace_state) - 1;
    static const char *keys[SPAN_MAX_ATTRS] = {"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9",
                                               "b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"};
    char big[SPAN_ARENA];
    memset(big, 'v', sizeof(big));
    for (int i = 0; i < SPAN_MAX_ATTRS; i++) {
        if (i % 3 == 0)
            span_attr_int(&s, keys[i], INT64_MIN);
        else
            span_attr_str(&s, keys[i], big, SPAN_ARENA / 10);
    }
    assert_int_equal(s.nattrs, SPAN_MAX_ATTRS);
    struct span *list[1] = {&s};
    struct otlp_resource r = {NULL, 0};
    struct otlp_span_cache *cache = otlp_span_cache_new();
    struct cbuf out;
    cbuf_init(&out);
    otlp_encode_spans(&r, cache, list, 1, &out);
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, out.len, out.data);
    assert_non_null(req);
    Opentelemetry__Proto__Trace__V1__Span *p = req->resource_spans[0]->scope_spans[0]->spans[0];
    assert_int_equal(p->n_attributes, SPAN_MAX_ATTRS);
    assert_int_equal(strlen(p->trace_state), sizeof(d.trace_state) - 1);
    assert_int_equal(p->attributes[0]->value->int_value, INT64_MIN);
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);
    cbuf_free(&out);
    otlp_span_cache_free(cache);
}


/* Spans emitted from templates must decode exactly as the span says:
 * several shapes, each seen more than once with other ids and times, plus
 * the spans that cannot have a template (a trace state; an attribute that
 * contains a sentinel's bytes), which are packed whole. */
#define NSPANS 12

static void make_span(struct span *s, struct span_data *d, int i)
{
    int shape = i % 6;
    new_span(s, d, shape == 1 ? "SET" : "GET", 1700000000000000000ull + (uint64_t)i * 1000);
    s->end_ns = s->start_ns + 500 + (uint64_t)i;
    span_attr_cstr(s, "db.system.name", "redis");
    span_attr_int(s, "server.port", 6379 + (shape == 2));
    if (shape == 3) { /* a child, with an error */
        s->has_parent = true;
        trace_random_id(s->parent_id, 8);
        s->error = true;
        snprintf(d->status_msg, sizeof(d->status_msg), "WRONGTYPE Operation against a key");
        span_attr_cstr(s, "error.type", "redis");
    }
    if (shape == 4) /* a trace state: packed whole */
        s->trace_state_len = (uint16_t)snprintf(d->trace_state, sizeof(d->trace_state), "vendor=%d", i);
    if (shape == 5) { /* an attribute holding the trace id sentinel: packed whole */
        size_t n;
        const uint8_t *sent = otlp_template_sentinel(&n);
        span_attr_str(s, "db.query.text", (const char *)sent, n);
    }
}

/* Encodes list[0..n) as one export request, decodes it back with
 * protobuf-c's real message types, and checks it holds n spans. */
static Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *
round_trip(struct otlp_span_cache *cache, struct span *const *list, size_t n)
{
    struct otlp_resource r = {NULL, 0};
    struct cbuf out;
    cbuf_init(&out);
    otlp_encode_spans(&r, cache, list, n, &out);
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, out.len, out.data);
    cbuf_free(&out);
    assert_non_null(req);
    assert_int_equal(req->resource_spans[0]->scope_spans[0]->n_spans, n);
    return req;
}

static void test_span_templates(void **st)
{
    (void)st;
    static struct span spans[NSPANS];
    static struct span_data data[NSPANS];
    struct span *list[NSPANS];
    for (int i = 0; i < NSPANS; i++) {
        make_span(&spans[i], &data[i], i);
        list[i] = &spans[i];
    }
    struct otlp_span_cache *cache = otlp_span_cache_new();
    for (int round = 0; round < 2; round++) { /* the second batch finds every template made */
        Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req = round_trip(cache, list, NSPANS);
        Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = req->resource_spans[0]->scope_spans[0];
        for (int i = 0; i < NSPANS; i++) {
            const struct span *s = &spans[i];
            Opentelemetry__Proto__Trace__V1__Span *p = ss->spans[i];
            assert_int_equal(p->trace_id.len, 16);
            assert_memory_equal(p->trace_id.data, s->ctx.trace_id, 16);
            assert_int_equal(p->span_id.len, 8);
            assert_memory_equal(p->span_id.data, s->ctx.span_id, 8);
            assert_int_equal(p->parent_span_id.len, s->has_parent ? 8 : 0);
            if (s->has_parent)
                assert_memory_equal(p->parent_span_id.data, s->parent_id, 8);
            assert_true(p->start_time_unix_nano == s->start_ns);
            assert_true(p->end_time_unix_nano == s->end_ns);
            assert_int_equal(p->flags, 1);
            assert_string_equal(p->name, s->name);
            assert_string_equal(p->trace_state, s->trace_state_len ? s->d->trace_state : "");
            assert_int_equal(p->kind, SK_CLIENT);
            assert_int_equal(p->n_attributes, s->nattrs);
            assert_string_equal(p->attributes[0]->key, "db.system.name");
            assert_int_equal(p->attributes[1]->value->int_value, s->d->attrs[1].i);
            assert_int_equal(p->status->code, s->error ? 2 : 0);
            assert_string_equal(p->status->message, s->error ? s->d->status_msg : "");
            if (i % 6 == 5)
                assert_memory_equal(p->attributes[2]->value->string_value, otlp_template_sentinel(&(size_t){0}), 16);
        }
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);
    }
    uint64_t templated, whole;
    otlp_span_cache_counts(cache, &templated, &whole);
    /* Packed whole: shapes 4 and 5 always, shapes 0-3 at least when first
     * seen (a template is made on a key's second sighting; two keys that
     * share a slot, which depends on where the keys' strings are loaded,
     * also go whole). */
    assert_true(whole >= 2 * 2 * (NSPANS / 6) + 4);
    assert_true(templated > 0);
    assert_int_equal(templated + whole, 2 * NSPANS);
    otlp_span_cache_free(cache);

    /* One shape alone cannot share its slot: whole once, then templates. */
    cache = otlp_span_cache_new();
    for (int round = 0; round < 3; round++) {
        Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req = round_trip(cache, list, 1);
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);
    }
    otlp_span_cache_counts(cache, &templated, &whole);
    assert_int_equal(whole, 1);
    assert_int_equal(templated, 2);
    otlp_span_cache_free(cache);
}

/* More shapes in one batch than the template table has slots: templates
 * are replaced within a batch, and every span must still come out whole
 * (under ASan in CI, this also checks that no replaced template is read). */
#define MANY 700

static void test_templates_replaced_within_a_batch(void **st)
{
    (void)st;
    static struct span spans[MANY];
    static struct span_data data[MANY];
    static char names[MANY][16];
    struct span *list[MANY];
    for (int i = 0; i < MANY; i++) {
        struct span *s = &spans[i];
        snprintf(names[i], sizeof(names[i]), "CMD%d", i % 350); /* each shape twice, far apart */
        new_span(s, &data[i], names[i], 1000 + (uint64_t)i);
        span_attr_int(s, "n", i % 350);
        list[i] = s;
    }
    struct otlp_span_cache *cache = otlp_span_cache_new();
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req = round_trip(cache, list, MANY);
    Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = req->resource_spans[0]->scope_spans[0];
    for (int i = 0; i < MANY; i++) {
        Opentelemetry__Proto__Trace__V1__Span *p = ss->spans[i];
        assert_string_equal(p->name, names[i]);
        assert_memory_equal(p->span_id.data, spans[i].ctx.span_id, 8);
        assert_true(p->start_time_unix_nano == spans[i].start_ns);
        assert_int_equal(p->attributes[0]->value->int_value, i % 350);
    }
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);
    uint64_t templated, whole;
    otlp_span_cache_counts(cache, &templated, &whole);
    assert_int_equal(templated + whole, MANY);
    assert_true(templated > 0);
    otlp_span_cache_free(cache);
}

/* Spans recorded one by one as they end, into a batch whose envelope is
 * packed last: a body past 2 MiB (each of the envelope's lengths then
 * takes 4 bytes), a resource of many attributes, a record reused for
 * every span (it is free once added), and an empty batch. */
#define BIG 16000
static void test_batch_built_as_spans_end(void **st)
{
    (void)st;
    struct otlp_kv res[40];
    static char keys[40][32], vals[40][64];
    for (int i = 0; i < 40; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k8s.label.%d", i);
        snprintf(vals[i], sizeof(vals[i]), "value-%d-with-some-length", i);
        res[i] = (struct otlp_kv){keys[i], vals[i], 0};
    }
    struct otlp_resource r = {res, 40};
    static uint8_t span_ids[BIG][8];
    static struct span s;
    static struct span_data d;
    struct otlp_span_cache *cache = otlp_span_cache_new();
    struct otlp_span_batch b = {0};
    struct otlp_body body;
    otlp_body_init(&body);
    otlp_batch_begin(&r, &b, &body);
    for (int i = 0; i < BIG; i++) {
        new_span(&s, &d, i % 3 ? "GET" : "SET", 5000 + (uint64_t)i);
        span_attr_cstr(&s, "db.system.name", "redis");
        span_attr_cstr(&s, "db.query.text", "GET ? with a longer text to make the body large enough");
        memcpy(span_ids[i], s.ctx.span_id, 8);
        otlp_batch_add(cache, &b, &s);
    }
    otlp_batch_finish(&b, &body);
    assert_true(body.len > (2u << 20));
    otlp_body_flatten(&body);
    assert_true(body.head.len == body.len);
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, body.head.len,
                                                                                          body.head.data);
    assert_non_null(req);
    assert_int_equal(req->n_resource_spans, 1);
    assert_int_equal(req->resource_spans[0]->resource->n_attributes, 40);
    assert_string_equal(req->resource_spans[0]->resource->attributes[39]->value->string_value, vals[39]);
    Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = req->resource_spans[0]->scope_spans[0];
    assert_string_equal(ss->scope->name, "ferryd");
    assert_int_equal(ss->n_spans, BIG);
    for (int i = 0; i < BIG; i++) {
        assert_memory_equal(ss->spans[i]->span_id.data, span_ids[i], 8);
        assert_true(ss->spans[i]->start_time_unix_nano == 5000 + (uint64_t)i);
        assert_string_equal(ss->spans[i]->name, i % 3 ? "GET" : "SET");
    }
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);

    /* The memory is reused; an empty batch is a request with no spans. */
    otlp_body_clear(&body);
    otlp_batch_begin(&r, &b, &body);
    otlp_batch_finish(&b, &body);
    otlp_body_flatten(&body);
    req = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, body.head.len,
                                                                                            body.head.data);
    assert_non_null(req);
    assert_int_equal(req->resource_spans[0]->scope_spans[0]->n_spans, 0);
    assert_int_equal(req->resource_spans[0]->resource->n_attributes, 40); /* packed once, kept */
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);
    otlp_batch_free(&b);
    otlp_body_free(&body);
    otlp_span_cache_free(cache);
}

/* A body is written out as it is read, in whatever pieces the HTTP
 * client asks for: spans from templates split across two reads, spans
 * packed whole between them, seeks (curl rewinds to send a body again),
 * and templates replaced in the cache (many shapes, each thrice in a row:
 * whole, then from its template twice) while the body still uses them,
 * read after the cache itself is gone (under ASan in CI, any read of a
 * freed template fails the test). */
#define SHAPES 1500

static void test_body_read_in_pieces(void **st)
{
    (void)st;
    static struct span s;
    static struct span_data d;
    static char names[SHAPES][16];
    struct otlp_kv res[] = {{"service.name", "ferryd", 0}};
    struct otlp_resource r = {res, 1};
    struct otlp_span_cache *cache = otlp_span_cache_new();
    struct otlp_span_batch b = {0};
    struct otlp_body body;
    otlp_body_init(&body);
    otlp_batch_begin(&r, &b, &body);
    for (int i = 0; i < SHAPES * 3; i++) {
        snprintf(names[i / 3], sizeof(names[0]), "CMD%d", i / 3);
        new_span(&s, &d, names[i / 3], 7000 + (uint64_t)i);
        span_attr_cstr(&s, "db.system.name", "redis");
        if (i % 7 == 0) /* a trace state: packed whole, between templated ones */
            s.trace_state_len = (uint16_t)snprintf(d.trace_state, sizeof(d.trace_state), "v=%d", i);
        otlp_batch_add(cache, &b, &s);
    }
    otlp_batch_finish(&b, &body);
    otlp_batch_free(&b);
    uint64_t templated, whole;
    otlp_span_cache_counts(cache, &templated, &whole);
    assert_true(templated > SHAPES);
    otlp_span_cache_free(cache);

    /* Whole, then in pieces of 1 to 97 bytes. */
    struct cbuf flat, pieces;
    cbuf_init(&flat);
    cbuf_init(&pieces);
    cbuf_reserve(&flat, body.len + 1);
    cbuf_reserve(&pieces, body.len + 1);
    struct otlp_cursor c = {0};
    flat.len = otlp_body_read(&body, &c, flat.data, body.len + 1);
    assert_int_equal(flat.len, body.len);
    assert_int_equal(otlp_body_read(&body, &c, flat.data, 1), 0);
    memset(&c, 0, sizeof(c));
    for (size_t step = 1, n; (n = otlp_body_read(&body, &c, pieces.data + pieces.len, step)) > 0;
         step = step % 97 + 1) {
        assert_true(n <= step);
        pieces.len += n;
    }
    assert_int_equal(pieces.len, flat.len);
    assert_memory_equal(pieces.data, flat.data, flat.len);

    /* Seeks land anywhere, a span's middle included, and reading goes on
     * from there. */
    uint8_t tail[300];
    for (size_t off = 0; off < body.len; off += body.len / 37 + 1) {
        assert_true(otlp_body_seek(&body, &c, off));
        size_t n = otlp_body_read(&body, &c, tail, sizeof(tail));
        assert_int_equal(n, body.len - off < sizeof(tail) ? body.len - off : sizeof(tail));
        assert_memory_equal(tail, flat.data + off, n);
    }
    assert_false(otlp_body_seek(&body, &c, body.len + 1));

    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(NULL, flat.len, flat.data);
    assert_non_null(req);
    Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = req->resource_spans[0]->scope_spans[0];
    assert_int_equal(ss->n_spans, SHAPES * 3);
    for (int i = 0; i < SHAPES * 3; i++) { /* in the order they ended */
        assert_string_equal(ss->spans[i]->name, names[i / 3]);
        assert_true(ss->spans[i]->start_time_unix_nano == 7000 + (uint64_t)i);
        char state[16] = "";
        if (i % 7 == 0)
            snprintf(state, sizeof(state), "v=%d", i);
        assert_string_equal(ss->spans[i]->trace_state, state);
    }
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(req, NULL);

    /* gzip makes it flat: the same bytes, compressed. */
    assert_int_equal(otlp_body_gzip(&body), 0);
    assert_true(body.gzip && body.len == body.head.len && body.ne == 0);
    assert_true(body.head.data[0] == 0x1f && body.head.data[1] == 0x8b);
    cbuf_free(&flat);
    cbuf_free(&pieces);
    otlp_body_free(&body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_random_ids),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_span_encoding_round_trip),
        cmocka_unit_test(test_largest_span_packs),
        cmocka_unit_test(test_span_templates),
        cmocka_unit_test(test_templates_replaced_within_a_batch),
        cmocka_unit_test(test_batch_built_as_spans_end),
        cmocka_unit_test(test_body_read_in_pieces),
    };
    return cmocka_run_group_tests_name("trace_context", tests, NULL, NULL);
}
