/* otlp_response.h: what a collector's answer says beyond its status:
 * when to retry (Retry-After) and what it refused (partial success).
 * Pure, for unit tests and fuzzing. */
#ifndef FERRY_OTLP_RESPONSE_H
#define FERRY_OTLP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Retry-After values above this are taken as this: a value of 2^61
 * seconds, in milliseconds, would wrap to 0. Longer than an export's
 * default budget (OTEL_BSP_EXPORT_TIMEOUT, 30 s), so such an export is
 * then given up at once. */
#define OTLP_RETRY_AFTER_MAX_S (5 * 60)

/* The seconds a Retry-After header's value (n bytes after the colon: a
 * number of seconds, or an HTTP date read with getdate) asks to wait,
 * capped at OTLP_RETRY_AFTER_MAX_S; -1 when it says neither. */
long otlp_response_retry_after(const char *v, size_t n, time_t now,
                               time_t (*getdate)(const char *date, const time_t *now));

/* Whether an export response (n bytes of protobuf) reports a partial
 * success: then *rejected spans (traces) or data points were refused,
 * for the reason written to msg. */
bool otlp_response_partial(bool traces, const uint8_t *p, size_t n, long long *rejected, char *msg, size_t len);

#endif
