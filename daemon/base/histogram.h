/* histogram.h: cumulative explicit-bucket histograms, and parsing their
 * bounds. Pure: config.c checks duration_buckets with it, telemetry.c
 * records durations with it, and neither needs the other for that. */
#ifndef FERRY_HISTOGRAM_H
#define FERRY_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

/* Cumulative explicit-bucket histogram; bounds are shared. */
struct histogram {
    uint64_t *counts;     /* owns: nbounds + 1 */
    uint64_t count;
    double sum, min, max;
};

/* Parses a duration_buckets value: up to cap increasing numbers,
 * comma-separated. Returns 0 with *n set, or -1. */
#define HISTOGRAM_MAX_BOUNDS 64
int histogram_parse_bounds(const char *spec, double *out, size_t cap, size_t *n)
    __attribute__((warn_unused_result));
void histogram_init(struct histogram *h, size_t nbounds);
void histogram_free(struct histogram *h);
void histogram_record(struct histogram *h, const double *bounds, size_t nbounds, double v);

#endif
