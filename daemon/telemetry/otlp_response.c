/* otlp_response.c: see otlp_response.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opentelemetry/proto/collector/metrics/v1/metrics_service.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "otlp_response.h"

long otlp_response_retry_after(const char *v, size_t n, time_t now,
                               time_t (*getdate)(const char *date, const time_t *now))
{
    char buf[128];
    size_t m = n < sizeof(buf) - 1 ? n : sizeof(buf) - 1;
    memcpy(buf, v, m);
    buf[m] = '\0';
    char *s = buf;
    while (*s == ' ')
        s++;
    s[strcspn(s, "\r\n")] = '\0';
    char *end;
    long secs = strtol(s, &end, 10); /* LONG_MAX when it does not fit */
    long wait = -1;
    if (end != s && *end == '\0') {
        wait = secs < 0 ? 0 : secs;
    } else if (getdate) {
        time_t when = getdate(s, NULL);
        if (when > 0)
            wait = when > now ? (long)(when - now) : 0;
    }
    return wait > OTLP_RETRY_AFTER_MAX_S ? OTLP_RETRY_AFTER_MAX_S : wait;
}

bool otlp_response_partial(bool traces, const uint8_t *p, size_t n, long long *rejected, char *msg, size_t len)
{
    bool partial = false;
    if (traces) {
        Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r =
            opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(NULL, n, p);
        if (!r)
            return false;
        if (r->partial_success && (r->partial_success->rejected_spans || r->partial_success->error_message[0])) {
            partial = true;
            *rejected = (long long)r->partial_success->rejected_spans;
            snprintf(msg, len, "%s", r->partial_success->error_message);
        }
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(r, NULL);
    } else {
        Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceResponse *r =
            opentelemetry__proto__collector__metrics__v1__export_metrics_service_response__unpack(NULL, n, p);
        if (!r)
            return false;
        if (r->partial_success && (r->partial_success->rejected_data_points || r->partial_success->error_message[0])) {
            partial = true;
            *rejected = (long long)r->partial_success->rejected_data_points;
            snprintf(msg, len, "%s", r->partial_success->error_message);
        }
        opentelemetry__proto__collector__metrics__v1__export_metrics_service_response__free_unpacked(r, NULL);
    }
    return partial;
}
