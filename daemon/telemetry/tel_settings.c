/* tel_settings.c: telemetry's settings from the standard OTEL_*
 * environment variables, so ferryd behaves like any OpenTelemetry SDK,
 * and the resource that describes this process. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "tel_settings.h"
#include "trace_context.h"

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

void tel_settings_read(struct tel_settings *s)
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
    struct tel_resource *t = ctx;
    char *key = t->text + t->used;
    memcpy(key, k, strlen(k) + 1);
    char *dec = key + strlen(k) + 1;
    size_t d = url_decode(v, dec, strlen(v) + 1);
    t->used += strlen(k) + 1 + d + 1;
    size_t slot = t->n;
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->kv[i].key, key))
            slot = i;
    if (slot == t->n) {
        if (t->n == TEL_MAX_RESOURCE)
            return false;
        t->n++;
    }
    t->kv[slot] = (struct otlp_kv){key, dec, 0};
    return true;
}

/* service.name, service.version, service.instance.id, host.name,
 * process.pid, then OTEL_RESOURCE_ATTRIBUTES (which may override them). */
void tel_settings_resource(struct tel_resource *t)
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
    t->text = xmalloc(cap);
    size_t used = 0;
#define KEEP(str)                                                      \
    ({                                                                 \
        size_t n_ = strlen(str) + 1;                                   \
        char *p_ = memcpy(t->text + used, (str), n_);         \
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
        t->kv[t->n++] = base[i];
    t->used = used;
    if (extra)
        each_pair(extra, add_resource, t);
#undef KEEP
}

void tel_settings_resource_free(struct tel_resource *t)
{
    free(t->text);
    t->text = NULL;
    t->n = 0;
}
