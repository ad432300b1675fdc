/* dedpool.h: the bounded pool of dedicated Redis connections: one
 * connection per blocking command (redis.blocking), per stream consumer
 * (stream.consume) and per WATCH transaction (redis.multi with watch),
 * never shared while in use, at most redis_blocking_pool of them. On a
 * Redis Cluster each connection serves one node (dedpool_take_for): the
 * bound holds over all nodes together.
 *
 * A connection taken is the taker's until it gives it back; the taker
 * sends on it with rds_conn_send or rds_conn_call, and leaves c->hooks
 * alone (the pool's). One given back while a command may still be
 * blocked on it (its request was cancelled) is first unblocked: CLIENT
 * UNBLOCK from a pooled connection (the blocked one cannot carry it),
 * then a PING on the connection itself, whose reply comes after the
 * blocked command's, marks it idle again. The connection's CLIENT ID is
 * asked when it is taken, ahead of the taker's command, so that it is
 * known by then; an UNBLOCK that finds nothing blocked while the command
 * is still unanswered (it overtook the command) is sent again. */
#ifndef FERRY_DEDPOOL_H
#define FERRY_DEDPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rds_module.h"

struct rds_conn;

/* An idle connection (ready or connecting), or a new one while fewer
 * than redis_blocking_pool exist; NULL when all are taken. */
struct rds_conn *dedpool_take(struct rds_backend *rb);
/* The same for a command on slot's keys: on a cluster, a connection to
 * the primary serving slot (slot < 0: any primary); elsewhere slot is
 * ignored. */
struct rds_conn *dedpool_take_for(struct rds_backend *rb, int slot);
/* Why dedpool_take returned NULL, for the request's answer: FE_OVERLOADED
 * when every connection is taken, FE_UNAVAILABLE when the idle ones
 * cannot reach Redis. Writes the message to msg. */
int dedpool_refusal(struct rds_backend *rb, char *msg, size_t len);
/* Gives c back. maybe_blocked: a command sent on it may still be
 * blocked in Redis (its request went away): unblock it first. */
void dedpool_give(struct rds_backend *rb, struct rds_conn *c, bool maybe_blocked);

extern const struct rds_module dedpool_module;

#endif
