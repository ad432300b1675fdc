/* rds_module.h: how the Redis patterns (daemon/patterns/: pub/sub,
 * blocking commands, streams, locks, cache, rate limits, scripts,
 * transactions) plug into the Redis backend.
 *
 * The backend owns the connections; a module owns its state and its
 * ops. The backend knows the modules only through the table
 * rds_modules[] (defined in patterns/patterns.c, one layer up), as the
 * daemon knows its backends through backends.c.
 *
 *   request ──> rb_submit ──> module op's submit(rb, r)
 *                               │  rds_backend_call(): ferryd's own
 *                               │  commands on a pooled connection,
 *                               │  each reply to a callback
 *                               ▼
 *                  request_result_* / request_fail, or cancel()
 */
#ifndef FERRY_RDS_MODULE_H
#define FERRY_RDS_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>

#include "cbuf.h"

struct client;
struct rds_backend;
struct rds_conn;
struct request;

/* A request of a module's op while the backend holds it: r->bdata points
 * to one and r->bflags has RB_JOB. Commands already sent keep their
 * callbacks after the request is gone, so a job usually outlives it: the
 * module frees it when no reply is awaited any more. */
struct rds_job {
    struct request *r;                 /* refers; NULL once cancelled */
    /* The request is gone (deadline, client left, shutdown): no
     * completion may follow. The module clears j->r and frees j once
     * nothing is awaited. */
    void (*cancel)(struct rds_job *j);
};

#define RB_JOB 4u

/* One op of a module. submit takes r and completes it (now or later),
 * or returns a negative fe code for the backend to answer with. */
struct rds_opdef {
    const char *name;
    int (*submit)(struct rds_backend *rb, struct request *r);
};

/* One module: its ops and its hooks, all optional but name. */
struct rds_module {
    const char *name;
    const struct rds_opdef *ops;
    size_t nops;
    /* At create: allocates the module's state into *state. Returns 0, or
     * -1 with err naming the config key. */
    int (*create)(struct rds_backend *rb, void **state, char *err, size_t errlen);
    /* Sees each command of the redis op that passed the deny-list and the
     * policy, before it is sent; returns true when it took r (single
     * flight: it shares another request's round trip). */
    bool (*intercept)(struct rds_backend *rb, void *state, struct request *r, int argc,
                      const char *const *argv, const size_t *lens);
    /* The loop runs: start connecting what it owns. */
    void (*start)(struct rds_backend *rb, void *state);
    /* c is closing: drop its subscriptions, release its locks ... */
    void (*client_closed)(struct rds_backend *rb, void *state, struct client *c);
    /* Appends one CBOR item (a map) for stats' backends.redis.<name>. */
    void (*stats)(struct rds_backend *rb, void *state, struct cbuf *out);
    /* Reloadable keys changed. */
    void (*reload)(struct rds_backend *rb, void *state);
    /* Shutdown: close handles (every request is already answered). */
    void (*close)(struct rds_backend *rb, void *state);
    /* Frees the state once the loop has closed the handles. */
    void (*destroy)(struct rds_backend *rb, void *state);
};

/* The table, in patterns/patterns.c. */
extern const struct rds_module *const rds_modules[];
extern const size_t rds_nmodules;

#define RDS_MAX_MODULES 16

/* ---- what the backend offers its modules (rds_backend.c) ---- */

/* Sends one of ferryd's own commands for a request of a module's op, on
 * the connection that serves key (NULL: any). fn gets the reply,
 * borrowed, or NULL when the connection failed first. Returns 0, or
 * FE_UNAVAILABLE / FE_OVERLOADED. */
int rds_backend_call(struct rds_backend *rb, const char *key, size_t keylen, int argc, const char *const *argv,
                     const size_t *lens, void (*fn)(void *arg, const redisReply *reply), void *arg)
    __attribute__((warn_unused_result));
/* Whether r's client may run argv: redis_deny (when deny_list: for
 * commands that go on a shared connection; a module that runs BLPOP on a
 * dedicated connection skips it), then the client's policy (always).
 * Returns 0, or FE_DENIED / FE_UNAVAILABLE with msg saying why. */
int rds_backend_check(struct rds_backend *rb, struct request *r, bool deny_list, int argc,
                      const char *const *argv, const size_t *lens, char *msg, size_t len);
/* Starts holding r for job j (r->bdata, r->bflags). */
void rds_backend_hold(struct request *r, struct rds_job *j);
/* Answers a request of a module's op with a Redis error reply (as the
 * redis op does: backend_error with the server's text), or with
 * unavailable when reply is NULL (the connection failed). */
void rds_backend_fail_reply(struct request *r, const redisReply *reply);
/* A new dedicated connection to the backend's server (for blocking
 * commands, subscriptions, WATCH): not pooled, not counted in health.
 * The caller sets c->hooks, starts it with rds_conn_start and owns it. */
struct rds_conn *rds_backend_dedicated(struct rds_backend *rb);
/* The same, to t's address (a cluster node's, rds_cluster_slot_target;
 * NULL: the backend's). */
struct rds_target;
struct rds_conn *rds_backend_dedicated_to(struct rds_backend *rb, struct rds_target *t);
/* Module m's state, as its create() set it. */
void *rds_backend_state(struct rds_backend *rb, const struct rds_module *m);

#endif
