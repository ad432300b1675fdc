/* metrics.h: the daemon's metrics (request counts and durations,
 * db.client.operation.duration, clients, backend connections and
 * counters), collected and exported every OTEL_METRIC_EXPORT_INTERVAL.
 *
 * What they need from the daemon comes through struct metrics_source,
 * given at init, so telemetry never reads the daemon's own structs. */
#ifndef FERRY_METRICS_H
#define FERRY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "histogram.h"
#include "tel_settings.h"

/* Where a backend reports its metrics (metrics.c provides it, and backend.h passes it on). */
struct metric_emit {
    void *ctx;
    /* ferry.backend.connections: n connections in state; NULL when not
     * collecting this family. */
    void (*connections)(void *ctx, const char *backend, const char *state, uint64_t n);
    /* A cumulative counter, e.g. ferry.backend.reconnects; NULL when not
     * collecting this family. */
    void (*counter)(void *ctx, const char *backend, const char *name, uint64_t v);
    /* ferry.backend.node.up: one server of a backend (a cluster's node,
     * Sentinel's primary, the one Redis), 1 while ferryd's connection to it
     * is ready. address (redacted) and role must live until the export;
     * NULL when not collecting this family. */
    void (*node)(void *ctx, const char *backend, const char *address, const char *role, bool up);
};

struct otlp_http;

/* Where the daemon reports its requests, one call per op and outcome and
 * one per op's duration histogram. */
struct metrics_requests {
    void *ctx;
    /* ferry.requests: n requests of op ended with outcome ("ok",
     * "abandoned", or an error code's name); NULL when not collecting this
     * family. */
    void (*outcome)(void *ctx, const char *op, const char *outcome, uint64_t n);
    /* ferry.request.duration of op; NULL when not collecting this family. */
    void (*duration)(void *ctx, const char *op, const struct histogram *h);
};

/* What the daemon gives the metrics, at init. */
struct metrics_source {
    void *ctx;
    /* Calls v's functions for every op. */
    void (*requests)(void *ctx, const struct metrics_requests *v);
    /* Connected clients. */
    uint64_t (*clients)(void *ctx);
    /* Calls every backend's metrics emitter (backend.h) with e. */
    void (*backends)(void *ctx, const struct metric_emit *e);
};

#define METRICS_MAX_DB_OPS 64

struct metrics {
    struct metrics_source src;
    const struct tel_settings *set;     /* refers: telemetry's */
    struct otlp_resource resource;      /* refers to telemetry's resource */
    double *bounds;                     /* owns: duration buckets, seconds */
    size_t nbounds;
    struct db_hist {
        char system[16];
        char operation[32];             /* zero padded */
        const char *system_ptr;         /* refers: the system as last given */
        struct histogram h;
    } db[METRICS_MAX_DB_OPS];
    size_t ndb;
    size_t last_db;                     /* the entry found last */
    uint64_t start_unix_ns;             /* the start of the cumulative sums */
};

/* buckets is the duration_buckets setting. Returns 0, or -1 with err
 * set. */
int metrics_init(struct metrics *m, const struct metrics_source *src, const struct tel_settings *set,
                 const struct otlp_resource *resource, const char *buckets, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void metrics_free(struct metrics *m);
/* Records one request's duration in its op's histogram h. */
void metrics_request(struct metrics *m, struct histogram *h, uint64_t duration_ns);
/* Records db.client.operation.duration of system's operation: a static
 * string, and 32 bytes holding the name zero padded. */
void metrics_db_operation(struct metrics *m, const char *system, const char *operation, uint64_t duration_ns);
/* Collects and exports once: on stderr, or a POST through http. The
 * tracer's counts of dropped spans and failed exports are reported too. */
void metrics_export(struct metrics *m, struct otlp_http *http, uint64_t spans_dropped, uint64_t export_failures);

#endif
