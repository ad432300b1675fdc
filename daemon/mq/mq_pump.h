/* mq_pump.h: reads the frames the broker sent unasked (confirms,
 * returns, deliveries, cancels, channel and connection closes, blocks)
 * and hands each to the layer it belongs to, through a table of handlers
 * by method. */
#ifndef FERRY_MQ_PUMP_H
#define FERRY_MQ_PUMP_H

#include "mq_conn.h"
#include "mq_consume.h"
#include "mq_publish.h"
#include "mq_topology.h"

/* The layers frames go to. */
struct mq_pump {
    struct mq_conn *conn;       /* refers */
    struct mq_topology *topo;   /* refers */
    struct mq_publisher *pub;   /* refers */
    struct mq_consumers *cons;  /* refers */
};

/* Reads every frame that has arrived, without waiting, and posts the
 * events they made to the loop together. */
void mq_pump_run(struct mq_pump *p);

#endif
