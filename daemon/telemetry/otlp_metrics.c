/* otlp_metrics.c: an ExportMetricsServiceRequest from the points
 * metrics.c gathers (otlp_metrics.h), built on the stack and packed once
 * per export. Pure: no I/O. */
#include <stdlib.h>
#include <string.h>

#include "opentelemetry/proto/collector/metrics/v1/metrics_service.pb-c.h"
#include "otlp_metrics.h"
#include "otlp_pb.h"

void otlp_metrics_encode(const struct otlp_resource *r, const struct otlp_metric *m, size_t n,
                         const double *bounds, size_t nbounds, uint64_t start_ns, uint64_t now_ns,
                         struct cbuf *out)
{
    size_t npts = 0, nkv = r->n;
    for (size_t i = 0; i < n; i++) {
        npts += m[i].npoints;
        for (size_t k = 0; k < m[i].npoints; k++)
            nkv += m[i].points[k].nattrs;
    }
    struct otlp_pb_arena a;
    otlp_pb_arena_init(&a, nkv);
    Opentelemetry__Proto__Metrics__V1__Metric *mv = xcalloc(n ? n : 1, sizeof(*mv));
    Opentelemetry__Proto__Metrics__V1__Metric **mp = xcalloc(n ? n : 1, sizeof(*mp));
    Opentelemetry__Proto__Metrics__V1__Sum *sums = xcalloc(n ? n : 1, sizeof(*sums));
    Opentelemetry__Proto__Metrics__V1__Gauge *gauges = xcalloc(n ? n : 1, sizeof(*gauges));
    Opentelemetry__Proto__Metrics__V1__Histogram *hists = xcalloc(n ? n : 1, sizeof(*hists));
    Opentelemetry__Proto__Metrics__V1__NumberDataPoint *nd = xcalloc(npts ? npts : 1, sizeof(*nd));
    Opentelemetry__Proto__Metrics__V1__NumberDataPoint **ndp = xcalloc(npts ? npts : 1, sizeof(*ndp));
    Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *hd = xcalloc(npts ? npts : 1, sizeof(*hd));
    Opentelemetry__Proto__Metrics__V1__HistogramDataPoint **hdp = xcalloc(npts ? npts : 1, sizeof(*hdp));
    size_t pi = 0;
    for (size_t i = 0; i < n; i++) {
        Opentelemetry__Proto__Metrics__V1__Metric *x = &mv[i];
        opentelemetry__proto__metrics__v1__metric__init(x);
        x->name = (char *)m[i].name;
        x->description = (char *)m[i].description;
        x->unit = (char *)m[i].unit;
        size_t first = pi;
        for (size_t k = 0; k < m[i].npoints; k++, pi++) {
            const struct otlp_point *p = &m[i].points[k];
            KeyValue **kvs = otlp_pb_take(&a, p->nattrs);
            for (size_t j = 0; j < p->nattrs; j++)
                otlp_pb_set_kv(kvs[j], &p->attrs[j]);
            if (m[i].type == OM_HISTOGRAM) {
                Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *h = &hd[pi];
                opentelemetry__proto__metrics__v1__histogram_data_point__init(h);
                h->n_attributes = p->nattrs;
                h->attributes = kvs;
                h->start_time_unix_nano = start_ns;
                h->time_unix_nano = now_ns;
                h->count = p->hist->count;
                h->sum = p->hist->sum;
                h->min = p->hist->count ? p->hist->min : 0;
                h->max = p->hist->count ? p->hist->max : 0;
                h->n_bucket_counts = nbounds + 1;
                h->bucket_counts = p->hist->counts;
                h->n_explicit_bounds = nbounds;
                h->explicit_bounds = (double *)bounds;
                hdp[pi] = h;
            } else {
                Opentelemetry__Proto__Metrics__V1__NumberDataPoint *d = &nd[pi];
                opentelemetry__proto__metrics__v1__number_data_point__init(d);
                d->n_attributes = p->nattrs;
                d->attributes = kvs;
                d->start_time_unix_nano = start_ns;
                d->time_unix_nano = now_ns;
                d->value_case = OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT;
                d->as_int = p->value;
                ndp[pi] = d;
            }
        }
        switch (m[i].type) {
        case OM_SUM:
            opentelemetry__proto__metrics__v1__sum__init(&sums[i]);
            sums[i].n_data_points = m[i].npoints;
            sums[i].data_points = &ndp[first];
            sums[i].aggregation_temporality =
                OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
            sums[i].is_monotonic = m[i].monotonic;
            x->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM;
            x->sum = &sums[i];
            break;
        case OM_GAUGE:
            opentelemetry__proto__metrics__v1__gauge__init(&gauges[i]);
            gauges[i].n_data_points = m[i].npoints;
            gauges[i].data_points = &ndp[first];
            x->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE;
            x->gauge = &gauges[i];
            break;
        case OM_HISTOGRAM:
            opentelemetry__proto__metrics__v1__histogram__init(&hists[i]);
            hists[i].n_data_points = m[i].npoints;
            hists[i].data_points = &hdp[first];
            hists[i].aggregation_temporality =
                OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
            x->data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM;
            x->histogram = &hists[i];
            break;
        }
        mp[i] = x;
    }
    Opentelemetry__Proto__Common__V1__InstrumentationScope scope;
    Opentelemetry__Proto__Resource__V1__Resource res;
    otlp_pb_scope_and_resource(&scope, &res, &a, r);
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics sm;
    opentelemetry__proto__metrics__v1__scope_metrics__init(&sm);
    sm.scope = &scope;
    sm.n_metrics = n;
    sm.metrics = mp;
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics *smp = &sm;
    Opentelemetry__Proto__Metrics__V1__ResourceMetrics rm;
    opentelemetry__proto__metrics__v1__resource_metrics__init(&rm);
    rm.resource = &res;
    rm.n_scope_metrics = 1;
    rm.scope_metrics = &smp;
    Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rmp = &rm;
    Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest req;
    opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__init(&req);
    req.n_resource_metrics = 1;
    req.resource_metrics = &rmp;
    otlp_pb_pack(&req.base, out);
    free(mv);
    free(mp);
    free(sums);
    free(gauges);
    free(hists);
    free(nd);
    free(ndp);
    free(hd);
    free(hdp);
    otlp_pb_arena_free(&a);
}

