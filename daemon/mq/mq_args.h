/* mq_args.h: the AMQP ops' arguments, from the request's CBOR to a
 * command for the AMQP thread.
 *
 * Read in place through the codec's cursors (codec.h): nothing is
 * allocated for decoding, and what is kept (names, bodies, tables) is
 * copied into the command's pool. Pure (no I/O), so the loop can refuse
 * bad input before the broker sees it, and unit tests can drive it. */
#ifndef FERRY_MQ_ARGS_H
#define FERRY_MQ_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <amqp.h>

#include "codec.h"
#include "mq_cmd.h"

enum mq_op {
    MQ_OP_EXCHANGE_DECLARE = 1, MQ_OP_EXCHANGE_DELETE, MQ_OP_QUEUE_DECLARE, MQ_OP_QUEUE_BIND,
    MQ_OP_QUEUE_UNBIND, MQ_OP_QUEUE_PURGE, MQ_OP_QUEUE_DELETE, MQ_OP_PUBLISH, MQ_OP_PUBLISH_BATCH,
    MQ_OP_PUBLISH_DELAYED, MQ_OP_CONSUME, MQ_OP_ACK, MQ_OP_NACK, MQ_OP_REJECT, MQ_OP_CANCEL, MQ_OP_GET,
    MQ_OP_RPC,
};

/* The largest message body accepted; RabbitMQ's own default limit is
 * 128 MiB, but a body must also fit in one ferry frame. */
#define MQ_ARGS_MAX_BODY (8u * 1024 * 1024)

/* What converting needs to know beyond the arguments. */
struct mq_args_ctx {
    const char *op_name;       /* refers: for messages naming the op */
    uint64_t deadline;         /* the command's, in mq_now_ms() time */
    uint16_t default_prefetch; /* consume without "prefetch" */
    uint64_t client_id;        /* consume: whose consumer it is */
    /* ack, nack, reject, cancel: the consumer number of the client's
     * subscription sub; false when it has none. */
    bool (*find_sub)(void *ctx, uint64_t sub, uint64_t *consumer);
    void *ctx;
};

/* Converts the args of op (the raw CBOR of "args", NULL when absent) into
 * a new command. Returns it, or NULL with *code (FE_BAD_REQUEST or
 * FE_TOO_LARGE) and what is wrong in msg. */
struct mq_cmd *mq_args_build(enum mq_op op, const uint8_t *args, size_t len, const struct mq_args_ctx *ctx,
                             int *code, char *msg, size_t msglen);

/* Reads one CBOR item at c, which must be a map, as an AMQP field table:
 * text -> S, bytes -> x, integers -> l, booleans -> t, floats -> d,
 * null -> V, arrays -> A, maps -> F (nested), copied into pool. Returns
 * NULL, or what is wrong. */
const char *mq_args_table(struct cursor *c, amqp_table_t *out, amqp_pool_t *pool);

#endif
