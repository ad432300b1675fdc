/* backend.h: the one small interface between the request path and a
 * backend. The backends are listed in one table (backends.c); each row
 * gives a backend's name, its config keys and its constructor, so a new
 * backend touches nothing else.
 *
 * A backend registers the ops it serves with ops_add() on its host's op
 * table. For each
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

#include "config.h"
#include "metrics.h"

struct backend;
struct client;
struct ops;
struct request;
struct flusher;
struct telemetry;
struct uv_loop_s;

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
     * A backend calls backend_changed() when it may have changed. */
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

/* What the daemon gives a backend: all it may reach of the rest. */
struct backend_host {
    struct uv_loop_s *loop;        /* refers */
    struct ops *ops;               /* refers: where it registers its ops */
    const struct config *cfg;      /* refers: the configuration in force */
    struct telemetry *tel;         /* refers; set before start() */
    struct flusher *flusher;       /* refers: the coalesced writes, for backends that write on the loop */
    void *arg;                     /* refers: changed()'s argument */
    /* Its health may have changed: READY=1 and STATUS= follow it. */
    void (*changed)(void *arg);
};

struct backend {
    const struct backend_ops *ops;   /* refers */
    const struct backend_host *host; /* refers */
    /* Descriptors it may hold at once (its connections), which clients
     * must leave free. */
    long fds;
};

static inline void backend_changed(struct backend *b)
{
    b->host->changed(b->host->arg);
}

/* One row of the backend table: a backend kind, its config keys (a
 * section of ferryd.conf, checked and reloaded with the rest), and its
 * constructor, which returns NULL with err set on a bad configuration. */
struct backend_kind {
    const char *name;
    const struct cfg_section *config;
    struct backend *(*create)(const struct backend_host *host, char *err, size_t errlen);
};

/* The table, in backends.c: every backend ferryd can run. */
extern const struct backend_kind *const backend_kinds[];
extern const size_t backend_nkinds;

#endif
