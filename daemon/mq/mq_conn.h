/* mq_conn.h: the bottom layer of the AMQP thread: the broker connection,
 * its fixed channels, RPC reply checks, and the hand-off to and from the
 * loop.
 *
 *   loop --cmd--> [mutex: cmds] --eventfd--> thread --rabbitmq-c--> broker
 *   loop <--event-- [mutex: events] <--uv_async-- thread <-----------+
 *
 * The layers above (mq_topology, mq_publish, mq_consume, mq_pump) use
 * only this: they post results and events through it, check RPCs with it,
 * and report a lost connection to it. They learn of a lost connection
 * through on_lost, which mq_worker.c sets, so nothing here names them. */
#ifndef FERRY_MQ_CONN_H
#define FERRY_MQ_CONN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <amqp.h>
#include <uv.h>

#include "cbuf.h"
#include "list.h"
#include "mq_cmd.h"
#include "mq_tls.h"
#include "url.h"

/* Channels, each with one job, so that a broker error on one (a channel
 * error closes only that channel) cannot disturb the others: consumers
 * get one each from MQ_CH_FIRST_CONSUMER up (mq_consume.c). */
enum {
    MQ_CH_PUB = 1,              /* publishing, in confirm mode */
    MQ_CH_TOPO = 2,             /* topology RPCs, passive checks and basic.get */
    MQ_CH_TX = 3,               /* transactional batches */
    MQ_CH_RPC = 4,              /* requests over direct reply-to */
    /* The confirm channel's stand-in: publishing moves between it and
     * MQ_CH_PUB when the broker nacks (mq_publish.c says why). */
    MQ_CH_PUB_ALT = 5,
    MQ_CH_FIRST_CONSUMER = 10,
};

struct mq_conn {
    /* Shared with the loop, under mu. */
    pthread_mutex_t mu;
    struct dlist cmds;         /* owns: struct mq_cmd, loop -> thread */
    struct dlist events;       /* owns: struct mq_event, thread -> loop */
    /* owns: events the loop is done with, for the thread to fill again.
     * An event allocated on one thread and freed on the other never
     * reaches the allocating thread's malloc cache, so each would take
     * malloc's slow path twice; recycled, a delivery allocates nothing.
     * At most MQ_EVENT_SPARE_MAX are kept. */
    struct dlist spare;
    size_t nspare;
    bool stop;
    bool started;              /* the thread runs, or has not been joined yet */
    int wake_fd;               /* eventfd: the loop wakes the thread */
    uv_async_t *async;         /* refers: the thread wakes the loop */
    atomic_int sockfd;         /* the broker socket, for shutdown() at stop */
    struct mq_tls *tls_next;   /* owns: amqp_tls_* from a reload, for the next connect */
    struct mq_counters counters;

    /* Set before the thread starts, then read-only. */
    struct url_amqp *addrs;   /* refers: owned by the backend */
    size_t naddrs;
    uint64_t connect_timeout_ms, backoff_min_ms, backoff_max_ms;
    /* Called by mq_conn_lost, after the connection is gone and before the
     * loop is told, so each layer drops what died with it. */
    void (*on_lost)(void *ctx, const char *why);
    void *on_lost_ctx;         /* refers */

    /* The thread's own from here on. */
    amqp_connection_state_t state; /* owns; NULL while disconnected */
    struct mq_tls tls;         /* owns: what amqps:// connects use */
    bool blocked;              /* the broker said connection.blocked */
    unsigned failures;         /* connection attempts failed in a row */
    uint64_t retry_at;         /* mq_now_ms() of the next attempt */
    uint32_t rng;              /* backoff jitter */
    int heartbeat;             /* seconds, of the connected URL */
    char last_error[256];      /* the size of an event's message */
    /* OpenSSL's reason for refusing the broker's certificate, written
     * during a TLS handshake (mq_tls.h). */
    char tls_verdict[MQ_TLS_VERDICT];
    size_t addr_next;          /* which URL is connected, or to try next */
    uint64_t next_tag;         /* the next publish's tag on pub_ch: 1 when it opens */
    amqp_channel_t pub_ch;     /* the confirm channel in use: MQ_CH_PUB or MQ_CH_PUB_ALT */
    bool pub_closing;          /* the other one was closed and its close-ok has not come yet */
    /* Events made while the pump reads a run of frames, posted to the
     * loop together when it ends: one lock and one wake-up for a burst of
     * deliveries, not one each. */
    struct dlist held;         /* owns */
    bool holding_events;
    struct dlist local_spare;  /* owns: recycled events, taken from spare */
};

/* Both threads. Returns 0 or -1. */
int mq_conn_init(struct mq_conn *c);
/* Frees what is left once the thread has been joined. */
void mq_conn_destroy(struct mq_conn *c);

/* ---- loop thread ---- */
/* Queues cmd (taking it) and wakes the thread. */
void mq_conn_post_cmd(struct mq_conn *c, struct mq_cmd *cmd);
/* Asks the thread to close the connection and exit. */
void mq_conn_stop(struct mq_conn *c);
/* Unblocks a thread stuck writing to a frozen broker. */
void mq_conn_kick_socket(struct mq_conn *c);
/* Hands a copy of t to the thread, for its next connection attempt (the
 * open connection keeps what it was made with). */
void mq_conn_set_tls(struct mq_conn *c, const struct mq_tls *t);
/* Moves every event waiting for the loop to out. */
void mq_conn_take_events(struct mq_conn *c, struct dlist *out);
/* Gives back events the loop is done with (a list of struct mq_event),
 * for reuse; what is over the spare bound is freed. */
void mq_conn_recycle(struct mq_conn *c, struct dlist *done);

/* ---- AMQP thread ---- */
/* Moves the queued commands to out; returns whether the loop asked to stop. */
bool mq_conn_take_cmds(struct mq_conn *c, struct dlist *out);
/* Waits up to timeout_ms for the loop or the broker. */
void mq_conn_wait(struct mq_conn *c, int timeout_ms);
/* Connects to the first URL that answers, in the order of amqp_url, from
 * the one that last worked, or after a lost connection from the one after
 * it (wrapping around). One pass over the list per attempt; attempts are
 * spaced by the backoff. Returns 0, or -1 with the next attempt scheduled. */
int mq_conn_connect(struct mq_conn *c);
/* Closes the connection politely (shutdown). */
void mq_conn_close(struct mq_conn *c);
/* The one path for a lost connection: drops it, tells the layers above
 * (on_lost) and the loop, and schedules a reconnect. */
void mq_conn_lost(struct mq_conn *c, const char *why);
/* Opens channel ch and puts it in its mode (confirms, tx, reply-to).
 * Returns 0 or -1. */
int mq_conn_open_channel(struct mq_conn *c, amqp_channel_t ch);
/* Checks the last RPC on ch. Returns 0; FE_BACKEND_ERROR after a channel
 * error (the channel is reopened, and err says what the broker said); or
 * FE_UNAVAILABLE when the connection is gone. */
int mq_conn_check_rpc(struct mq_conn *c, amqp_channel_t ch, char *err, size_t errlen);
/* What a reply from rabbitmq-c means, in words. */
void mq_conn_describe(amqp_rpc_reply_t r, char *buf, size_t len);

struct mq_event *mq_conn_event_new(struct mq_conn *c, enum mq_event_kind kind);
/* Hands e to the loop, or holds it while the pump reads a run of frames. */
void mq_conn_post(struct mq_conn *c, struct mq_event *e);
/* Holds events from now until mq_conn_post_held, which posts them in order. */
void mq_conn_hold(struct mq_conn *c);
void mq_conn_post_held(struct mq_conn *c);
/* Results of request seq (none when seq is 0). reply_ok takes data. */
void mq_conn_reply_ok(struct mq_conn *c, uint64_t seq, struct cbuf *data);
/* An empty map: the result of ops that return nothing. */
void mq_conn_reply_empty(struct mq_conn *c, uint64_t seq);
void mq_conn_reply_err(struct mq_conn *c, uint64_t seq, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Tells the loop whether the connection is up and publishers blocked. */
void mq_conn_post_state(struct mq_conn *c);

#endif
