/* request.h: one request's life, from a decoded frame to its response.
 * See request.c for the path a request takes through the files. */
#ifndef FERRY_REQUEST_H
#define FERRY_REQUEST_H

#include <stdint.h>

#include "cbuf.h"
#include "codec.h"
#include "deadline.h"
#include "list.h"
#include "reqtrace.h"

struct backend;
struct client;
struct op;

struct request {
    struct deadline deadline;   /* in the server's deadline queue */
    struct dlist client_node;   /* in client->inflight */
    struct client *client;      /* refers: the client that sent it */
    struct op *op;              /* refers: entry in the server's op table */
    uint64_t id;                /* the client's request id */
    uint64_t start_ns;          /* uv_hrtime() at arrival */
    struct req_view v;          /* fields, pointing into frame[] */

    /* Backend scratch: valid while a backend holds the request. */
    struct backend *backend;    /* refers; non-NULL while submitted */
    uint64_t bseq;              /* backend-private sequence number */
    void *bdata;                /* backend-private pointer */
    unsigned bflags;            /* backend-private flags */

    struct reqtrace trace;      /* its span and metrics, kept by telemetry */

    size_t frame_len;
    uint8_t frame[];            /* owns: a copy of the request frame body */
};

/* Decodes one frame body from c and starts the request, or answers it with
 * an error at once. */
void request_handle(struct client *c, const uint8_t *body, size_t len);

/* Completing: exactly one of these ends a request and frees it.
 *
 * request_result_begin returns the client's output buffer positioned for
 * one CBOR item (the result), which the caller appends directly, with no
 * intermediate copy; request_result_end closes the frame. */
struct cbuf *request_result_begin(struct request *r, size_t *at);
void request_result_end(struct request *r, size_t at);
void request_result(struct request *r, const uint8_t *cbor, size_t len);
void request_fail(struct request *r, int code, const char *message);

/* Ends a request with no response because its client is gone. */
void request_abandon(struct request *r);

/* The deadline queue's callback. */
void request_expired(struct deadlines *d, struct deadline *e);

#endif
