/* Unit tests: a request's trace beside the request path (reqtrace.c):
 * what a description records, and the shape cache that lets most traced
 * requests end with no span record. No loop and no exporter: ended spans
 * are counted as dropped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "histogram.h"
#include "reqtrace.h"
#include "telemetry.h"

static void no_requests(void *ctx, const struct metrics_requests *v)
{
    (void)ctx;
    (void)v;
}
static uint64_t no_clients(void *ctx)
{
    (void)ctx;
    return 0;
}
static void no_backends(void *ctx, const struct metric_emit *e)
{
    (void)ctx;
    (void)e;
}

static struct telemetry *new_telemetry(const char *traces_exporter)
{
    setenv("OTEL_TRACES_EXPORTER", traces_exporter, 1);
    setenv("OTEL_METRICS_EXPORTER", "none", 1);
    unsetenv("OTEL_TRACES_SAMPLER");
    struct metrics_source src = {.requests = no_requests, .clients = no_clients, .backends = no_backends};
    struct telemetry *t = NULL;
    char err[256];
    assert_int_equal(telemetry_init(&t, &src, "0.001,0.01,0.1", err, sizeof(err)), 0);
    return t;
}

static const char *ARGV[] = {"get", "key:1"};
static const size_t LENS[] = {3, 5};
static int conn_a, conn_b;

/* A Redis GET as the Redis backend describes it. */
static struct reqtrace_desc get_desc(const void *conn, unsigned gen, enum reqtrace_query q)
{
    return (struct reqtrace_desc){
        .kind = SK_CLIENT,
        .database = true,
        .system = "redis",
        .operation = "GET",
        .operation_len = 3,
        .db_namespace = "0",
        .server_address = "127.0.0.1",
        .server_address_len = 9,
        .server_port = 6379,
        .peer_address = "127.0.0.1:6379",
        .conn = conn,
        .conn_gen = gen,
        .argc = 2,
        .argv = ARGV,
        .lens = LENS,
        .query = q,
    };
}

static const struct span_attr *attr(const struct span *s, const char *key)
{
    for (size_t i = 0; i < s->nattrs; i++)
        if (!strcmp(s->d->attrs[i].key, key))
            return &s->d->attrs[i];
    return NULL;
}

static void test_describe_records_then_shapes(void **st)
{
    (void)st;
    struct telemetry *tel = new_telemetry("otlp");
    struct histogram h = {0};
    struct reqtrace a, b, c;

    /* First sight: the span is recorded, with the conventions' attributes. */
    reqtrace_begin(&a, tel, "redis", 1000, NULL, 0, NULL, 0, true);
    assert_true(a.on_demand);
    assert_null(a.span);
    struct reqtrace_desc d = get_desc(&conn_a, 1, RQ_SANITIZED);
    reqtrace_describe(&a, &d);
    assert_non_null(a.span);
    assert_string_equal(a.span->name, "GET");
    assert_int_equal(a.span->kind, SK_CLIENT);
    const struct span_attr *q = attr(a.span, "db.query.text");
    assert_non_null(q);
    assert_int_equal(q->len, 5);
    assert_memory_equal(a.span->d->arena + q->off, "GET ?", 5);
    assert_non_null(attr(a.span, "network.peer.address"));
    assert_int_equal(attr(a.span, "server.port")->i, 6379);
    assert_string_equal(reqtrace_operation(&a), "GET");
    reqtrace_end(&a, &h, NULL, NULL);

    /* The same description again: its shape, and no record. */
    reqtrace_begin(&b, tel, "redis", 2000, NULL, 0, NULL, 0, true);
    reqtrace_describe(&b, &d);
    assert_null(b.span);
    assert_non_null(b.shape);
    assert_true(b.on_demand);
    reqtrace_end(&b, &h, NULL, NULL);

    /* An error needs the record after all: the shape's attributes and
     * its own. */
    reqtrace_begin(&c, tel, "redis", 3000, NULL, 0, NULL, 0, true);
    reqtrace_describe(&c, &d);
    assert_null(c.span);
    reqtrace_status_code(&c, "WRONGTYPE", 9);
    assert_non_null(c.span);
    reqtrace_end(&c, &h, "backend_error", "WRONGTYPE ...");

    /* Every request's duration went to the op's histogram and to
     * db.client.operation.duration. */
    assert_int_equal(h.count, 3);
    assert_int_equal(tel->metrics.ndb, 1);
    assert_int_equal(tel->metrics.db[0].h.count, 3);
    assert_string_equal(tel->metrics.db[0].operation, "GET");
    histogram_free(&h);
    telemetry_free(tel);
}

static void test_cache_key(void **st)
{
    (void)st;
    struct telemetry *tel = new_telemetry("otlp");
    struct histogram h = {0};
    struct reqtrace r;
    struct reqtrace_desc d = get_desc(&conn_a, 1, RQ_SANITIZED);
    reqtrace_begin(&r, tel, "redis", 1, NULL, 0, NULL, 0, true);
    reqtrace_describe(&r, &d);
    const struct span_shape *first = span_shapes_intern(&tel->tracer.shapes, r.span);
    reqtrace_end(&r, &h, NULL, NULL);

    /* Another connection, or the same one with a new peer: a miss. */
    struct reqtrace_desc other = get_desc(&conn_b, 1, RQ_SANITIZED);
    reqtrace_begin(&r, tel, "redis", 1, NULL, 0, NULL, 0, true);
    reqtrace_describe(&r, &other);
    assert_non_null(r.span);
    reqtrace_end(&r, &h, NULL, NULL);
    struct reqtrace_desc regen = get_desc(&conn_a, 2, RQ_SANITIZED);
    reqtrace_begin(&r, tel, "redis", 1, NULL, 0, NULL, 0, true);
    reqtrace_describe(&r, &regen);
    assert_non_null(r.span);
    reqtrace_end(&r, &h, NULL, NULL);
    /* The cache keeps the last shape of a slot; the interned shape is
     * the same for the same attributes. */
    reqtrace_begin(&r, tel, "redis", 1, NULL, 0, NULL, 0, true);
    reqtrace_describe(&r, &regen);
    assert_null(r.span);
    assert_ptr_equal(r.shape, first);
    reqtrace_end(&r, &h, NULL, NULL);

    /* A full query text differs from request to request: never cached. */
    struct reqtrace_desc full = get_desc(&conn_a, 2, RQ_FULL);
    for (int i = 0; i < 2; i++) {
        reqtrace_begin(&r, tel, "redis", 1, NULL, 0, NULL, 0, true);
        reqtrace_describe(&r, &full);
        assert_non_null(r.span);
        const struct span_attr *q = attr(r.span, "db.query.text");
        assert_memory_equal(r.span->d->arena + q->off, "GET key:1", 9);
        reqtrace_end(&r, &h, NULL, NULL);
    }
    histogram_free(&h);
    telemetry_free(tel);
}

static void test_untraced(void **st)
{
    (void)st;
    struct telemetry *tel = new_telemetry("none");
    struct histogram h = {0};
    struct reqtrace r;
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    reqtrace_begin(&r, tel, "redis", 1, tp, strlen(tp), NULL, 0, true);
    assert_false(r.on_demand);
    assert_null(r.span);
    struct reqtrace_desc d = get_desc(&conn_a, 1, RQ_SANITIZED);
    reqtrace_describe(&r, &d);
    assert_null(r.span);
    assert_null(tel->slots);
    assert_string_equal(reqtrace_operation(&r), "GET");
    /* Not sampled here: the client's context goes on unchanged. */
    char out[TRACEPARENT_LEN + 1];
    const char *ts;
    size_t ts_len;
    assert_true(reqtrace_traceparent(&r, tp, strlen(tp), NULL, 0, out, &ts, &ts_len));
    assert_string_equal(out, tp);
    reqtrace_end(&r, &h, NULL, NULL);
    assert_int_equal(tel->metrics.db[0].h.count, 1);
    histogram_free(&h);
    telemetry_free(tel);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_describe_records_then_shapes),
        cmocka_unit_test(test_cache_key),
        cmocka_unit_test(test_untraced),
    };
    return cmocka_run_group_tests_name("reqtrace", tests, NULL, NULL);
}
