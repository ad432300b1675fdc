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

struct server;

struct client {
    uv_pipe_t pipe;
    struct server *srv;      /* refers */
    struct dlist node;       /* in srv->clients while open */
    struct dlist resume_node;/* in srv->resume while waiting to resume */
    struct dlist inflight;   /* owns: its requests (struct request) */
    size_t ninflight;
    struct cbuf in;          /* owns: bytes read and not yet framed */
    struct outq out;         /* owns: responses not yet written */
    struct deadline frame_deadline; /* in srv->frame_deadlines while a frame is part-sent */
    size_t acct_in, acct_out;/* what srv->buffered_in/out count for this client */
    uint64_t id;             /* for logs */
    bool paused;             /* reading stopped: too many in flight */
    bool eof;                /* the client shut down its sending side */
    bool closing;            /* client_close() has run */
    bool close_when_flushed; /* close once out is written */
};

/* Accepts one connection from the listener. */
void client_accept(struct server *s);
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
/* Called when one of c's requests has ended. */
void client_request_done(struct client *c);
/* Resumes reading clients paused by backpressure (the idle callback). */
void client_resume_all(struct server *s);
/* The frame deadline queue's callback: a frame started too long ago. */
void client_frame_expired(struct deadlines *d, struct deadline *e);
/* Starts closing c once it has nothing in flight or queued. */
void client_finish(struct client *c);

#endif
