/* tel_settings.h: telemetry's settings (OTEL_* environment variables) and
 * the OTLP resource. Read once at start; nothing here touches the loop. */
#ifndef FERRY_TEL_SETTINGS_H
#define FERRY_TEL_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "otlp_pb.h"

enum sampler { SAMPLE_ON, SAMPLE_OFF, SAMPLE_RATIO, SAMPLE_PB_ON, SAMPLE_PB_OFF, SAMPLE_PB_RATIO };
enum exporter { EXP_OTLP, EXP_CONSOLE, EXP_NONE };

/* OTLP settings of one signal: OTEL_EXPORTER_OTLP_<SIGNAL>_*, else
 * OTEL_EXPORTER_OTLP_*. */
struct otlp_signal {
    char url[512];
    char headers[1024];       /* "k: v" lines joined by \n */
    char ca_file[512];
    bool gzip;
    uint64_t timeout_ms;      /* per export request */
};

struct tel_settings {
    bool disabled;
    enum sampler sampler;
    double ratio;
    enum exporter traces, metrics;
    struct otlp_signal traces_otlp, metrics_otlp;
    uint64_t bsp_delay_ms, bsp_export_timeout_ms;
    size_t bsp_queue, bsp_batch;
    uint64_t metric_interval_ms, metric_timeout_ms;
};

/* Reads the OTEL_* environment into s; what it cannot use is logged and
 * replaced by the default. */
void tel_settings_read(struct tel_settings *s);

#define TEL_MAX_RESOURCE 64

/* The resource every export carries. */
struct tel_resource {
    struct otlp_kv kv[TEL_MAX_RESOURCE];
    size_t n;
    char *text;               /* owns the strings kv points to */
    size_t used;              /* bytes of text in use */
};
/* service.name, service.version, service.instance.id, host.name,
 * process.pid, then OTEL_RESOURCE_ATTRIBUTES (which may override them). */
void tel_settings_resource(struct tel_resource *r);
void tel_settings_resource_free(struct tel_resource *r);

#endif
