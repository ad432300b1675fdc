/* reqtrace.h: a request's trace, kept beside the request path. The
 * request path makes two calls (reqtrace_begin when a request starts,
 * reqtrace_end when it ends); a backend describes its request once
 * (reqtrace_describe) and telemetry does the rest: the span's name and
 * attributes per the semantic conventions, its shape, and the metrics.
 *
 * Most requests end with only a shape: a root span is left unrecorded
 * ("on demand") and goes into its batch straight from the shape that
 * the description found in the shape cache, with no record at all. */
#ifndef FERRY_REQTRACE_H
#define FERRY_REQTRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "span.h"

struct histogram;
struct telemetry;

/* Embedded in struct request; opaque to the request path. */
struct reqtrace {
    struct telemetry *tel;          /* refers */
    struct span *span;              /* owns until reqtrace_end: NULL when not sampled, or on demand */
    const struct span_shape *shape; /* refers: the description's shape, or NULL */
    const char *name;               /* refers: the op's name, the span's until it is described */
    uint64_t start_ns;              /* uv_hrtime() at the request's arrival */
    const char *db_system;          /* refers: set when a database operation, for its metric */
    bool on_demand;                 /* the root span is not recorded (yet) */
    char db_operation[32];          /* zero padded: its first 16 bytes key the shape cache */
};

/* The request named name (its op's) arrived at start_ns (uv_hrtime()),
 * with the client's traceparent/tracestate or NULL. may_defer: its
 * backend describes its requests, so the root span may stay on demand. */
void reqtrace_begin(struct reqtrace *t, struct telemetry *tel, const char *name, uint64_t start_ns, const char *tp,
                    size_t tp_len, const char *ts, size_t ts_len, bool may_defer);
/* The request ended now: records its duration in its op's histogram
 * (ferry.request.duration), db.client.operation.duration when it was a
 * database operation, and ends its span, or adds its shaped span.
 * error_type is NULL on success, else the error code's name (or
 * "abandoned"), recorded as error.type with an ERROR status carrying
 * message. */
void reqtrace_end(struct reqtrace *t, struct histogram *op_duration, const char *error_type, const char *message);

/* db.query.text: the command with a ? per argument, so values (which may
 * be secrets or personal data) never leave the host; the whole command;
 * or none. */
enum reqtrace_query { RQ_SANITIZED, RQ_FULL, RQ_OFF };

/* An attribute beyond those of the description. */
struct reqtrace_attr {
    const char *key;                /* refers: a static string */
    const char *str;                /* a string value (len bytes), or NULL for i */
    size_t len;
    int64_t i;
};

/* What a backend says about its request. Spans of equal descriptions
 * share a shape, found in a cache keyed by the operation, argc, the
 * connection and the query mode; spans whose attributes differ from
 * request to request (a full query text, a stored procedure's name,
 * extra attributes) are recorded whole. */
struct reqtrace_desc {
    enum span_kind kind;
    /* A database operation: db.system.name (system), db.operation.name,
     * db.namespace, the query text and the stored procedure, and
     * db.client.operation.duration. Otherwise only the name, the
     * addresses and the extra attributes. */
    bool database;
    const char *system;             /* refers: a static string, e.g. "redis" */
    const char *operation;          /* the command, e.g. "GET": the span's name unless span_name */
    size_t operation_len;
    const char *span_name;          /* copied; NULL: the operation */
    const char *db_namespace;       /* NULL: none */
    const char *server_address;     /* NULL: none */
    size_t server_address_len;
    int server_port;                /* 0: none (a Unix socket) */
    const char *peer_address;       /* network.peer.address; NULL: none */
    /* The connection the request goes out on, and its generation, bumped
     * when what the connection says about itself (its peer) changes:
     * part of the cache's key. Never NULL: a backend with no connection
     * gives its own address. */
    const void *conn;
    unsigned conn_gen;
    int argc;                       /* the command's words, for the query text */
    const char *const *argv;
    const size_t *lens;
    enum reqtrace_query query;
    const char *procedure;          /* db.stored_procedure.name; NULL: none */
    size_t procedure_len;
    const struct reqtrace_attr *extra;
    size_t nextra;
};

/* Names and describes the request's span (and its metric): once, before
 * the request goes out. */
void reqtrace_describe(struct reqtrace *t, const struct reqtrace_desc *d);
/* The operation described ("" before), for a backend's log lines. */
static inline const char *reqtrace_operation(const struct reqtrace *t) { return t->db_operation; }
/* db.response.status_code: the first len bytes of code (an error reply's
 * prefix: WRONGTYPE, ERR, NOSCRIPT ...). */
void reqtrace_status_code(struct reqtrace *t, const char *code, size_t len);
/* The traceparent (and tracestate, ts_len 0 when none) to propagate
 * downstream: the request's span as the parent, or when it is not
 * sampled the client's context unchanged. False when there is none. */
bool reqtrace_traceparent(struct reqtrace *t, const char *client_tp, size_t client_tp_len, const char *client_ts,
                          size_t client_ts_len, char out[TRACEPARENT_LEN + 1], const char **ts, size_t *ts_len);
/* The request's span record, made now when it was left on demand; NULL
 * when the request is not traced. For attributes no description says. */
struct span *reqtrace_span(struct reqtrace *t);

#endif
