/* telemetry.c: see telemetry.h. Settings come from the standard OTEL_*
 * environment variables, so ferryd behaves like any OpenTelemetry SDK. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "config.h"
#include "errors.h"
#include "log.h"
#include "otlp_encode.h"
#include "otlp_http.h"
#include "server.h"
#include "telemetry.h"

#define MAX_RESOURCE 64
#define MAX_DB_OPS 64
#define MAX_SHAPES 1024
#define SHAPE_BUCKETS 256
/* How long the last exports are waited for at shutdown. They are tried
 * once (otlp_http_last_try): a collector that is not there refuses at
 * once, and this bounds one that takes the POST and never answers, so
 * that ferryd exits within drain_timeout_ms and this after a SIGTERM. */
#define STOP_FLUSH_MS 3000

struct db_hist {
    char system[16];
    char operation[32];
    struct histogram h;
};

struct telemetry {
    struct server *srv;                 /* refers */
    struct telemetry_settings set;
    struct otlp_kv resource[MAX_RESOURCE];
    size_t nresource;
    char *resource_text;                /* owns the strings resource points to */
    size_t resource_used;               /* bytes of resource_text in use */

    struct span *pool;                  /* owns: set.bsp_queue records */
    struct span_data *pool_data;        /* owns: their data, pool[i].d == &pool_data[i] */
    size_t pool_fresh;                  /* records [pool_fresh, bsp_queue) never used yet */
    /* Arrays of pointers rather than lists through the records, so that
     * queueing and releasing a span do not touch it again. */
    struct span **free_spans;           /* owns: records used and given back, a stack */
    size_t nfree;
    /* Ended spans are added at once to the current batch (see
     * "batches" in otlp_encode.c) and their records given back; a full
     * batch is sealed, and sent on the next loop iteration. */
    struct otlp_span_batch cur;         /* owns */
    bool cur_open;
    struct sealed_batch {
        struct otlp_body body;          /* owns */
        size_t n;
    } *sealed;                          /* owns: bsp_queue / bsp_batch + 1 entries */
    size_t nsealed;
    size_t queued;                      /* ended spans not yet handed to the exporter, < bsp_queue */
    uint64_t spans_dropped, export_failures, spans_exported;
    uint64_t exporting; /* spans handed to the exporter, not yet answered */

    double *bounds;                     /* owns: duration buckets, seconds */
    size_t nbounds;
    struct db_hist db[MAX_DB_OPS];
    size_t ndb;
    uint64_t start_unix_ns;
    /* Unix time minus uv_hrtime(): spans are timed with the monotonic
     * readings requests take anyway (a clock_gettime per span end showed
     * in a traced request's cost), anchored to the wall clock,
     * re-read with every export so the wall clock's adjustments reach
     * the spans. */
    uint64_t mono_to_unix;

    struct span_shape *shapes[SHAPE_BUCKETS]; /* owns: interned shapes, chained */
    size_t nshapes;

    uv_timer_t bsp_timer, metric_timer, stop_timer;
    struct otlp_http *http;             /* owns; NULL unless an exporter is otlp */
    struct otlp_span_cache *span_cache; /* owns */
    bool started, stopping, closed;
    int open_handles;
    uint64_t stop_deadline;             /* uv_now() ms: stop waiting for exports */
};

/* ---- settings ---- */

static const char *env(const char *name) { return getenv(name); }

static uint64_t env_ms(const char *name, uint64_t def)
{
    const char *v = env(name);
    if (!v || !*v)
        return def;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*end || n < 0) {
        log_warn("%s: '%s' is not a number of milliseconds; using %llu", name, v, (unsigned long long)def);
        return def;
    }
    return (uint64_t)n;
}

static enum exporter parse_exporter(const char *name, const char *v)
{
    if (!v || !*v || !strcmp(v, "otlp"))
        return EXP_OTLP;
    if (!strcmp(v, "console"))
        return EXP_CONSOLE;
    if (!strcmp(v, "none"))
        return EXP_NONE;
    log_warn("%s: unknown exporter '%s'; using none", name, v);
    return EXP_NONE;
}

/* OTEL_EXPORTER_OTLP_<SIGNAL>_<KEY>, else OTEL_EXPORTER_OTLP_<KEY>. */
static const char *otlp_env(const char *signal, const char *key)
{
    char name[96];
    snprintf(name, sizeof(name), "OTEL_EXPORTER_OTLP_%s_%s", signal, key);
    const char *v = env(name);
    if (v && *v)
        return v;
    snprintf(name, sizeof(name), "OTEL_EXPORTER_OTLP_%s", key);
    v = env(name);
    return v && *v ? v : NULL;
}

static void endpoint(char *out, size_t n, const char *signal, const char *path)
{
    char name[96];
    snprintf(name, sizeof(name), "OTEL_EXPORTER_OTLP_%s_ENDPOINT", signal);
    const char *v = env(name);
    if (v && *v) { /* a per-signal endpoint is used exactly as given */
        snprintf(out, n, "%s", v);
        return;
    }
    v = env("OTEL_EXPORTER_OTLP_ENDPOINT");
    if (!v || !*v)
        v = "http://localhost:4318";
    size_t l = strlen(v);
    snprintf(out, n, "%.*s%s", (int)(l && v[l - 1] == '/' ? l - 1 : l), v, path);
}

/* Percent-decodes v into out (cap bytes, NUL included); returns the
 * length. Header and resource values are URL-encoded by the spec. */
static size_t url_decode(const char *v, char *out, size_t cap)
{
    size_t d = 0;
    for (size_t i = 0; v[i] && d < cap - 1; i++) {
        if (v[i] == '%' && isxdigit((unsigned char)v[i + 1]) && isxdigit((unsigned char)v[i + 2])) {
            char hex[3] = {v[i + 1], v[i + 2], 0};
            out[d++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[d++] = v[i];
        }
    }
    out[d] = '\0';
    return d;
}

/* Calls fn for each "k=v" of a "k=v,k=v" list (OTEL_EXPORTER_OTLP_HEADERS,
 * OTEL_RESOURCE_ATTRIBUTES), with the key trimmed and the value still
 * URL-encoded; stops when fn returns false. */
static void each_pair(const char *spec, bool (*fn)(void *ctx, const char *k, const char *v), void *ctx)
{
    char *copy = xstrdup(spec);
    for (char *save = NULL, *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            continue;
        *eq = '\0';
        char *k = kv;
        while (isspace((unsigned char)*k))
            k++;
        if (!fn(ctx, k, eq + 1))
            break;
    }
    free(copy);
}

struct header_text {
    char *out;
    size_t n, used;
};

static bool add_header(void *ctx, const char *k, const char *v)
{
    struct header_text *h = ctx;
    char dec[512];
    url_decode(v, dec, sizeof(dec));
    int w = snprintf(h->out + h->used, h->n - h->used, "%s%s: %s", h->used ? "\n" : "", k, dec);
    if (w < 0 || (size_t)w >= h->n - h->used)
        return false;
    h->used += (size_t)w;
    return true;
}

/* OTEL_EXPORTER_OTLP_HEADERS: "k=v,k=v", values URL-encoded, into "k: v"
 * lines. */
static void parse_headers(const char *spec, char *out, size_t n)
{
    out[0] = '\0';
    struct header_text h = {out, n, 0};
    if (spec)
        each_pair(spec, add_header, &h);
}

static void read_signal(struct otlp_signal *o, const char *signal, const char *path)
{
    endpoint(o->url, sizeof(o->url), signal, path);
    parse_headers(otlp_env(signal, "HEADERS"), o->headers, sizeof(o->headers));
    const char *ca = otlp_env(signal, "CERTIFICATE");
    snprintf(o->ca_file, sizeof(o->ca_file), "%s", ca ? ca : "");
    const char *comp = otlp_env(signal, "COMPRESSION");
    o->gzip = comp && !strcmp(comp, "gzip");
    const char *to = otlp_env(signal, "TIMEOUT");
    o->timeout_ms = to ? strtoull(to, NULL, 10) : 10000;
    if (!o->timeout_ms)
        o->timeout_ms = 10000;
}

static void read_settings(struct telemetry_settings *s)
{
    memset(s, 0, sizeof(*s));
    const char *v = env("OTEL_SDK_DISABLED");
    s->disabled = v && !strcasecmp(v, "true");
    v = env("OTEL_TRACES_SAMPLER");
    s->sampler = SAMPLE_PB_ON;
    s->ratio = 1.0;
    if (v && *v) {
        if (!strcmp(v, "always_on")) s->sampler = SAMPLE_ON;
        else if (!strcmp(v, "always_off")) s->sampler = SAMPLE_OFF;
        else if (!strcmp(v, "traceidratio")) s->sampler = SAMPLE_RATIO;
        else if (!strcmp(v, "parentbased_always_on")) s->sampler = SAMPLE_PB_ON;
        else if (!strcmp(v, "parentbased_always_off")) s->sampler = SAMPLE_PB_OFF;
        else if (!strcmp(v, "parentbased_traceidratio")) s->sampler = SAMPLE_PB_RATIO;
        else log_warn("OTEL_TRACES_SAMPLER: unknown sampler '%s'; using parentbased_always_on", v);
    }
    v = env("OTEL_TRACES_SAMPLER_ARG");
    if (v && *v && (s->sampler == SAMPLE_RATIO || s->sampler == SAMPLE_PB_RATIO)) {
        char *end;
        double r = strtod(v, &end);
        if (*end || r < 0 || r > 1)
            log_warn("OTEL_TRACES_SAMPLER_ARG: '%s' is not a ratio in 0..1; using 1", v);
        else
            s->ratio = r;
    }
    s->traces = parse_exporter("OTEL_TRACES_EXPORTER", env("OTEL_TRACES_EXPORTER"));
    s->metrics = parse_exporter("OTEL_METRICS_EXPORTER", env("OTEL_METRICS_EXPORTER"));
    read_signal(&s->traces_otlp, "TRACES", "/v1/traces");
    read_signal(&s->metrics_otlp, "METRICS", "/v1/metrics");
    s->bsp_delay_ms = env_ms("OTEL_BSP_SCHEDULE_DELAY", 5000);
    s->bsp_export_timeout_ms = env_ms("OTEL_BSP_EXPORT_TIMEOUT", 30000);
    s->bsp_queue = (size_t)env_ms("OTEL_BSP_MAX_QUEUE_SIZE", 2048);
    s->bsp_batch = (size_t)env_ms("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512);
    if (s->bsp_queue < 1)
        s->bsp_queue = 1;
    if (s->bsp_batch < 1 || s->bsp_batch > s->bsp_queue)
        s->bsp_batch = s->bsp_queue;
    s->metric_interval_ms = env_ms("OTEL_METRIC_EXPORT_INTERVAL", 60000);
    if (s->metric_interval_ms < 10)
        s->metric_interval_ms = 10;
    s->metric_timeout_ms = env_ms("OTEL_METRIC_EXPORT_TIMEOUT", 30000);
}

/* One OTEL_RESOURCE_ATTRIBUTES entry, decoded into resource_text; a key
 * given twice (or one of ferryd's own) takes the later value. */
static bool add_resource(void *ctx, const char *k, const char *v)
{
    struct telemetry *t = ctx;
    char *key = t->resource_text + t->resource_used;
    memcpy(key, k, strlen(k) + 1);
    char *dec = key + strlen(k) + 1;
    size_t d = url_decode(v, dec, strlen(v) + 1);
    t->resource_used += strlen(k) + 1 + d + 1;
    size_t slot = t->nresource;
    for (size_t i = 0; i < t->nresource; i++)
        if (!strcmp(t->resource[i].key, key))
            slot = i;
    if (slot == t->nresource) {
        if (t->nresource == MAX_RESOURCE)
            return false;
        t->nresource++;
    }
    t->resource[slot] = (struct otlp_kv){key, dec, 0};
    return true;
}

/* service.name, service.version, service.instance.id, host.name,
 * process.pid, then OTEL_RESOURCE_ATTRIBUTES (which may override them). */
static void build_resource(struct telemetry *t)
{
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    uint8_t id[16];
    trace_random_id(id, sizeof(id));
    char inst[40];
    snprintf(inst, sizeof(inst), "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", id[0],
             id[1], id[2], id[3], id[4], id[5], (id[6] & 0x0f) | 0x40, id[7], (id[8] & 0x3f) | 0x80, id[9], id[10],
             id[11], id[12], id[13], id[14], id[15]);
    const char *svc = env("OTEL_SERVICE_NAME");
    const char *extra = env("OTEL_RESOURCE_ATTRIBUTES");
    size_t cap = 1024 + (extra ? strlen(extra) * 2 : 0);
    t->resource_text = xmalloc(cap);
    size_t used = 0;
#define KEEP(str)                                                      \
    ({                                                                 \
        size_t n_ = strlen(str) + 1;                                   \
        char *p_ = memcpy(t->resource_text + used, (str), n_);         \
        used += n_;                                                    \
        p_;                                                            \
    })
    struct otlp_kv base[] = {
        {"service.name", KEEP(svc && *svc ? svc : "ferryd"), 0},
        {"service.version", FERRY_VERSION, 0},
        {"service.instance.id", KEEP(inst), 0},
        {"host.name", KEEP(host), 0},
        {"process.pid", NULL, (int64_t)getpid()},
        {"telemetry.sdk.name", "ferryd", 0},
        {"telemetry.sdk.version", FERRY_VERSION, 0},
    };
    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        t->resource[t->nresource++] = base[i];
    t->resource_used = used;
    if (extra)
        each_pair(extra, add_resource, t);
#undef KEEP
}

static int parse_buckets(struct telemetry *t, const char *spec, char *err, size_t errlen)
{
    t->bounds = xmalloc(HISTOGRAM_MAX_BOUNDS * sizeof(double));
    if (histogram_parse_bounds(spec, t->bounds, HISTOGRAM_MAX_BOUNDS, &t->nbounds) != 0) {
        snprintf(err, errlen, "key 'duration_buckets': '%s' must be up to 64 increasing numbers of seconds", spec);
        return -1;
    }
    return 0;
}

static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int telemetry_init(struct telemetry **out, struct server *s, char *err, size_t errlen)
{
    struct telemetry *t = xcalloc(1, sizeof(*t));
    t->srv = s;
    read_settings(&t->set);
    if (parse_buckets(t, s->cfg.duration_buckets, err, errlen) != 0) {
        free(t->bounds);
        free(t);
        return -1;
    }
    build_resource(t);
    /* The pool is reserved, not touched: records are handed out in order
     * the first time, so pages are paid for only when spans are recorded,
     * and an idle daemon stays small. */
    t->pool = xcalloc(t->set.bsp_queue, sizeof(struct span));
    t->pool_data = xcalloc(t->set.bsp_queue, sizeof(struct span_data));
    t->pool_fresh = 0;
    t->free_spans = xcalloc(t->set.bsp_queue, sizeof(*t->free_spans));
    t->sealed = xcalloc(t->set.bsp_queue / t->set.bsp_batch + 1, sizeof(*t->sealed));
    t->start_unix_ns = unix_ns();
    t->mono_to_unix = t->start_unix_ns - uv_hrtime();
    *out = t;
    return 0;
}

const struct telemetry_settings *telemetry_settings(const struct telemetry *t) { return &t->set; }
void telemetry_counts(const struct telemetry *t, struct telemetry_counts *c)
{
    c->spans_queued = t->queued + t->exporting;
    c->spans_exported = t->spans_exported;
    c->spans_dropped = t->spans_dropped;
    c->export_failures = t->export_failures;
}

/* ---- histograms ---- */

void telemetry_request_done(struct telemetry *t, struct op *op, uint64_t duration_ns)
{
    if (!op->duration.counts)
        histogram_init(&op->duration, t->nbounds);
    histogram_record(&op->duration, t->bounds, t->nbounds, (double)duration_ns / 1e9);
}

void telemetry_db_operation(struct telemetry *t, const char *system, const char *operation, uint64_t duration_ns)
{
    struct db_hist *d = NULL;
    for (size_t i = 0; i < t->ndb && !d; i++)
        if (!strcmp(t->db[i].system, system) && !strcmp(t->db[i].operation, operation))
            d = &t->db[i];
    if (!d) {
        /* Command names come from clients: past MAX_DB_OPS distinct ones,
         * the rest share "_OTHER", so cardinality stays bounded. */
        if (t->ndb >= MAX_DB_OPS - 1)
            operation = "_OTHER";
        for (size_t i = 0; i < t->ndb && !d; i++)
            if (!strcmp(t->db[i].system, system) && !strcmp(t->db[i].operation, operation))
                d = &t->db[i];
        if (!d) {
            d = &t->db[t->ndb++];
            snprintf(d->system, sizeof(d->system), "%s", system);
            snprintf(d->operation, sizeof(d->operation), "%s", operation);
            histogram_init(&d->h, t->nbounds);
        }
    }
    histogram_record(&d->h, t->bounds, t->nbounds, (double)duration_ns / 1e9);
}

/* ---- spans ---- */

static bool sample_root(const struct telemetry *t, const uint8_t *trace_id)
{
    switch (t->set.sampler) {
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
        return (double)x < t->set.ratio * 18446744073709551616.0;
    }
    }
    return true;
}

/* late: the span of a request admitted to tracing before telemetry began
 * stopping, recorded only now (telemetry_span_on_demand). */
static struct span *span_begin(struct telemetry *t, const char *tp, size_t tp_len, const char *ts, size_t ts_len,
                               enum span_kind kind, const char *name, uint64_t mono_ns, bool late)
{
    if (!t || t->set.disabled || t->set.traces == EXP_NONE || (t->stopping && !late))
        return NULL;
    struct trace_ctx parent;
    bool has_parent = tp && trace_ctx_parse(tp, tp_len, &parent);
    bool sampled;
    uint8_t trace_id[16], span_id[8];
    if (has_parent) {
        memcpy(trace_id, parent.trace_id, 16);
        bool parent_sampled = parent.flags & 1;
        if (t->set.sampler == SAMPLE_ON || t->set.sampler == SAMPLE_OFF || t->set.sampler == SAMPLE_RATIO)
            sampled = sample_root(t, trace_id);
        else
            sampled = parent_sampled;
    } else {
        trace_new_ids(trace_id, span_id);
        sampled = sample_root(t, trace_id);
    }
    if (!sampled)
        return NULL;
    if (t->queued >= t->set.bsp_queue) { /* the specification's full queue: new spans are dropped */
        t->spans_dropped++;
        return NULL;
    }
    struct span *s;
    if (t->nfree) {
        s = t->free_spans[--t->nfree];
        /* The pool is megabytes: fetch the next request's record now, so
         * that writing it then does not wait on memory (that wait was
         * two thirds of this function, measured with perf). */
        if (t->nfree) {
            const char *next = (const char *)t->free_spans[t->nfree - 1];
            __builtin_prefetch(next, 1);
            __builtin_prefetch(next + 64, 1);
        }
    } else if (t->pool_fresh < t->set.bsp_queue) {
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

struct span *telemetry_span_start(struct telemetry *t, const char *tp, size_t tp_len, const char *ts,
                                  size_t ts_len, enum span_kind kind, const char *name, uint64_t mono_ns)
{
    return span_begin(t, tp, tp_len, ts, ts_len, kind, name, mono_ns, false);
}

struct span *telemetry_span_on_demand(struct telemetry *t, const char *name, uint64_t mono_ns)
{
    return span_begin(t, NULL, 0, NULL, 0, SK_SERVER, name, mono_ns, true);
}

void span_set_name(struct span *s, const char *fmt, ...)
{
    span_materialize(s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->d->name, sizeof(s->d->name), fmt, ap);
    va_end(ap);
    s->name = s->d->name;
}

void span_copy_name(struct span *s, const char *name, size_t n)
{
    span_materialize(s);
    if (n >= sizeof(s->d->name))
        n = sizeof(s->d->name) - 1;
    memcpy(s->d->name, name, n);
    s->d->name[n] = '\0';
    s->name = s->d->name;
}

/* Appends an attribute. Each key is set at most once per span (every
 * caller names its attributes once), so there is no search for an earlier
 * value: spans are recorded on the request path. */
static struct span_attr *attr_slot(struct span *s, const char *key)
{
    span_materialize(s);
    if (s->nattrs == SPAN_MAX_ATTRS)
        return NULL;
    struct span_attr *a = &s->d->attrs[s->nattrs++];
    a->key = key;
    return a;
}

void span_attr_str(struct span *s, const char *key, const char *v, size_t n)
{
    span_materialize(s);
    size_t room = (size_t)SPAN_ARENA - s->arena_used;
    if (n > room)
        n = room;
    struct span_attr *a = attr_slot(s, key);
    if (!a)
        return;
    a->type = SA_STR;
    a->off = s->arena_used;
    a->len = (uint16_t)n;
    memcpy(s->d->arena + s->arena_used, v, n);
    s->arena_used += (uint16_t)n;
}

void span_attr_cstr(struct span *s, const char *key, const char *v) { span_attr_str(s, key, v, strlen(v)); }

void span_attr_int(struct span *s, const char *key, int64_t v)
{
    struct span_attr *a = attr_slot(s, key);
    if (a) {
        a->type = SA_INT;
        a->i = v;
    }
}

void span_attr_bool(struct span *s, const char *key, bool v)
{
    struct span_attr *a = attr_slot(s, key);
    if (a) {
        a->type = SA_BOOL;
        a->i = v;
    }
}

/* ---- shapes ---- */

struct span_shape {
    struct span_shape *next;  /* in its bucket */
    uint64_t hash;
    uint8_t kind, nattrs;
    uint16_t arena_used;
    char name[SPAN_NAME_MAX];
    struct span_attr attrs[SPAN_MAX_ATTRS];
    char arena[];             /* arena_used bytes */
};

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x9e3779b97f4a7c15ull; }

static uint64_t shape_hash(const struct span *s)
{
    uint64_t h = mix(0x243f6a8885a308d3ull, (uint64_t)s->kind << 8 | s->nattrs);
    for (const char *p = s->name; *p; p++)
        h = mix(h, (uint8_t)*p);
    for (size_t i = 0; i < s->nattrs; i++) {
        const struct span_attr *a = &s->d->attrs[i];
        h = mix(h, (uint64_t)(uintptr_t)a->key ^ a->type);
        h = mix(h, a->type == SA_STR ? a->len : (uint64_t)a->i);
    }
    for (size_t i = 0; i < s->arena_used; i++)
        h = mix(h, (uint8_t)s->d->arena[i]);
    return h ^ h >> 29;
}

/* Keys are static strings: the same key is the same pointer. */
static bool shape_equal(const struct span_shape *sh, const struct span *s)
{
    if (sh->kind != s->kind || sh->nattrs != s->nattrs || sh->arena_used != s->arena_used ||
        strcmp(sh->name, s->name) || memcmp(sh->arena, s->d->arena, s->arena_used))
        return false;
    for (size_t i = 0; i < s->nattrs; i++) {
        const struct span_attr *a = &sh->attrs[i], *b = &s->d->attrs[i];
        if (a->key != b->key || a->type != b->type || a->off != b->off || a->len != b->len ||
            (a->type != SA_STR && a->i != b->i))
            return false;
    }
    return true;
}

const struct span_shape *telemetry_shape(struct telemetry *t, const struct span *s)
{
    if (s->shape)
        return s->shape;
    uint64_t h = shape_hash(s);
    struct span_shape **b = &t->shapes[h % SHAPE_BUCKETS];
    for (struct span_shape *sh = *b; sh; sh = sh->next)
        if (sh->hash == h && shape_equal(sh, s))
            return sh;
    /* Bounded: names and attributes can come from clients. Past the
     * bound, spans carry their attributes themselves. */
    if (t->nshapes == MAX_SHAPES)
        return NULL;
    struct span_shape *sh = xcalloc(1, sizeof(*sh) + s->arena_used);
    sh->hash = h;
    sh->kind = s->kind;
    sh->nattrs = s->nattrs;
    sh->arena_used = s->arena_used;
    snprintf(sh->name, sizeof(sh->name), "%s", s->name);
    memcpy(sh->attrs, s->d->attrs, s->nattrs * sizeof(sh->attrs[0]));
    memcpy(sh->arena, s->d->arena, s->arena_used);
    sh->next = *b;
    *b = sh;
    t->nshapes++;
    return sh;
}

void span_use_shape(struct span *s, const struct span_shape *shape)
{
    s->shape = shape;
    s->kind = shape->kind;
    s->nattrs = 0;
    s->arena_used = 0;
}

void span_materialize(struct span *s)
{
    const struct span_shape *sh = s->shape;
    if (!sh)
        return;
    s->shape = NULL;
    s->kind = sh->kind;
    memcpy(s->d->name, sh->name, sizeof(s->d->name));
    s->name = s->d->name;
    s->nattrs = sh->nattrs;
    memcpy(s->d->attrs, sh->attrs, sh->nattrs * sizeof(sh->attrs[0]));
    s->arena_used = sh->arena_used;
    memcpy(s->d->arena, sh->arena, sh->arena_used);
}

void span_traceparent(const struct span *s, char out[TRACEPARENT_LEN + 1]) { trace_ctx_format(&s->ctx, out); }

static void on_bsp_timer(uv_timer_t *h);
static bool print_span(struct span *s);
static void release(struct telemetry *t, struct span *s);
static void seal(struct telemetry *t);

/* Begins the current batch unless one is open. */
static void open_batch(struct telemetry *t)
{
    if (t->cur_open)
        return;
    struct otlp_resource r = {t->resource, t->nresource};
    struct otlp_body mem;
    otlp_http_buffer(t->http, &mem);
    if (!t->span_cache)
        t->span_cache = otlp_span_cache_new();
    otlp_batch_begin(&r, &t->cur, &mem);
    t->cur_open = true;
}

/* Counts a span added to the current batch. A full batch goes out on the
 * next loop iteration, not inside this request's completion. */
static void added(struct telemetry *t)
{
    t->queued++;
    if (t->cur.body.ne == t->set.bsp_batch) {
        seal(t);
        if (t->started && !t->stopping && t->nsealed == 1)
            uv_timer_start(&t->bsp_timer, on_bsp_timer, 0, 0);
    }
}

void telemetry_span_end(struct telemetry *t, struct span *s, uint64_t mono_ns, const char *error_type,
                        const char *message)
{
    s->end_ns = mono_ns + t->mono_to_unix;
    if (s->end_ns < s->start_ns) /* the wall clock was stepped back between the two */
        s->end_ns = s->start_ns;
    if (error_type) {
        s->error = true;
        snprintf(s->d->status_msg, sizeof(s->d->status_msg), "%s", message ? message : error_type);
        span_attr_cstr(s, "error.type", error_type);
    }
    if (t->set.traces == EXP_CONSOLE) {
        /* Counted as the OTLP exporter counts, so stats tells the same. */
        if (print_span(s)) {
            t->spans_exported++;
        } else {
            t->export_failures++;
            t->spans_dropped++;
        }
    } else if (!t->http || t->queued >= t->set.bsp_queue) {
        /* No exporter (yet, or any more), or the queue filled while this
         * request ran: telemetry_span_start checks it too, but requests
         * started before then end after. */
        t->spans_dropped++;
    } else {
        open_batch(t);
        otlp_batch_add(t->span_cache, &t->cur, s);
        added(t);
    }
    release(t, s);
}

bool telemetry_on_demand(const struct telemetry *t)
{
    return t && !t->set.disabled && t->set.traces == EXP_OTLP && !t->stopping;
}

/* The shape has no template (yet): a record on the stack, as
 * telemetry_span_start would have made. Apart, so that the common case's
 * frame holds no record. */
static __attribute__((noinline)) void add_shaped_record(struct telemetry *t, const struct span_shape *shape,
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

void telemetry_span_shaped(struct telemetry *t, const struct span_shape *shape, uint64_t start_mono,
                           uint64_t end_mono)
{
    /* Only a ratio sampler needs the trace id to decide; otherwise the
     * ids are drawn straight into the batch. */
    uint8_t ids[24], *given = NULL;
    if (t->set.sampler != SAMPLE_ON && t->set.sampler != SAMPLE_PB_ON) {
        trace_new_ids(ids, ids + 16);
        if (!sample_root(t, ids))
            return;
        given = ids;
    }
    if (!t->http || t->queued >= t->set.bsp_queue) {
        t->spans_dropped++;
        return;
    }
    uint64_t start = start_mono + t->mono_to_unix, end = end_mono + t->mono_to_unix;
    open_batch(t);
    if (!otlp_batch_add_shaped(t->span_cache, &t->cur, shape, given, start, end))
        add_shaped_record(t, shape, given, start, end);
    added(t);
}

/* ---- exporting ---- */

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

static void release(struct telemetry *t, struct span *s)
{
    t->free_spans[t->nfree++] = s;
}

/* Closes the current batch: it waits in sealed[] for export_spans. The
 * queue bound keeps sealed[] within its bsp_queue / bsp_batch + 1 slots. */
static void seal(struct telemetry *t)
{
    struct sealed_batch *sb = &t->sealed[t->nsealed++];
    sb->n = t->cur.body.ne;
    otlp_batch_finish(&t->cur, &sb->body);
    t->cur_open = false;
}

/* Hands every sealed batch to the exporter, and with partial the
 * current one however small. */
static void export_spans(struct telemetry *t, bool partial)
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
        if (t->set.traces_otlp.gzip && otlp_body_gzip(&sb->body) != 0)
            log_warn("otlp: gzip failed; sending uncompressed");
        t->exporting += sb->n; /* before: a refused post answers at once */
        otlp_http_post(t->http, &t->set.traces_otlp, &sb->body, sb->n, true, t->set.bsp_export_timeout_ms);
    }
    t->nsealed = 0;
}

static void on_bsp_timer(uv_timer_t *h)
{
    struct telemetry *t = h->data;
    t->mono_to_unix = unix_ns() - uv_hrtime();
    /* Armed for full batches, those go; at the schedule delay, whatever
     * has ended goes. */
    export_spans(t, t->nsealed == 0);
    if (!t->stopping)
        uv_timer_start(&t->bsp_timer, on_bsp_timer, t->set.bsp_delay_ms, 0);
}

static void on_http_done(void *arg, bool ok, size_t items, bool traces)
{
    struct telemetry *t = arg;
    if (traces)
        t->exporting -= items;
    if (ok) {
        if (traces)
            t->spans_exported += items;
        return;
    }
    t->export_failures++;
    if (traces)
        t->spans_dropped += items;
}

/* ---- metrics ---- */

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

static void collect(struct telemetry *t, struct metric_sink *k)
{
    struct server *s = t->srv;
    k->n = k->npts = 0;
    add_metric(k, "ferry.requests", "Requests by op and outcome", "{request}", OM_SUM, true);
    for (size_t i = 0; i < s->ops.n; i++)
        for (int j = 0; j < NOUTCOMES; j++) {
            if (!s->ops.op[i].outcomes[j])
                continue;
            struct otlp_point *p = add_point(k);
            if (!p)
                break;
            p->attrs[0] = (struct otlp_kv){"op", s->ops.op[i].name, 0};
            p->attrs[1] = (struct otlp_kv){"outcome",
                                           j == OUTCOME_OK ? "ok" : j == OUTCOME_ABANDONED ? "abandoned" : fe_name(-j - 1), 0};
            p->nattrs = 2;
            p->value = (int64_t)s->ops.op[i].outcomes[j];
        }
    add_metric(k, "ferry.request.duration", "Time from a request's arrival to its response", "s", OM_HISTOGRAM,
               false);
    for (size_t i = 0; i < s->ops.n; i++) {
        if (!s->ops.op[i].duration.counts)
            continue;
        struct otlp_point *p = add_point(k);
        if (!p)
            break;
        p->attrs[0] = (struct otlp_kv){"op", s->ops.op[i].name, 0};
        p->nattrs = 1;
        p->hist = &s->ops.op[i].duration;
    }
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
        p->value = (int64_t)s->clients.n;
    add_metric(k, "ferry.backend.connections", "Backend connections by state", "{connection}", OM_GAUGE, false);
    struct metric_emit e = {.ctx = k, .connections = emit_connections, .counter = NULL};
    for (size_t i = 0; i < s->nbackends; i++)
        if (s->backends[i]->ops->metrics)
            s->backends[i]->ops->metrics(s->backends[i], &e);
    e.connections = NULL;
    e.counter = emit_counter;
    ncounter_rows = 0;
    for (size_t i = 0; i < s->nbackends; i++)
        if (s->backends[i]->ops->metrics)
            s->backends[i]->ops->metrics(s->backends[i], &e);
    add_counters(k);
    add_metric(k, "ferry.telemetry.spans.dropped", "Spans dropped: queue full or export failed", "{span}", OM_SUM,
               true);
    if ((p = add_point(k)))
        p->value = (int64_t)t->spans_dropped;
    add_metric(k, "ferry.telemetry.export.failures", "OTLP exports given up", "{export}", OM_SUM, true);
    if ((p = add_point(k)))
        p->value = (int64_t)t->export_failures;
}

static void export_metrics(struct telemetry *t)
{
    if (t->set.disabled || t->set.metrics == EXP_NONE)
        return;
    static struct metric_sink k; /* large; the loop is single-threaded */
    collect(t, &k);
    if (t->set.metrics == EXP_CONSOLE) {
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
    if (!t->http)
        return;
    struct otlp_resource r = {t->resource, t->nresource};
    struct cbuf bytes;
    cbuf_init(&bytes);
    otlp_encode_metrics(&r, k.m, k.n, t->bounds, t->nbounds, t->start_unix_ns, unix_ns(), &bytes);
    struct otlp_body body;
    otlp_body_from(&body, &bytes);
    if (t->set.metrics_otlp.gzip && otlp_body_gzip(&body) != 0)
        log_warn("otlp: gzip failed; sending uncompressed");
    otlp_http_post(t->http, &t->set.metrics_otlp, &body, k.npts, false, t->set.metric_timeout_ms);
}

static void on_metric_timer(uv_timer_t *h) { export_metrics(h->data); }

/* ---- lifecycle ---- */

void telemetry_start(struct telemetry *t)
{
    uv_loop_t *loop = t->srv->loop;
    uv_timer_init(loop, &t->bsp_timer);
    uv_timer_init(loop, &t->metric_timer);
    uv_timer_init(loop, &t->stop_timer);
    t->bsp_timer.data = t->metric_timer.data = t->stop_timer.data = t;
    t->open_handles = 3;
    t->started = true;
    if (t->set.disabled) {
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
    if (t->set.traces != EXP_NONE)
        uv_timer_start(&t->bsp_timer, on_bsp_timer, t->set.bsp_delay_ms, 0);
    if (t->set.metrics != EXP_NONE)
        uv_timer_start(&t->metric_timer, on_metric_timer, t->set.metric_interval_ms, t->set.metric_interval_ms);
    /* Periodic timers must not keep a draining daemon alive. */
    uv_unref((uv_handle_t *)&t->bsp_timer);
    uv_unref((uv_handle_t *)&t->metric_timer);
    log_info("telemetry: traces %s%s%s, metrics %s%s%s every %llu ms",
             t->set.traces == EXP_OTLP ? "otlp " : t->set.traces == EXP_CONSOLE ? "console" : "none",
             t->set.traces == EXP_OTLP ? t->set.traces_otlp.url : "", t->set.traces_otlp.gzip ? " (gzip)" : "",
             t->set.metrics == EXP_OTLP ? "otlp " : t->set.metrics == EXP_CONSOLE ? "console" : "none",
             t->set.metrics == EXP_OTLP ? t->set.metrics_otlp.url : "", t->set.metrics_otlp.gzip ? " (gzip)" : "",
             (unsigned long long)t->set.metric_interval_ms);
}

static void on_closed(uv_handle_t *h)
{
    struct telemetry *t = h->data;
    t->open_handles--;
}

static void http_closed(void *arg)
{
    struct telemetry *t = arg;
    otlp_http_free(t->http);
    t->http = NULL;
}

static void close_all(struct telemetry *t)
{
    if (t->closed)
        return;
    t->closed = true;
    if (t->http)
        otlp_http_close(t->http, http_closed, t);
    uv_close((uv_handle_t *)&t->bsp_timer, on_closed);
    uv_close((uv_handle_t *)&t->metric_timer, on_closed);
    uv_close((uv_handle_t *)&t->stop_timer, on_closed);
}

static void on_stop_poll(uv_timer_t *h)
{
    struct telemetry *t = h->data;
    if (t->queued && t->http) /* spans of requests that finished while draining */
        export_spans(t, true);
    if (!t->http || otlp_http_pending(t->http) == 0) {
        close_all(t);
    } else if (uv_now(t->srv->loop) >= t->stop_deadline) {
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
    uv_timer_stop(&t->bsp_timer);
    uv_timer_stop(&t->metric_timer);
    if (t->http)
        otlp_http_last_try(t->http);
    if (!t->set.disabled) {
        export_spans(t, true);
        export_metrics(t);
    }
    t->stop_deadline = uv_now(t->srv->loop) + STOP_FLUSH_MS;
    uv_timer_start(&t->stop_timer, on_stop_poll, 0, 20);
}

void telemetry_free(struct telemetry *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->ndb; i++)
        histogram_free(&t->db[i].h);
    otlp_span_cache_free(t->span_cache);
    for (size_t i = 0; i < SHAPE_BUCKETS; i++)
        while (t->shapes[i]) {
            struct span_shape *sh = t->shapes[i];
            t->shapes[i] = sh->next;
            free(sh);
        }
    free(t->pool);
    free(t->pool_data);
    free(t->free_spans);
    otlp_batch_free(&t->cur);
    for (size_t i = 0; i < t->nsealed; i++)
        otlp_body_free(&t->sealed[i].body);
    free(t->sealed);
    free(t->bounds);
    free(t->resource_text);
    free(t);
}
