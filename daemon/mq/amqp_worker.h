/* amqp_worker.h: the thread that owns the AMQP connection, and the two
 * queues through which it talks to the loop.
 *
 * rabbitmq-c 0.11's RPCs block (declare, bind, qos, consume, tx.commit ...),
 * so the connection lives on its own thread and the loop never waits on
 * the broker. Driving the socket from the loop with uv_poll would mean
 * re-implementing every RPC as a state machine over rabbitmq-c's frame
 * API; a thread keeps the library's own, tested RPC code.
 *
 *   loop --cmd--> [mutex: cmds] --eventfd--> worker --rabbitmq-c--> broker
 *   loop <--event-- [mutex: events] <--uv_async-- worker <------------+
 *
 * Everything a command or event points to is owned by it and freed by the
 * side that consumes it. The worker never touches loop objects (requests,
 * clients); results name requests by sequence number. */
#ifndef FERRY_AMQP_WORKER_H
#define FERRY_AMQP_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <amqp.h>
#include <uv.h>

#include "amqp_props.h"
#include "cbuf.h"
#include "list.h"
#include "url.h"

enum amqp_cmd_kind {
    AC_EXCHANGE_DECLARE,
    AC_EXCHANGE_DELETE,
    AC_QUEUE_DECLARE,
    AC_QUEUE_BIND,
    AC_QUEUE_UNBIND,
    AC_QUEUE_PURGE,
    AC_QUEUE_DELETE,
    AC_PUBLISH,          /* one message, or a batch (batch = true) */
    AC_PUBLISH_DELAYED,
    AC_CONSUME,
    AC_ACK,
    AC_NACK,
    AC_REJECT,
    AC_CANCEL,
    AC_GET,
    AC_RPC,
    AC_CLIENT_GONE,      /* no response: cancel the consumers of client_id */
};

struct amqp_cmd {
    struct dlist node;
    enum amqp_cmd_kind kind;
    uint64_t seq;              /* the request's token; 0 when no response is due */
    uint64_t deadline;         /* CLOCK_MONOTONIC ms after which nobody waits */
    amqp_pool_t pool;          /* owns every byte and table below */

    /* topology */
    amqp_bytes_t name;         /* exchange or queue */
    amqp_bytes_t type;         /* exchange type */
    amqp_bytes_t exchange;     /* for bind/unbind */
    amqp_bytes_t routing_key;
    amqp_table_t arguments;
    bool passive, durable, auto_delete, internal, exclusive, if_unused, if_empty;

    /* publish */
    struct amqp_out_msg *msgs; /* in pool */
    size_t nmsgs;
    bool batch, tx;
    uint64_t delay_ms;

    /* consume / ack / cancel */
    uint64_t consumer;         /* ferry-wide consumer number */
    uint64_t client_id;
    uint16_t prefetch;
    bool no_ack;
    uint64_t delivery_tag;     /* as given to the client (generation << 40 | tag) */
    bool multiple, requeue;
};

enum amqp_event_kind { AE_RESULT, AE_PUSH, AE_STATE, AE_STOPPED };

/* Events are recycled (amqp_worker_recycle): event_new resets a reused
 * one field by field, so a new field must be reset there too. */
struct amqp_event {
    struct dlist node;
    enum amqp_event_kind kind;
    uint64_t seq;              /* AE_RESULT: the request */
    int code;                  /* AE_RESULT: 0 or a negative fe code */
    char message[256];         /* AE_RESULT error text; AE_PUSH kind name */
    struct cbuf data;          /* owns: CBOR result, or push data */
    uint64_t consumer;         /* AE_PUSH */
    bool up, blocked;          /* AE_STATE */
    /* AE_PUSH deliveries: what the CONSUMER span needs. */
    char traceparent[64];      /* from the message's headers, or "" */
    char tracestate[512];
    char routing_key[256];
    char message_id[128];
    uint64_t delivery_tag;
    uint64_t body_size;
};

/* Counters the worker bumps and the loop reads for stats. */
struct amqp_counters {
    atomic_uint_fast64_t connects, drops, confirms, nacks, returns, republished, deliveries;
};

struct amqp_worker {
    /* Shared, under mu. */
    pthread_mutex_t mu;
    struct dlist cmds;         /* owns: loop -> worker */
    struct dlist events;       /* owns: worker -> loop */
    /* owns: events the loop is done with, for the worker to fill again.
     * An event allocated on one thread and freed on the other never
     * reaches the allocating thread's malloc cache, so every delivery
     * took malloc's slow path twice; recycled, a delivery allocates
     * nothing. At most EVENT_SPARE_MAX are kept. */
    struct dlist spare;
    size_t nspare;
    bool stop;
    int wake_fd;               /* eventfd: the loop wakes the worker */
    uv_async_t *async;         /* refers: the worker wakes the loop */
    atomic_int sockfd;         /* the broker socket, for shutdown() at stop */
    struct amqp_counters counters;

    /* Set before the thread starts, then read-only. */
    struct url_amqp *addrs;   /* refers: owned by the backend */
    size_t naddrs;
    uint64_t connect_timeout_ms, backoff_min_ms, backoff_max_ms;
    pthread_t thread;
    bool started;

    struct amqp_wstate *w;     /* owns: the worker's private state */
};

/* Starts the thread. Returns 0 or -1. */
int amqp_worker_start(struct amqp_worker *wk);
/* Queues cmd (taking it) and wakes the worker. Thread: loop. */
void amqp_worker_post(struct amqp_worker *wk, struct amqp_cmd *cmd);
/* Asks the worker to close the connection and exit; it answers with an
 * AE_STOPPED event. Thread: loop. */
void amqp_worker_stop(struct amqp_worker *wk);
/* Unblocks a worker stuck writing to a frozen broker. Thread: loop. */
void amqp_worker_kick_socket(struct amqp_worker *wk);
void amqp_worker_join(struct amqp_worker *wk);

struct amqp_cmd *amqp_cmd_new(enum amqp_cmd_kind kind, uint64_t seq, uint64_t deadline);
void amqp_cmd_free(struct amqp_cmd *c);
void amqp_event_free(struct amqp_event *e);
/* Gives back events the loop is done with (a list of struct amqp_event),
 * for reuse by the worker; what is over the spare bound is freed. */
void amqp_worker_recycle(struct amqp_worker *wk, struct dlist *done);

/* Monotonic milliseconds, the clock deadlines use on both threads. */
uint64_t amqp_now_ms(void);

/* The delivery tag a client sees carries the channel's generation, so an
 * ack for a delivery from before a reconnect is recognised as stale
 * instead of acking an unrelated message. */
#define AMQP_TAG_BITS 40
#define AMQP_TAG_MASK ((1ull << AMQP_TAG_BITS) - 1)

#endif
