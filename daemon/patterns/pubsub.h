/* pubsub.h: Redis pub/sub as ops (pubsub.subscribe, pubsub.psubscribe,
 * pubsub.unsubscribe, pubsub.publish).
 *
 * Every client's subscriptions share one dedicated subscriber connection:
 * a channel or pattern is subscribed on Redis once, whatever number of
 * subscriptions name it, and unsubscribed when the last one ends. A
 * message is decoded once, its push's data encoded once, and then pushed
 * to each subscription on it:
 *
 *   Redis ──> subscriber conn ──> sink ──> name table ──> members
 *                                                          │ per subscription:
 *                                                          ▼ client_push, or
 *                                    dropped (over redis_pubsub_buffer) / disconnect
 *
 * A client's unwritten output past redis_pubsub_buffer drops its messages
 * (counted, then a 'dropped' push) or, with redis_pubsub_overflow =
 * disconnect, closes it: nobody else waits. After a reconnect every name
 * is subscribed again, and each subscription gets a 'gap' push once all
 * of its names are back. */
#ifndef FERRY_PUBSUB_H
#define FERRY_PUBSUB_H

#include "rds_module.h"

extern const struct rds_module pubsub_module;

#endif
