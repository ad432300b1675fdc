/* otlp_metrics.h: metrics to an OTLP ExportMetricsServiceRequest. Pure:
 * no I/O. */
#ifndef FERRY_OTLP_METRICS_H
#define FERRY_OTLP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbuf.h"
#include "histogram.h"
#include "otlp_pb.h"

enum otlp_metric_type { OM_SUM, OM_GAUGE, OM_HISTOGRAM };

struct otlp_point {
    struct otlp_kv attrs[3];
    size_t nattrs;
    int64_t value;                /* OM_SUM, OM_GAUGE */
    const struct histogram *hist; /* OM_HISTOGRAM */
};

struct otlp_metric {
    const char *name, *description, *unit;
    enum otlp_metric_type type;
    bool monotonic;
    const struct otlp_point *points;
    size_t npoints;
};

/* Appends an ExportMetricsServiceRequest of m[0..n), cumulative since
 * start_ns, to out. */
void otlp_metrics_encode(const struct otlp_resource *r, const struct otlp_metric *m, size_t n,
                         const double *bounds, size_t nbounds, uint64_t start_ns, uint64_t now_ns,
                         struct cbuf *out);

#endif
