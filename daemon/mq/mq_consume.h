/* mq_consume.h: what comes back from the broker on the AMQP thread:
 * consumers (one channel each, resubscribed after a reconnect), their
 * acks, basic.get, and RPC over direct reply-to. Above mq_conn and
 * mq_topology; the pump hands it deliveries, returns and cancels. */
#ifndef FERRY_MQ_CONSUME_H
#define FERRY_MQ_CONSUME_H

#include <stdbool.h>
#include <stdint.h>
#include <amqp.h>

#include "cbuf.h"
#include "list.h"
#include "mq_cmd.h"
#include "mq_conn.h"
#include "mq_topology.h"

struct mq_consumers {
    struct mq_conn *conn;      /* refers */
    struct mq_topology *topo;  /* refers */
    struct dlist list;         /* owns: struct mq_consume_sub */
    struct dlist rpcs;         /* owns: struct mq_consume_rpc, RPCs awaiting their reply */
    amqp_channel_t next_ch;    /* where the search for a free consumer channel starts */
    struct cbuf extra;         /* owns: scratch for a delivery's own fields */
};

void mq_consume_init(struct mq_consumers *cs, struct mq_conn *conn, struct mq_topology *topo);
/* Runs a consume, ack, nack, reject, cancel, get, rpc or client-gone
 * command. Does not take cmd. A single ack is held until
 * mq_consume_flush. */
void mq_consume_run(struct mq_consumers *cs, struct mq_cmd *cmd);
/* Sends the acks held since the last flush (one multiple ack per
 * consumer where the broker's rules allow) and answers them: called once
 * the batch of commands taken together has run. */
void mq_consume_flush(struct mq_consumers *cs);
/* A basic.deliver on ch, with its message. */
void mq_consume_on_delivery(struct mq_consumers *cs, amqp_channel_t ch, const amqp_basic_deliver_t *d,
                            const amqp_message_t *m);
/* A basic.return on the RPC channel: the request reached no queue. */
void mq_consume_on_rpc_return(struct mq_consumers *cs, const amqp_basic_return_t *ret, const amqp_message_t *m);
/* The broker cancelled the consumer on ch (its queue was deleted). */
void mq_consume_on_cancel(struct mq_consumers *cs, amqp_channel_t ch);
/* The broker closed consumer channel ch: resubscribe on a new one. */
void mq_consume_on_channel_close(struct mq_consumers *cs, amqp_channel_t ch);
/* After a reconnect: resubscribes every consumer. Returns false when the
 * connection was lost before it was through. */
bool mq_consume_restore(struct mq_consumers *cs);
/* The connection is gone: consumers go inactive, waiting RPCs fail. */
void mq_consume_on_lost(struct mq_consumers *cs, const char *why);
/* Forgets RPCs whose deadline passed. */
void mq_consume_expire(struct mq_consumers *cs, uint64_t now);
/* Whether RPCs await replies (the thread then polls sooner). */
bool mq_consume_waiting(const struct mq_consumers *cs);
/* At stop: cancels every consumer, requeueing what it held. */
void mq_consume_shutdown(struct mq_consumers *cs);

#endif
