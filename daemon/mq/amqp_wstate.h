/* amqp_wstate.h: the AMQP worker thread's private state, shared by the
 * files that run on that thread (amqp_worker.c: connection, channels,
 * consumers, frames; amqp_publish.c: confirmed and transactional
 * publishing). Nothing here is touched by the loop thread. */
#ifndef FERRY_AMQP_WSTATE_H
#define FERRY_AMQP_WSTATE_H

#include <stdbool.h>
#include <stdint.h>
#include <amqp.h>

#include "amqp_worker.h"
#include "tagset.h"

enum { CH_PUB = 1, CH_TOPO = 2, CH_TX = 3, CH_RPC = 4, CH_FIRST_CONSUMER = 10 };

#define MAX_TABLE 128

struct pub_group;

/* One message awaiting the broker's confirm. */
struct pub {
    struct dlist node;             /* in st->pubs, in publish order */
    struct pub_group *g;           /* refers */
    const struct amqp_out_msg *msg;/* refers: in g->cmd's pool */
    amqp_bytes_t exchange;         /* where it is really published (delayed: "") */
    amqp_bytes_t routing_key;
    uint64_t tag;                  /* broker delivery tag; 0 while unsent */
    bool resolved;
    int code;                      /* outcome once resolved */
    char text[200];
};

/* One publish request: one message, or a batch. */
struct pub_group {
    struct amqp_cmd *cmd;          /* owns */
    struct pub *pubs;              /* owns: cmd->nmsgs of them */
    size_t left;
};

struct consumer {
    struct dlist node;
    uint64_t id, client_id;
    amqp_channel_t ch;
    uint64_t gen;                  /* bumped each time it is resubscribed */
    amqp_bytes_t queue;            /* owns */
    char tag[48];
    uint16_t prefetch;
    bool no_ack, exclusive, active;
    /* Tags of this generation delivered and not yet settled, so a second
     * ack, or one of a tag never delivered, is refused before the broker
     * closes the channel over it (and requeues every other delivery). */
    struct tagset open;
    bool over_prefetch_logged;
};

struct rpc_wait {
    struct dlist node;
    uint64_t seq, deadline;
    char corr[128];
};

struct amqp_wstate {
    amqp_connection_state_t conn;  /* owns; NULL while disconnected */
    bool blocked;
    unsigned failures;
    uint64_t retry_at;
    uint32_t rng;
    int heartbeat;
    char last_error[200];
    size_t addr_next;              /* which URL to try next */

    uint64_t next_tag;             /* next delivery tag on CH_PUB */
    struct dlist pubs;             /* struct pub, publish order */
    struct dlist consumers;        /* struct consumer */
    struct dlist rpcs;             /* struct rpc_wait */
    struct dlist topology;         /* struct amqp_cmd: declares to replay */
    char **known_exchanges;        /* owns: exchanges checked to exist */
    size_t nknown;
    char **holding;                /* owns: delay queues declared */
    size_t nholding;
    amqp_channel_t next_ch;

    /* Events made while pump() reads a run of frames, posted to the loop
     * together when it ends: one lock and one wake-up for a burst of
     * deliveries, not one each. */
    struct dlist held;
    bool holding_events;
    struct cbuf extra;             /* owns: scratch for a delivery's own fields */
    struct dlist spare;            /* owns: recycled events, taken from wk->spare */
};

/* amqp_worker.c */
void amqp_worker_reply_ok(struct amqp_worker *wk, uint64_t seq, struct cbuf *data);
void amqp_worker_reply_err(struct amqp_worker *wk, uint64_t seq, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Checks the last RPC on ch. Returns 0; FE_BACKEND_ERROR after a channel
 * error (the channel is reopened, and err says what the broker said); or
 * FE_UNAVAILABLE when the connection is gone. */
int amqp_worker_check_rpc(struct amqp_worker *wk, amqp_channel_t ch, char *err, size_t errlen);
/* The one path for a lost connection: drops it and schedules a reconnect. */
void amqp_worker_conn_lost(struct amqp_worker *wk, const char *why);

/* amqp_publish.c */
int amqp_publish_ensure_exchange(struct amqp_worker *wk, amqp_bytes_t ex, char *err, size_t errlen);
void amqp_publish_forget_exchanges(struct amqp_wstate *st);
void amqp_publish_forget_holding(struct amqp_wstate *st);
void amqp_publish_run(struct amqp_worker *wk, struct amqp_cmd *c);
void amqp_publish_tx(struct amqp_worker *wk, struct amqp_cmd *c);
void amqp_publish_flush(struct amqp_worker *wk);
void amqp_publish_resolve(struct amqp_worker *wk, struct pub *p, int code, const char *text);
void amqp_publish_on_confirm(struct amqp_worker *wk, uint64_t tag, bool multiple, bool ack);
void amqp_publish_on_return(struct amqp_worker *wk, const amqp_basic_return_t *ret, const amqp_message_t *m);

#endif
