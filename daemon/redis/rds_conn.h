/* rds_conn.h: one pipelined connection to Redis. */
#ifndef FERRY_RDS_CONN_H
#define FERRY_RDS_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include <hiredis/hiredis.h>

#include "outq.h"
#include "url.h"
#include "reqring.h"
#include "resp_guard.h"
#include "rds_tls.h"

struct config;
struct rds_config;
struct flusher;
struct request;

/* What the connections of one backend share: where they connect, and
 * with which settings. The backend owns it; its connections refer to it,
 * and need nothing else of the backend's. */
struct rds_target {
    struct url_redis addr;       /* owns */
    char url_redacted[512];       /* for logs and stats */
    uint32_t rng;                 /* for backoff jitter */
    const struct config *cfg;     /* refers: the configuration in force (reloads change it in place) */
    const struct rds_config *rc;  /* refers: its Redis keys, inside cfg */
    uv_loop_t *loop;              /* refers */
    struct flusher *flusher;      /* refers: the daemon's coalesced writes */
    struct rds_tls_ctx tls;       /* owns, for rediss:// (ssl_ctx NULL otherwise) */
    /* Called when a pooled connection becomes ready or fails: the
     * backend's readiness may have changed. */
    void (*changed)(struct rds_target *t);
    /* Called when the control connection becomes ready (after each
     * reconnect): the time to ask the server about itself. */
    void (*control_ready)(struct rds_target *t);
};

enum rconn_state {
    RC_WAITING,    /* backing off before the next attempt */
    RC_RESOLVING,  /* looking up the host (libuv's thread pool) */
    RC_CONNECTING, /* connect() in progress */
    RC_HANDSHAKE,  /* connected; the TLS handshake (rediss://), then AUTH/SELECT/PING */
    RC_READY,
    RC_CLOSING,    /* the socket is closing after a failure */
    RC_STOPPED,    /* shut down for good */
};

struct rds_conn;

/* One of ferryd's own commands awaiting its reply (rds_conn_call). */
struct rds_call {
    void (*fn)(void *arg, const redisReply *reply);
    void *arg;
};

/* What a connection's owner hears beyond the replies to requests. */
struct rds_conn_hooks {
    void *arg;
    /* The handshake is over (after each reconnect): the time to send what
     * the connection's role needs (SUBSCRIBE again, CLIENT ID ...). */
    void (*ready)(struct rds_conn *c, void *arg);
    /* A reply no command awaits: on a subscriber connection, the messages
     * and (un)subscribe confirmations; NULL for other connections, where
     * such a reply is a protocol fault. A reply too large for max_frame
     * is dropped and counted in refused instead. */
    void (*sink)(struct rds_conn *c, void *arg, const redisReply *reply);
    /* The connection failed (it reconnects by itself). */
    void (*lost)(struct rds_conn *c, void *arg);
};

struct rds_conn {
    struct rds_target *t;     /* refers: the backend's, shared by its connections */
    unsigned index;             /* position in the pool, for logs */
    enum rconn_state state;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } io;
    bool io_open;               /* io is initialised and not yet closed */
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai;
    bool gai_busy;
    uv_timer_t timer;           /* connect timeout, or backoff wait */
    struct outq out;            /* owns: formatted commands not yet written */
    redisReader *reader;        /* owns */
    struct resp_guard guard;    /* which replies the reader may see */
    char *readbuf;              /* owns: READ_BUF bytes for uv_read */
    struct rds_tls tls;         /* owns, this attempt's; tls.ssl is NULL without TLS */
    char *plainbuf;             /* owns, under TLS: READ_BUF bytes for decrypted replies */

    /* Commands awaiting replies, oldest first. A slot holds the request,
     * NULL when the request was cancelled (its reply is read and dropped),
     * or HANDSHAKE_SLOT. */
    struct reqring ring;
    unsigned handshake_left;    /* handshake replies still awaited */

    /* ferryd's own commands awaiting replies (CALL_SLOT in the ring), in
     * order: each gets its reply, borrowed, or NULL when none will come. */
    struct rds_call *calls;     /* owns: a ring of call_cap entries */
    size_t call_cap, call_head, ncalls;
    struct rds_conn_hooks hooks; /* its owner's, all optional */
    uint64_t client_id;         /* CLIENT ID on the server, once learned (0: unknown) */

    bool down;                  /* failed since last ready: fail fast */
    unsigned failures;          /* consecutive failed attempts */
    bool control;               /* the control connection: never carries requests */
    bool quiet;                 /* a dedicated connection: its state does not change the backend's health */
    uint64_t connects, drops;   /* counters for stats */
    uint64_t refused;           /* replies refused by the guard */
    char last_error[160];
    char peer[108];             /* the address connected to (IP, or socket path) */
    unsigned peer_gen;          /* bumped when peer is set: span shapes that name it go stale */
};

struct rds_conn *rds_conn_new(struct rds_target *t, unsigned index);
void rds_conn_start(struct rds_conn *c);
/* Queues the command argv for r. The arguments are copied at once, so
 * they need only live for the call. Returns 0 or a negative fe code. */
int rds_conn_send(struct rds_conn *c, struct request *r, int argc, const char *const *argv,
                    const size_t *lens) __attribute__((warn_unused_result));
void rds_conn_cancel(struct rds_conn *c, struct request *r);
/* Writes a command whose replies go to the sink hook (SUBSCRIBE and the
 * like on a subscriber connection). Returns 0, or -1 when c is not ready. */
int rds_conn_send_raw(struct rds_conn *c, int argc, const char *const *argv, const size_t *lens);
/* Sends "SCRIPT KILL" or "FUNCTION KILL" (what is "SCRIPT" or "FUNCTION")
 * on the control connection c, and logs its reply. */
void rds_conn_kill(struct rds_conn *c, const char *what);
/* Sends one of ferryd's own commands on c (any connection: the control
 * one, or a pooled one for the pattern ops); fn gets its reply, borrowed
 * for the call, or NULL when the connection failed first. Like a request,
 * it may be queued while c connects. Returns 0, or -1 when c is down or
 * max_pending replies are awaited. */
int rds_conn_call(struct rds_conn *c, int argc, const char *const *argv, const size_t *lens,
                  void (*fn)(void *arg, const redisReply *reply), void *arg);
/* Whether r is the oldest command awaiting a reply on c: the one Redis is
 * running, or will run next. */
bool rds_conn_is_head(const struct rds_conn *c, const struct request *r);
/* Drops the connection (its commands fail as on a loss) and connects
 * again soon, to t's address as it is then (a Sentinel failover). */
void rds_conn_reconnect(struct rds_conn *c, const char *why);
void rds_conn_stop(struct rds_conn *c);
void rds_conn_free(struct rds_conn *c);
static inline size_t rds_conn_pending(const struct rds_conn *c) { return reqring_size(&c->ring); }
const char *rds_conn_state_name(enum rconn_state s);
/* Whether a request sent now would be written (soon) rather than refused. */
static inline bool rds_conn_usable(const struct rds_conn *c)
{
    return c->state == RC_READY ||
           (!c->down && (c->state == RC_RESOLVING || c->state == RC_CONNECTING ||
                         c->state == RC_HANDSHAKE));
}

#endif
