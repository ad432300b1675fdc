/* mq_publish.h: publishing on the AMQP thread: confirmed messages (single
 * and batched), delayed messages through holding queues, and
 * transactional batches. Above mq_conn and mq_topology; the pump hands it
 * the broker's confirms and returns. */
#ifndef FERRY_MQ_PUBLISH_H
#define FERRY_MQ_PUBLISH_H

#include <stdbool.h>
#include <stdint.h>
#include <amqp.h>

#include "list.h"
#include "mq_cmd.h"
#include "mq_conn.h"
#include "mq_topology.h"

struct mq_publisher {
    struct mq_conn *conn;      /* refers */
    struct mq_topology *topo;  /* refers */
    struct dlist pubs;         /* struct mq_publish_msg, in publish order (owned by their groups) */
    char **holding;            /* owns: delay queues declared on this connection */
    size_t nholding;
    size_t nparked;            /* messages nacked and waiting for a fresh channel */
    amqp_channel_t draining;   /* the confirm channel given up, until its confirms are in; or 0 */
    uint64_t moved_at;         /* mq_now_ms() when publishing last moved to a fresh channel */
};

void mq_publish_init(struct mq_publisher *pb, struct mq_conn *conn, struct mq_topology *topo);
/* Publishes cmd's messages (taking cmd): confirmed, or in a transaction
 * when cmd->tx. */
void mq_publish_run(struct mq_publisher *pb, struct mq_cmd *cmd);
/* Sends whatever is waiting and unsent, unless blocked or disconnected. */
void mq_publish_flush(struct mq_publisher *pb);
/* basic.ack / basic.nack on channel ch (ignored unless it is the confirm
 * channel in use). A nack parks the message for mq_publish_retry, up to
 * MQ_PUB_NACK_RETRIES times; the next one is the client's answer. */
void mq_publish_on_confirm(struct mq_publisher *pb, amqp_channel_t ch, uint64_t tag, bool multiple, bool ack);
/* basic.return on channel ch: a mandatory message no queue took. */
void mq_publish_on_return(struct mq_publisher *pb, amqp_channel_t ch, const amqp_basic_return_t *ret,
                          const amqp_message_t *m);
/* The confirm channel in use was reopened: what was sent on it and not
 * confirmed died with it and is sent again. */
void mq_publish_resend(struct mq_publisher *pb);
/* After a reconnect: sends again what was unconfirmed. */
void mq_publish_restore(struct mq_publisher *pb);
/* The connection is gone: sent messages go back to unsent. */
void mq_publish_on_lost(struct mq_publisher *pb);
/* Fails the messages whose deadline passed while they could not be sent. */
void mq_publish_expire(struct mq_publisher *pb, uint64_t now);
/* When nacked messages are parked: fails those past their deadline, and
 * moves publishing to a fresh confirm channel (at most one move per
 * MQ_PUB_MOVE_MS), sending them again there. Closes the channel given up
 * once its confirms are in. */
void mq_publish_retry(struct mq_publisher *pb, uint64_t now);
/* The broker closed the confirm channel given up: what was in flight on
 * it is sent again. */
void mq_publish_on_channel_closed(struct mq_publisher *pb, amqp_channel_t ch);
/* Whether messages await their confirms (the thread then polls sooner). */
bool mq_publish_waiting(const struct mq_publisher *pb);
/* At stop: fails every waiting message with 'shutting_down'. */
void mq_publish_shutdown(struct mq_publisher *pb);

#endif
