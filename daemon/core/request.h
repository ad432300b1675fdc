/* request.h: one request's life, from a decoded frame to its response.
 * See request.c for the path a request takes through the files. */
#ifndef FERRY_REQUEST_H
#define FERRY_REQUEST_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "cbuf.h"
#include "codec.h"
#include "deadline.h"
#include "list.h"
#include "ops.h"
#include "reqtrace.h"

struct backend;
struct client;
struct config;
struct counters;
struct policy;
struct policy_set;
struct telemetry;

/* What every request needs from the daemon, and nothing more. The server
 * owns it; clients refer to it. */
struct request_ctx {
    uv_loop_t *loop;               /* refers */
    const struct config *cfg;      /* refers: the configuration in force */
    struct ops *ops;               /* refers: the op table */
    struct counters *counters;     /* refers */
    struct telemetry *tel;         /* refers */
    struct deadlines deadlines;    /* owns: every request's deadline */
    struct policy_set *policies;   /* refers: the access policy; none when it holds no policy */
    bool draining;                 /* new requests are answered shutting_down */
};

/* Where a request's response goes, and who hears that it ended: a client
 * embeds one, so that the request path never calls into client.c. */
struct request_owner {
    struct request_ctx *ctx;       /* refers */
    uint64_t id;                   /* the client's, for logs */
    bool has_cred;                 /* uid and gid are the kernel's word (SO_PEERCRED) */
    uint32_t uid, gid;
    /* refers: the policy covering it, valid while policy_gen is the
     * set's (a reload re-resolves it at the next request) */
    struct policy *policy;
    unsigned policy_gen;
    struct cbuf *out;              /* refers: the owner's pending output */
    struct dlist inflight;         /* owns: its requests (struct request) */
    size_t ninflight;
    /* Frames were appended to out. */
    void (*sent)(struct request_owner *o);
    /* One of its requests ended (after sent, when it had a response). */
    void (*done)(struct request_owner *o);
};

struct request {
    struct deadline deadline;   /* in the server's deadline queue */
    struct dlist client_node;   /* in owner->inflight */
    struct request_owner *owner;/* refers: where the response goes */
    struct client *client;      /* refers: the client that sent it, for backends (pushes,
                                 * what a client holds); opaque to the request path */
    struct op *op;              /* refers: entry in the op table */
    /* refers: the policy its client is under, NULL without policies; to
     * be read during submit only (a reload may free it later) */
    struct policy *policy;
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

/* Decodes one frame body from client c (whose owner part is o) and starts
 * the request, or answers it with an error at once. */
void request_handle(struct request_owner *o, struct client *c, const uint8_t *body, size_t len);

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
