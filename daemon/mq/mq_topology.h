/* mq_topology.h: exchanges, queues and bindings on the AMQP thread:
 * declaring them for clients, replaying the declarations after a
 * reconnect, and checking that an exchange exists before anything is
 * published to it. Above mq_conn; below publish and consume. */
#ifndef FERRY_MQ_TOPOLOGY_H
#define FERRY_MQ_TOPOLOGY_H

#include <stddef.h>
#include <amqp.h>

#include "list.h"
#include "mq_cmd.h"
#include "mq_conn.h"

struct mq_topology {
    struct mq_conn *conn;      /* refers */
    struct dlist decls;        /* owns: struct mq_cmd, the declarations to replay */
    char **known;              /* owns: exchanges checked to exist on this connection */
    size_t nknown;
};

void mq_topology_init(struct mq_topology *t, struct mq_conn *conn);
void mq_topology_free(struct mq_topology *t);
/* Runs a declare, delete, bind, unbind or purge (taking cmd) and answers it. */
void mq_topology_run(struct mq_topology *t, struct mq_cmd *cmd);
/* Declares again what clients declared, after a reconnect. Returns 0, or
 * FE_UNAVAILABLE when the connection was lost meanwhile. */
int mq_topology_replay(struct mq_topology *t);
/* Publishing to a missing exchange closes the channel it is published on;
 * this checks ex first with a passive declare on the topology channel,
 * where a 404 costs only the request. Returns 0, or a code with err set. */
int mq_topology_ensure_exchange(struct mq_topology *t, amqp_bytes_t ex, char *err, size_t errlen);
/* Forgets which exchanges were checked: after a reconnect, or when the
 * publish channel was closed (perhaps by one of them going away). */
void mq_topology_forget_exchanges(struct mq_topology *t);

#endif
