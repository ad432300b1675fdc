/* otlp_http.h: POSTing OTLP bodies with libcurl's multi interface, driven
 * by the libuv loop (uv_poll for curl's sockets, a uv_timer for curl's
 * timer), so nothing blocks the loop, DNS included (curl resolves on its
 * own thread). Retries 429, 502, 503, 504 and transport errors with
 * exponential backoff and jitter, honouring Retry-After as a minimum (at
 * most 5 minutes); anything else is final, and so is a response of more
 * than 64 KiB, which is cut off. */
#ifndef FERRY_OTLP_HTTP_H
#define FERRY_OTLP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cbuf.h"

struct otlp_body;
struct otlp_http;
struct otlp_signal;
struct tel_settings;

/* Called once per POST when it finally succeeds (ok) or is given up. */
typedef void (*otlp_http_done)(void *arg, bool ok, size_t items, bool traces);

/* Returns NULL when libcurl cannot be loaded (the error is logged). */
struct otlp_http *otlp_http_new(uv_loop_t *loop, const struct tel_settings *set, otlp_http_done done,
                                void *arg);
/* Queues body (taken) for sig's endpoint, with its headers, CA and
 * timeout (Content-Encoding: gzip when body->gzip). items is what it
 * carries (spans or data points), reported back through done.
 * deadline_ms bounds retries. */
void otlp_http_post(struct otlp_http *h, const struct otlp_signal *sig, struct otlp_body *body, size_t items,
                    bool traces, uint64_t deadline_ms);
/* POSTs queued or in flight. */
size_t otlp_http_pending(const struct otlp_http *h);
/* For the last exports at shutdown: POSTs waiting for a retry go now, and
 * from here on a POST that fails is given up rather than retried, so
 * nobody waits out a backoff (or a collector that is not there). */
void otlp_http_last_try(struct otlp_http *h);
/* An empty body to build the next batch in, with the memory of a body
 * already sent when there is one. */
void otlp_http_buffer(struct otlp_http *h, struct otlp_body *b);
/* Gives up what is left and closes every handle; closed runs after, and
 * then otlp_http_free. */
void otlp_http_close(struct otlp_http *h, void (*closed)(void *arg), void *arg);
void otlp_http_free(struct otlp_http *h);

#endif
