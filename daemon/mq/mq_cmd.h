/* mq_cmd.h: what crosses between the loop and the AMQP thread: commands
 * (loop -> thread), events (thread -> loop) and counters.
 *
 * Each owns everything it points to, and the side that consumes it frees
 * it, so neither thread ever reads memory the other may free. The thread
 * never sees a request or a client: results name requests by sequence
 * number, pushes name subscriptions by consumer number. */
#ifndef FERRY_MQ_CMD_H
#define FERRY_MQ_CMD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <amqp.h>

#include "cbuf.h"
#include "list.h"

/* One message to publish. Every byte it points to lives in its command's
 * pool. */
struct mq_msg {
    amqp_bytes_t exchange;
    amqp_bytes_t routing_key;
    amqp_bytes_t body;
    amqp_basic_properties_t props;
    bool mandatory;
};

enum mq_cmd_kind {
    MC_EXCHANGE_DECLARE,
    MC_EXCHANGE_DELETE,
    MC_QUEUE_DECLARE,
    MC_QUEUE_BIND,
    MC_QUEUE_UNBIND,
    MC_QUEUE_PURGE,
    MC_QUEUE_DELETE,
    MC_PUBLISH,          /* one message, or a batch (batch = true) */
    MC_PUBLISH_DELAYED,
    MC_CONSUME,
    MC_ACK,
    MC_NACK,
    MC_REJECT,
    MC_CANCEL,
    MC_GET,
    MC_RPC,
    MC_CLIENT_GONE,      /* no response: cancel the consumers of client_id */
};

struct mq_cmd {
    struct dlist node;         /* in a queue, or in the topology kept for replay */
    enum mq_cmd_kind kind;
    uint64_t seq;              /* the request's token; 0 when no response is due */
    uint64_t deadline;         /* mq_now_ms() after which nobody waits */
    amqp_pool_t pool;          /* owns every byte and table below */

    /* topology */
    amqp_bytes_t name;         /* exchange or queue */
    amqp_bytes_t type;         /* exchange type */
    amqp_bytes_t exchange;     /* for bind/unbind */
    amqp_bytes_t routing_key;
    amqp_table_t arguments;
    bool passive, durable, auto_delete, internal, exclusive, if_unused, if_empty;

    /* publish */
    struct mq_msg *msgs;       /* in pool */
    size_t nmsgs;
    bool batch, tx;
    uint64_t delay_ms;

    /* consume / ack / cancel */
    uint64_t consumer;         /* ferry-wide consumer number */
    uint64_t client_id;
    uint16_t prefetch;
    bool no_ack;
    uint64_t delivery_tag;     /* as given to the client (generation << MQ_TAG_BITS | tag) */
    bool multiple, requeue;
};

enum mq_event_kind { ME_RESULT, ME_PUSH, ME_STATE, ME_STOPPED };

/* Events are recycled (mq_conn_recycle): mq_conn_event_new resets a
 * reused one field by field, so a new field must be reset there too. */
struct mq_event {
    struct dlist node;         /* in a queue between the threads, or a spare list */
    enum mq_event_kind kind;
    uint64_t seq;              /* ME_RESULT: the request */
    int code;                  /* ME_RESULT: 0 or a negative fe code */
    char message[256];         /* ME_RESULT error text; ME_PUSH kind name */
    struct cbuf data;          /* owns: CBOR result, or push data */
    uint64_t consumer;         /* ME_PUSH */
    bool up, blocked;          /* ME_STATE */
    size_t addr;               /* ME_STATE: the URL connected to, or tried next */
    /* ME_PUSH deliveries: what the CONSUMER span needs. */
    char traceparent[64];      /* from the message's headers, or "" */
    char tracestate[512];
    char routing_key[256];
    char message_id[128];
    uint64_t delivery_tag;
    uint64_t body_size;
};

/* Counters the thread bumps and the loop reads for stats. */
struct mq_counters {
    atomic_uint_fast64_t connects, drops, confirms, nacks, returns, republished, deliveries;
    /* single acks that went to the broker inside one multiple ack */
    atomic_uint_fast64_t acks_merged;
};

/* The delivery tag a client sees carries the channel's generation, so an
 * ack for a delivery from before a reconnect is recognised as stale
 * instead of acking an unrelated message. */
#define MQ_TAG_BITS 40
#define MQ_TAG_MASK ((1ull << MQ_TAG_BITS) - 1)

struct mq_cmd *mq_cmd_new(enum mq_cmd_kind kind, uint64_t seq, uint64_t deadline);
void mq_cmd_free(struct mq_cmd *c);
void mq_event_free(struct mq_event *e);

/* Monotonic milliseconds, the clock deadlines use on both threads. */
uint64_t mq_now_ms(void);

#endif
