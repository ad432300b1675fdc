/* server.h: the daemon's life: start, signals, reload, drain, stop.
 *
 * The server owns the parts and gives each the narrow struct it needs:
 * the listener, the clients (struct client_set), the request path
 * (struct request_ctx), the op table and the backends (struct
 * backend_host). None of them includes this header; ops_core.c, which
 * reports on the whole daemon, and main.c do. */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "client.h"
#include "backend.h"
#include "config.h"
#include "counters.h"
#include "listener.h"
#include "notify.h"
#include "ops.h"
#include "outq.h"
#include "policy.h"
#include "request.h"

struct backend;
struct telemetry;

/* Descriptors kept free of clients for ferryd's own use beyond what the
 * backends declare (the OTLP exporter's sockets, the AMQP thread, the
 * loop): a client past the limit is refused with 'overloaded' rather than
 * leaving no descriptor for a reconnect. */
#define SERVER_FD_RESERVE 32

#define SERVER_MAX_BACKENDS 4

struct server {
    uv_loop_t *loop;                 /* refers */
    struct config cfg;               /* owns: the configuration in force */
    const char *config_path;         /* refers: argv or a literal */
    bool config_must_exist;
    char **overrides;                /* refers: "key=value" from flags, re-applied on reload */
    int noverrides;

    struct listener listener;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t drain_timer;
    struct notify notify;            /* the service manager (systemd), when it asked */
    uv_timer_t ready_timer;          /* bounds the wait for backends before READY=1 */
    bool ready_sent;                 /* READY=1 has been sent since the start */
    bool status_up;                  /* the last STATUS= said every backend was up */
    struct flusher flusher;
    struct request_ctx rq;           /* what every request needs */
    struct client_set clients;       /* every open client */

    struct ops ops;                  /* owns: the op table */
    struct backend_host host;        /* what the backends may reach */
    struct backend *backends[SERVER_MAX_BACKENDS]; /* owns */
    size_t nbackends;

    struct policy_set policies;      /* owns: the access policy (policy_file); empty: none */

    struct counters counters;
    struct telemetry *tel;           /* owns */
    uint64_t started_ms;
    bool stopping;                   /* handles are being closed */
    int exit_code;
};

/* Prepares s for config loading and for the backends' constructors: the
 * loop, the op table and the host the backends are given. */
void server_init(struct server *s);
/* Loads policy_file into s->policies, checking its op names against the
 * op table (so after every op is registered). Returns 0, or -1 with err. */
int server_load_policies(struct server *s, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Listens, starts the backends and runs the loop until shutdown. Returns
 * the process exit code. */
int server_run(struct server *s);
/* Begins a graceful drain, as SIGTERM does. */
void server_drain(struct server *s, const char *why);
/* Whether every configured backend is up. */
bool server_backends_up(struct server *s);

#endif
