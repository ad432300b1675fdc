/* client.h: one application connection on the Unix socket. */
#ifndef FERRY_CLIENT_H
#define FERRY_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "cbuf.h"
#include "deadline.h"
#include "list.h"
#include "outq.h"
#include "request.h"

struct config;
struct counters;

/* What the clients share: their limits, the daemon-wide sums of their
 * buffers, the queues that pause and time them, and the hooks by which
 * the rest of the daemon hears of them. The server owns it; client.c
 * never sees the server. */
struct client_set {
    uv_loop_t *loop;                 /* refers */
    const struct config *cfg;        /* refers: the configuration in force */
    struct counters *counters;       /* refers */
    struct request_ctx *rq;          /* refers: where requests go */
    struct flusher *flusher;         /* refers: the coalesced writes */
    struct deadlines frame_deadlines; /* owns: clients part-way through a frame */
    uv_idle_t resume_idle;           /* resumes clients paused by backpressure */
    struct dlist resume;             /* clients waiting for resume_idle */
    struct dlist list;               /* every open client */
    size_t n;
    uint64_t buffered_in;            /* bytes in clients' input buffers */
    uint64_t buffered_out;           /* bytes of responses queued for clients */
    long fd_limit;                   /* RLIMIT_NOFILE's soft limit in force */
    long fd_reserve;                 /* descriptors kept free of clients */
    uint64_t next_id;
    void *hook_arg;                  /* refers: the hooks' first argument */
    /* c is closing: what the backends keep for it (subscriptions) goes. */
    void (*closed)(void *arg, struct client *c);
    /* A client or one of its requests went away: a drain may be over. */
    void (*idle)(void *arg);
};

struct client {
    uv_pipe_t pipe;
    struct client_set *set;  /* refers */
    struct dlist node;       /* in set->list while open */
    struct dlist resume_node;/* in set->resume while waiting to resume */
    struct request_owner ro; /* its requests in flight, and where their responses go */
    struct cbuf in;          /* owns: bytes read and not yet framed */
    struct outq out;         /* owns: responses not yet written */
    struct deadline frame_deadline; /* in set->frame_deadlines while a frame is part-sent */
    size_t acct_in, acct_out;/* what set->buffered_in/out count for this client */
    uint64_t id;             /* for logs */
    /* The peer's credentials (SO_PEERCRED) as the kernel gave them at
     * connect: who is at the other end, with nothing for it to forge. */
    bool has_cred;
    uint32_t uid, gid;
    int32_t pid;
    char who[72];            /* "client 7 (uid 1000 gid 1000 pid 4242)", for logs */
    bool paused;             /* reading stopped: too many in flight */
    bool eof;                /* the client shut down its sending side */
    bool closing;            /* client_close() has run */
    bool close_when_flushed; /* close once out is written */
};

/* Sets up what the clients share; the caller fills in the rest. */
void client_set_init(struct client_set *set, uv_loop_t *loop);
/* Closes its handles, once no client is left. */
void client_set_close(struct client_set *set);
/* Accepts one connection from the listening stream. */
void client_accept(struct client_set *set, uv_stream_t *listener);
/* The one teardown path: logs reason once, abandons the in-flight requests
 * and frees the client in uv_close's callback. */
void client_close(struct client *c, const char *reason);
/* Called after frames were appended to c->out.pending: enforces the output
 * bound and schedules the write. */
void client_sent(struct client *c);
/* Sends c a push frame ({"sub", "kind", "data"}, and "traceparent" when
 * not NULL): the one way a backend reaches a client outside a request. */
void client_push(struct client *c, uint64_t sub, const char *kind, const uint8_t *data, size_t len,
                 const char *traceparent);
/* Starts closing c once it has nothing in flight or queued. */
void client_finish(struct client *c);

#endif
