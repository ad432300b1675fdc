/* mq_worker.h: the thread that owns the AMQP connection, as the loop
 * sees it: start it, post commands, take events, stop it.
 *
 * rabbitmq-c 0.11's RPCs block (declare, bind, qos, consume, tx.commit ...),
 * so the connection lives on its own thread and the loop never waits on
 * the broker (docs/design.md, "RabbitMQ: one thread per connection"). */
#ifndef FERRY_MQ_WORKER_H
#define FERRY_MQ_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"
#include "mq_cmd.h"
#include "mq_tls.h"
#include "url.h"

struct mq_worker;

struct mq_worker_config {
    struct url_amqp *addrs;   /* refers: must outlive the worker */
    size_t naddrs;
    uint64_t connect_timeout_ms, backoff_min_ms, backoff_max_ms;
    const struct mq_tls *tls; /* for amqps:// URLs; copied */
};

struct mq_worker *mq_worker_new(void);
/* Starts the thread, which wakes async whenever events wait. Returns 0 or -1. */
int mq_worker_start(struct mq_worker *wk, const struct mq_worker_config *cfg, uv_async_t *async);
/* Queues cmd (taking it) and wakes the thread. */
void mq_worker_post(struct mq_worker *wk, struct mq_cmd *cmd);
/* Moves the events waiting for the loop to out (struct mq_event). */
void mq_worker_take_events(struct mq_worker *wk, struct dlist *out);
/* Gives back events the loop is done with, for the thread to fill again. */
void mq_worker_recycle(struct mq_worker *wk, struct dlist *done);
/* Asks the thread to close the connection and exit; it answers with an
 * ME_STOPPED event. */
void mq_worker_stop(struct mq_worker *wk);
/* Unblocks a thread stuck writing to a frozen broker. */
void mq_worker_kick_socket(struct mq_worker *wk);
/* New amqp_tls_* values (copied), for the next connection attempt. */
void mq_worker_set_tls(struct mq_worker *wk, const struct mq_tls *t);
/* Waits for the thread to exit (nothing when it never started). */
void mq_worker_join(struct mq_worker *wk);
/* Frees the worker, joining it first. */
void mq_worker_free(struct mq_worker *wk);
/* The thread's counters, read atomically. */
const struct mq_counters *mq_worker_counters(const struct mq_worker *wk);

#endif
