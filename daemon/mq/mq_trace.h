/* mq_trace.h: every span the AMQP side makes, and the trace context it
 * carries in message headers. The only file of mq/ that calls the
 * telemetry API, so that a change to that API touches only mq_trace.c. */
#ifndef FERRY_MQ_TRACE_H
#define FERRY_MQ_TRACE_H

#include "mq_args.h"
#include "mq_cmd.h"
#include "trace_context.h"
#include "url.h"

/* Room for a traceparent and its terminating NUL. */
#define MQ_TRACE_TP_SIZE (TRACEPARENT_LEN + 1)

struct request;
struct span;
struct telemetry;

/* Names r's span per the messaging semantic conventions and, for
 * publishes and rpc, puts the trace context into c's messages' headers,
 * so that a consumer continues the trace. queue is the subscription's
 * queue for ack, nack and reject (NULL when unknown); server is the
 * broker's address (NULL when none). */
void mq_trace_request(struct request *r, enum mq_op op, struct mq_cmd *c, const char *queue,
                      const struct url_amqp *server);

/* Starts the CONSUMER span of a delivery e pushed from queue: it continues
 * the publisher's trace (from the message's headers). tp_out receives the
 * traceparent to push to the client ("" for none). Returns the span, or
 * NULL when not sampled. */
struct span *mq_trace_delivery_start(struct telemetry *t, const char *queue, const struct mq_event *e,
                                     const struct url_amqp *server, char tp_out[MQ_TRACE_TP_SIZE]);
/* Ends it, once the delivery is in the client's output. */
void mq_trace_delivery_end(struct telemetry *t, struct span *sp);

#endif
