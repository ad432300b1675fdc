/* metrics.c: see metrics.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cbuf.h"
#include "log.h"
#include "metrics.h"
#include "otlp_http.h"
#include "otlp_metrics.h"
#include "otlp_body.h"

static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int parse_buckets(struct metrics *t, const char *spec, char *err, size_t errlen)
{
    t->bounds = xmalloc(HISTOGRAM_MAX_BOUNDS * sizeof(double));
    if (histogram_parse_bounds(spec, t->bounds, HISTOGRAM_MAX_BOUNDS, &t->nbounds) != 0) {
        snprintf(err, errlen, "key 'duration_buckets': '%s' must be up to 64 increasing numbers of seconds", spec);
        return -1;
    }
    return 0;
}

void metrics_request(struct metrics *t, struct histogram *h, uint64_t duration_ns)
{
    if (!h->counts)
        histogram_init(h, t->nbounds);
    histogram_record(h, t->bounds, t->nbounds, (double)duration_ns / 1e9);
}

/* Whether d is system's operation, comparing words: both are zero padded
 * to 32 bytes. */
static bool db_is(const struct db_hist *d, const char *system, const char *operation)
{
    uint64_t a[4], b[4];
    memcpy(a, d->operation, 32);
    memcpy(b, operation, 32);
    return d->system_ptr == system && !((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]));
}

void metrics_db_operation(struct metrics *t, const char *system, const char *operation, uint64_t duration_ns)
{
    /* Most requests repeat the last operation: it is tried first. */
    struct db_hist *d = t->ndb && db_is(&t->db[t->last_db], system, operation) ? &t->db[t->last_db] : NULL;
    for (size_t i = 0; i < t->ndb && !d; i++)
        if (!strcmp(t->db[i].system, system) && !strcmp(t->db[i].operation, operation))
            d = &t->db[i];
    if (!d) {
        /* Command names come from clients: past METRICS_MAX_DB_OPS distinct ones,
         * the rest share "_OTHER", so cardinality stays bounded. */
        if (t->ndb >= METRICS_MAX_DB_OPS - 1)
            operation = "_OTHER";
        for (size_t i = 0; i < t->ndb && !d; i++)
            if (!strcmp(t->db[i].system, system) && !strcmp(t->db[i].operation, operation))
                d = &t->db[i];
        if (!d) {
            d = &t->db[t->ndb++];
            snprintf(d->system, sizeof(d->system), "%s", system);
            snprintf(d->operation, sizeof(d->operation), "%s", operation);
            d->system_ptr = system;
            histogram_init(&d->h, t->nbounds);
        }
        t->last_db = (size_t)(d - t->db);
    }
    histogram_record(&d->h, t->bounds, t->nbounds, (double)duration_ns / 1e9);
}

struct metric_sink {
    struct otlp_metric m[32];
    size_t n;
    struct otlp_point pts[1024];
    size_t npts;
};

static struct otlp_point *add_point(struct metric_sink *k)
{
    if (k->npts == sizeof(k->pts) / sizeof(k->pts[0]))
        return NULL;
    struct otlp_point *p = &k->pts[k->npts++];
    memset(p, 0, sizeof(*p));
    k->m[k->n - 1].npoints++;
    return p;
}

static void add_metric(struct metric_sink *k, const char *name, const char *desc, const char *unit,
                       enum otlp_metric_type type, bool monotonic)
{
    struct otlp_metric *m = &k->m[k->n++];
    m->name = name;
    m->description = desc;
    m->unit = unit;
    m->type = type;
    m->monotonic = monotonic;
    m->points = &k->pts[k->npts];
    m->npoints = 0;
}

/* Backend counters arrive backend by backend; they are gathered here and
 * grouped by name afterwards, one metric per name. */
struct counter_row {
    const char *name, *backend;
    uint64_t v;
};
static struct counter_row counter_rows[64];
static size_t ncounter_rows;

static void emit_counter(void *ctx, const char *backend, const char *name, uint64_t v)
{
    (void)ctx;
    if (ncounter_rows < sizeof(counter_rows) / sizeof(counter_rows[0]))
        counter_rows[ncounter_rows++] = (struct counter_row){name, backend, v};
}

static void add_counters(struct metric_sink *k)
{
    for (size_t i = 0; i < ncounter_rows; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen |= !strcmp(counter_rows[j].name, counter_rows[i].name);
        if (seen)
            continue;
        add_metric(k, counter_rows[i].name, "", "{event}", OM_SUM, true);
        for (size_t j = i; j < ncounter_rows; j++) {
            if (strcmp(counter_rows[j].name, counter_rows[i].name))
                continue;
            struct otlp_point *p = add_point(k);
            if (!p)
                return;
            p->attrs[0] = (struct otlp_kv){"backend", counter_rows[j].backend, 0};
            p->nattrs = 1;
            p->value = (int64_t)counter_rows[j].v;
        }
    }
}

static void emit_connections(void *ctx, const char *backend, const char *state, uint64_t n)
{
    struct metric_sink *k = ctx;
    struct otlp_point *p = add_point(k);
    if (p) {
        p->attrs[0] = (struct otlp_kv){"backend", backend, 0};
        p->attrs[1] = (struct otlp_kv){"state", state, 0};
        p->nattrs = 2;
        p->value = (int64_t)n;
    }
}

static void emit_node(void *ctx, const char *backend, const char *address, const char *role, bool up)
{
    struct otlp_point *p = add_point(ctx);
    if (p) {
        p->attrs[0] = (struct otlp_kv){"backend", backend, 0};
        p->attrs[1] = (struct otlp_kv){"server.address", address, 0};
        p->attrs[2] = (struct otlp_kv){"role", role, 0};
        p->nattrs = 3;
        p->value = up;
    }
}

static void emit_outcome(void *ctx, const char *op, const char *outcome, uint64_t n)
{
    struct otlp_point *p = add_point(ctx);
    if (p) {
        p->attrs[0] = (struct otlp_kv){"op", op, 0};
        p->attrs[1] = (struct otlp_kv){"outcome", outcome, 0};
        p->nattrs = 2;
        p->value = (int64_t)n;
    }
}

static void emit_duration(void *ctx, const char *op, const struct histogram *h)
{
    struct otlp_point *p = add_point(ctx);
    if (p) {
        p->attrs[0] = (struct otlp_kv){"op", op, 0};
        p->nattrs = 1;
        p->hist = h;
    }
}

static void collect(struct metrics *t, struct metric_sink *k, uint64_t spans_dropped, uint64_t export_failures)
{
    const struct metrics_source *s = &t->src;
    k->n = k->npts = 0;
    add_metric(k, "ferry.requests", "Requests by op and outcome", "{request}", OM_SUM, true);
    s->requests(s->ctx, &(struct metrics_requests){.ctx = k, .outcome = emit_outcome});
    add_metric(k, "ferry.request.duration", "Time from a request's arrival to its response", "s", OM_HISTOGRAM,
               false);
    s->requests(s->ctx, &(struct metrics_requests){.ctx = k, .duration = emit_duration});
    add_metric(k, "db.client.operation.duration", "Duration of database client operations", "s", OM_HISTOGRAM,
               false);
    for (size_t i = 0; i < t->ndb; i++) {
        struct otlp_point *p = add_point(k);
        if (!p)
            break;
        p->attrs[0] = (struct otlp_kv){"db.system.name", t->db[i].system, 0};
        p->attrs[1] = (struct otlp_kv){"db.operation.name", t->db[i].operation, 0};
        p->attrs[2] = (struct otlp_kv){"db.system", t->db[i].system, 0};
        p->nattrs = 3;
        p->hist = &t->db[i].h;
    }
    add_metric(k, "ferry.clients", "Connected clients", "{client}", OM_GAUGE, false);
    struct otlp_point *p = add_point(k);
    if (p)
        p->value = (int64_t)s->clients(s->ctx);
    add_metric(k, "ferry.backend.connections", "Backend connections by state", "{connection}", OM_GAUGE, false);
    s->backends(s->ctx, &(struct metric_emit){.ctx = k, .connections = emit_connections});
    add_metric(k, "ferry.backend.node.up", "1 while the connection to a backend's server is ready", "1", OM_GAUGE,
               false);
    s->backends(s->ctx, &(struct metric_emit){.ctx = k, .node = emit_node});
    ncounter_rows = 0;
    s->backends(s->ctx, &(struct metric_emit){.ctx = k, .counter = emit_counter});
    add_counters(k);
    add_metric(k, "ferry.telemetry.spans.dropped", "Spans dropped: queue full or export failed", "{span}", OM_SUM,
               true);
    if ((p = add_point(k)))
        p->value = (int64_t)spans_dropped;
    add_metric(k, "ferry.telemetry.export.failures", "OTLP exports given up", "{export}", OM_SUM, true);
    if ((p = add_point(k)))
        p->value = (int64_t)export_failures;
}

void metrics_export(struct metrics *t, struct otlp_http *http, uint64_t spans_dropped, uint64_t export_failures)
{
    if (t->set->disabled || t->set->metrics == EXP_NONE)
        return;
    static struct metric_sink k; /* large; the loop is single-threaded */
    collect(t, &k, spans_dropped, export_failures);
    if (t->set->metrics == EXP_CONSOLE) {
        for (size_t i = 0; i < k.n; i++)
            for (size_t j = 0; j < k.m[i].npoints; j++) {
                const struct otlp_point *p = &k.m[i].points[j];
                char attrs[256] = "";
                size_t u = 0;
                for (size_t a = 0; a < p->nattrs; a++)
                    u += (size_t)snprintf(attrs + u, sizeof(attrs) - u, "%s%s=%s", a ? "," : "", p->attrs[a].key,
                                          p->attrs[a].str ? p->attrs[a].str : "");
                char line[512];
                int n = p->hist ? snprintf(line, sizeof(line), "metric %s{%s} count=%llu sum=%.6f\n", k.m[i].name,
                                           attrs, (unsigned long long)p->hist->count, p->hist->sum)
                                : snprintf(line, sizeof(line), "metric %s{%s} %lld\n", k.m[i].name, attrs,
                                           (long long)p->value);
                if (n > 0 && (size_t)n < sizeof(line)) {
                    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
                    (void)w;
                }
            }
        return;
    }
    if (!http)
        return;
    struct cbuf bytes;
    cbuf_init(&bytes);
    otlp_metrics_encode(&t->resource, k.m, k.n, t->bounds, t->nbounds, t->start_unix_ns, unix_ns(), &bytes);
    struct otlp_body body;
    otlp_body_from(&body, &bytes);
    if (t->set->metrics_otlp.gzip && otlp_body_gzip(&body) != 0)
        log_warn("otlp: gzip failed; sending uncompressed");
    otlp_http_post(http, &t->set->metrics_otlp, &body, k.npts, false, t->set->metric_timeout_ms);
}

int metrics_init(struct metrics *t, const struct metrics_source *src, const struct tel_settings *set,
                 const struct otlp_resource *resource, const char *buckets, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->src = *src;
    t->set = set;
    t->resource = *resource;
    t->start_unix_ns = unix_ns();
    if (parse_buckets(t, buckets, err, errlen) != 0) {
        free(t->bounds);
        t->bounds = NULL;
        return -1;
    }
    return 0;
}

void metrics_free(struct metrics *t)
{
    for (size_t i = 0; i < t->ndb; i++)
        histogram_free(&t->db[i].h);
    free(t->bounds);
    t->bounds = NULL;
}
