/* backend.h: the one small interface between the request path and a
 * backend: redis_backend.c and amqp_backend.c implement it.
 *
 * A backend registers the ops it serves with server_add_op(). For each
 * request of those ops the request path calls submit(); from then on the
 * backend holds the request until it either completes it (request_result_*,
 * request_fail) or the request path takes it back with cancel() on a
 * deadline or a vanished client. Exactly one of those happens. */
#ifndef FERRY_BACKEND_H
#define FERRY_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbuf.h"

struct backend;
struct client;
struct config;
struct request;
struct server;

/* Where a backend reports its metrics (metrics.c provides it). */
struct metric_emit {
    void *ctx;
    /* ferry.backend.connections: n connections in state; NULL when not
     * collecting this family. */
    void (*connections)(void *ctx, const char *backend, const char *state, uint64_t n);
    /* A cumulative counter, e.g. ferry.backend.reconnects; NULL when not
     * collecting this family. */
    void (*counter)(void *ctx, const char *backend, const char *name, uint64_t v);
};

/* A backend's readiness, for the health op and systemd's READY=1. */
enum backend_health {
    BH_OFF,        /* not configured (AMQP without amqp_url): not waited for, not listed */
    BH_CONNECTING, /* no connection yet, one being made */
    BH_UP,         /* requests can be served */
    BH_DOWN,       /* the last attempt or connection failed; retrying */
};

struct backend_ops {
    const char *name;
    /* Spans of its requests may be left unrecorded until needed: the
     * backend describes every request (reqtrace_describe), which finds
     * the span's shape or records it. */
    bool spans_on_demand;
    /* Starts connecting. Never blocks; returns 0 or a negative fe code. */
    int (*start)(struct backend *b);
    /* Takes req, always: the backend completes it (now, with
     * request_result_* or request_fail, or later) or keeps it until
     * cancel(). request.c alone sets and clears req->backend. */
    void (*submit)(struct backend *b, struct request *req);
    /* Forgets req: no completion may follow. */
    void (*cancel)(struct backend *b, struct request *req);
    /* The error a request gets when its deadline passes (before cancel):
     * FE_TIMEOUT unless the backend knows better. May be NULL. */
    int (*timeout_code)(struct backend *b, struct request *req);
    /* A client is closing: drop what the backend keeps for it beyond its
     * requests (subscriptions). Its requests are cancelled separately. May
     * be NULL. */
    void (*client_closed)(struct backend *b, struct client *c);
    /* Its readiness; when not BH_UP, why holds the last error (or "").
     * A backend calls server_backend_changed() when it may have changed. */
    enum backend_health (*health)(struct backend *b, char *why, size_t len);
    /* Appends one CBOR map describing the backend's state to out. */
    void (*stats)(struct backend *b, struct cbuf *out);
    /* Reports connection states and counters. May be NULL. */
    void (*metrics)(struct backend *b, const struct metric_emit *e);
    /* Applies the reloadable keys of a new configuration. */
    void (*reload)(struct backend *b, const struct config *cfg);
    /* Closes the backend's handles at shutdown. Every request has already
     * been completed or cancelled by then. */
    void (*close)(struct backend *b);
    /* Frees memory once the loop has closed every handle. */
    void (*destroy)(struct backend *b);
};

struct backend {
    const struct backend_ops *ops; /* refers */
    struct server *server;         /* refers */
};

#endif
