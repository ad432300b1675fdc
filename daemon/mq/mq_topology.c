/* mq_topology.c: declarations on the topology channel, kept for replay;
 * see mq_topology.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "log.h"
#include "mq_topology.h"

static bool same(amqp_bytes_t a, amqp_bytes_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.bytes, b.bytes, a.len) == 0);
}

void mq_topology_init(struct mq_topology *t, struct mq_conn *conn)
{
    t->conn = conn;
    dlist_init(&t->decls);
    t->known = NULL;
    t->nknown = 0;
}

void mq_topology_free(struct mq_topology *t)
{
    while (!dlist_empty(&t->decls)) {
        struct mq_cmd *c = container_of(t->decls.next, struct mq_cmd, node);
        dlist_remove(&c->node);
        mq_cmd_free(c);
    }
    mq_topology_forget_exchanges(t);
}

/* Keeps the declarations to replay after a reconnect, and forgets what a
 * delete removed. Takes c when it is kept. */
static bool record(struct mq_topology *t, struct mq_cmd *c)
{
    struct dlist *pos, *tmp;
    switch (c->kind) {
    case MC_EXCHANGE_DECLARE:
    case MC_QUEUE_DECLARE:
        if (c->passive || c->name.len == 0)
            return false; /* server-named queues cannot be declared again by name */
        dlist_foreach_safe(pos, tmp, &t->decls) {
            struct mq_cmd *d = container_of(pos, struct mq_cmd, node);
            if (d->kind == c->kind && same(d->name, c->name)) {
                dlist_remove(pos);
                mq_cmd_free(d);
            }
        }
        dlist_push_tail(&t->decls, &c->node);
        return true;
    case MC_QUEUE_BIND:
        dlist_push_tail(&t->decls, &c->node);
        return true;
    case MC_EXCHANGE_DELETE:
    case MC_QUEUE_DELETE:
    case MC_QUEUE_UNBIND:
        dlist_foreach_safe(pos, tmp, &t->decls) {
            struct mq_cmd *d = container_of(pos, struct mq_cmd, node);
            bool drop = false;
            if (c->kind == MC_EXCHANGE_DELETE)
                drop = (d->kind == MC_EXCHANGE_DECLARE && same(d->name, c->name)) ||
                       (d->kind == MC_QUEUE_BIND && same(d->exchange, c->name));
            else if (c->kind == MC_QUEUE_DELETE)
                drop = (d->kind == MC_QUEUE_DECLARE && same(d->name, c->name)) ||
                       (d->kind == MC_QUEUE_BIND && same(d->name, c->name));
            else
                drop = d->kind == MC_QUEUE_BIND && same(d->name, c->name) && same(d->exchange, c->exchange) &&
                       same(d->routing_key, c->routing_key);
            if (drop) {
                dlist_remove(pos);
                mq_cmd_free(d);
            }
        }
        if (c->kind == MC_EXCHANGE_DELETE) {
            for (size_t i = 0; i < t->nknown; i++)
                if (strlen(t->known[i]) == c->name.len && memcmp(t->known[i], c->name.bytes, c->name.len) == 0)
                    t->known[i][0] = '\0';
        }
        return false;
    default:
        return false;
    }
}

/* Runs one topology RPC on MQ_CH_TOPO. Returns 0 or a code with err set;
 * on success the reply's fields go to out (when not NULL) as a CBOR map. */
/* The end of a purge or a delete: the RPC's verdict, then what it
 * counted, {"message_count": n}, when a result is wanted. */
static int message_count(struct mq_topology *t, uint32_t n, struct cbuf *out, char *err, size_t errlen)
{
    int rc = mq_conn_check_rpc(t->conn, MQ_CH_TOPO, err, errlen);
    if (rc == 0 && out) {
        cbuf_map(out, 1);
        cbuf_str(out, "message_count");
        cbuf_uint(out, n);
    }
    return rc;
}

static int rpc(struct mq_topology *t, struct mq_cmd *c, struct cbuf *out, char *err, size_t errlen)
{
    amqp_connection_state_t k = t->conn->state;
    int rc;
    switch (c->kind) {
    case MC_EXCHANGE_DECLARE:
        amqp_exchange_declare(k, MQ_CH_TOPO, c->name, c->type, c->passive, c->durable, c->auto_delete,
                              c->internal, c->arguments);
        break;
    case MC_EXCHANGE_DELETE:
        amqp_exchange_delete(k, MQ_CH_TOPO, c->name, c->if_unused);
        break;
    case MC_QUEUE_DECLARE: {
        amqp_queue_declare_ok_t *ok = amqp_queue_declare(k, MQ_CH_TOPO, c->name, c->passive, c->durable,
                                                         c->exclusive, c->auto_delete, c->arguments);
        if ((rc = mq_conn_check_rpc(t->conn, MQ_CH_TOPO, err, errlen)) != 0)
            return rc;
        if (out) {
            cbuf_map(out, 3);
            cbuf_str(out, "queue");
            cbuf_text(out, ok->queue.bytes, ok->queue.len);
            cbuf_str(out, "message_count");
            cbuf_uint(out, ok->message_count);
            cbuf_str(out, "consumer_count");
            cbuf_uint(out, ok->consumer_count);
        }
        return 0;
    }
    case MC_QUEUE_BIND:
        amqp_queue_bind(k, MQ_CH_TOPO, c->name, c->exchange, c->routing_key, c->arguments);
        break;
    case MC_QUEUE_UNBIND:
        amqp_queue_unbind(k, MQ_CH_TOPO, c->name, c->exchange, c->routing_key, c->arguments);
        break;
    case MC_QUEUE_PURGE: {
        amqp_queue_purge_ok_t *ok = amqp_queue_purge(k, MQ_CH_TOPO, c->name);
        return message_count(t, ok ? ok->message_count : 0, out, err, errlen);
    }
    case MC_QUEUE_DELETE: {
        amqp_queue_delete_ok_t *ok = amqp_queue_delete(k, MQ_CH_TOPO, c->name, c->if_unused, c->if_empty);
        return message_count(t, ok ? ok->message_count : 0, out, err, errlen);
    }
    default:
        return FE_INTERNAL;
    }
    if ((rc = mq_conn_check_rpc(t->conn, MQ_CH_TOPO, err, errlen)) != 0)
        return rc;
    if (out)
        cbuf_map(out, 0);
    return 0;
}

void mq_topology_run(struct mq_topology *t, struct mq_cmd *c)
{
    char err[200];
    struct cbuf out;
    cbuf_init(&out);
    int rc = rpc(t, c, &out, err, sizeof(err));
    if (rc) {
        mq_conn_reply_err(t->conn, c->seq, rc, "%s", err);
        cbuf_free(&out);
        mq_cmd_free(c);
        return;
    }
    mq_conn_reply_ok(t->conn, c->seq, &out);
    if (!record(t, c))
        mq_cmd_free(c);
}

int mq_topology_replay(struct mq_topology *t)
{
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &t->decls) {
        struct mq_cmd *c = container_of(pos, struct mq_cmd, node);
        char err[200];
        int rc = rpc(t, c, NULL, err, sizeof(err));
        if (rc == FE_UNAVAILABLE)
            return rc;
        if (rc)
            log_warn("amqp: re-declaring '%.*s' after reconnecting failed: %s", (int)c->name.len,
                     (char *)c->name.bytes, err);
    }
    return 0;
}

static bool exchange_known(struct mq_topology *t, amqp_bytes_t ex)
{
    if (ex.len == 0 || (ex.len >= 4 && memcmp(ex.bytes, "amq.", 4) == 0))
        return true;
    for (size_t i = 0; i < t->nknown; i++)
        if (strlen(t->known[i]) == ex.len && memcmp(t->known[i], ex.bytes, ex.len) == 0)
            return true;
    return false;
}

void mq_topology_forget_exchanges(struct mq_topology *t)
{
    for (size_t i = 0; i < t->nknown; i++)
        free(t->known[i]);
    free(t->known);
    t->known = NULL;
    t->nknown = 0;
}

int mq_topology_ensure_exchange(struct mq_topology *t, amqp_bytes_t ex, char *err, size_t errlen)
{
    if (exchange_known(t, ex))
        return 0;
    amqp_exchange_declare(t->conn->state, MQ_CH_TOPO, ex, amqp_cstring_bytes("direct"), 1, 0, 0, 0,
                          amqp_empty_table);
    int rc = mq_conn_check_rpc(t->conn, MQ_CH_TOPO, err, errlen);
    if (rc)
        return rc;
    t->known = xrealloc(t->known, (t->nknown + 1) * sizeof(char *));
    char *name = xmalloc(ex.len + 1);
    memcpy(name, ex.bytes, ex.len);
    name[ex.len] = '\0';
    t->known[t->nknown++] = name;
    return 0;
}
