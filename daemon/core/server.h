/* server.h: the daemon's context, passed to every part instead of a global.
 *
 * It owns the loop's long-lived handles (listener, signals, flusher,
 * deadline timer), the clients, the op table and the backends. */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "deadline.h"
#include "errors.h"
#include "histogram.h"
#include "list.h"
#include "notify.h"
#include "outq.h"

struct backend;
struct request;
struct telemetry;

/* Daemon-wide counters, declared once: stats and the metrics read them
 * from here. X(name, help) */
#define SERVER_COUNTERS(X)                                                          \
    X(clients_accepted, "client connections accepted")                              \
    X(clients_rejected, "connections refused: max_clients reached, or out of descriptors") \
    X(clients_dropped_slow, "clients disconnected for not reading their responses") \
    X(clients_dropped_framing, "clients disconnected because framing was lost")     \
    X(clients_dropped_memory, "clients cut off because max_buffered was reached")   \
    X(clients_dropped_frame_timeout, "clients that did not finish a frame in time") \
    X(frames_in, "request frames received")                                         \
    X(bytes_in, "bytes received from clients")

struct server_counters {
#define SC_FIELD(name, help) uint64_t name;
    SERVER_COUNTERS(SC_FIELD)
#undef SC_FIELD
};

/* A request ends with an error code, with a result, or abandoned because
 * its client went away. */
#define OUTCOME_OK FE_NCODES
#define OUTCOME_ABANDONED (FE_NCODES + 1)
#define NOUTCOMES (FE_NCODES + 2)

typedef int (*op_run_fn)(struct server *s, struct request *r);

/* One op: a built-in handler, or a backend and the kind it gave. */
struct op {
    const char *name;                 /* refers: a static string */
    op_run_fn run;                    /* built-in handler, or NULL */
    struct backend *backend;          /* refers: the backend that serves it */
    int kind;                         /* backend-private op number */
    uint64_t outcomes[NOUTCOMES];     /* by fe_index(), OUTCOME_OK, OUTCOME_ABANDONED */
    struct histogram duration;        /* owns: seconds, for ferry.request.duration */
};

/* Descriptors kept free of clients for ferryd's own use (backend
 * connections beyond redis_pool, the OTLP exporter's sockets, the AMQP
 * thread, the loop): a client past the limit is refused with 'overloaded'
 * rather than leaving no descriptor for a reconnect. */
#define SERVER_FD_RESERVE 32

#define SERVER_MAX_OPS 64
#define SERVER_MAX_BACKENDS 4

struct server {
    uv_loop_t *loop;                 /* refers */
    struct config cfg;               /* owns: the configuration in force */
    const char *config_path;         /* refers: argv or a literal */
    bool config_must_exist;
    char **overrides;                /* refers: "key=value" from flags, re-applied on reload */
    int noverrides;

    uv_pipe_t listener;
    bool listening;
    bool socket_bound;               /* we created the socket file and must unlink it */
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t drain_timer;
    struct notify notify;            /* the service manager (systemd), when it asked */
    uv_timer_t ready_timer;          /* bounds the wait for backends before READY=1 */
    bool ready_sent;                 /* READY=1 has been sent since the start */
    bool status_up;                  /* the last STATUS= said every backend was up */
    uv_idle_t resume_idle;           /* resumes clients paused by backpressure */
    struct dlist resume;             /* clients waiting for resume_idle */
    struct flusher flusher;
    struct deadlines deadlines;
    struct deadlines frame_deadlines; /* clients part-way through sending a frame */

    struct dlist clients;            /* every open client */
    size_t nclients;
    uint64_t buffered_in;            /* bytes in clients' input buffers */
    uint64_t buffered_out;           /* bytes of responses queued for clients */
    long fd_limit;                   /* RLIMIT_NOFILE's soft limit in force */
    uint64_t next_client_id;

    struct op ops[SERVER_MAX_OPS];
    size_t nops;
    struct backend *backends[SERVER_MAX_BACKENDS]; /* owns */
    size_t nbackends;

    struct server_counters counters;
    struct telemetry *tel;           /* owns */
    uint64_t started_ms;
    bool draining;
    bool stopping;                   /* handles are being closed */
    int exit_code;
};

/* Listens, starts the backends and runs the loop until shutdown. Returns
 * the process exit code. */
int server_run(struct server *s);
int server_add_op(struct server *s, const char *name, op_run_fn run, struct backend *b, int kind);
struct op *server_find_op(struct server *s, const char *name, size_t len);
/* Begins a graceful drain, as SIGTERM does. */
void server_drain(struct server *s, const char *why);
/* Called whenever a client or request goes away, to finish a drain. */
void server_check_drained(struct server *s);
/* Called by a backend whose health may have changed: at start, READY=1
 * goes out once every configured backend is up. */
void server_backend_changed(struct server *s);
/* Whether every configured backend is up. */
bool server_backends_up(struct server *s);

#endif
