/* mq_worker.c: the AMQP thread: runs commands through the layers of
 * mq/, reconnects, and stops.
 *
 *   mq_worker   the thread: commands in, reconnecting, expiry, stopping
 *   mq_pump     frames nobody waits for, dispatched by method
 *   mq_publish  mq_consume        confirms; consumers, get, rpc
 *   mq_topology                   declarations, replay, exchange checks
 *   mq_conn     the socket, channels, RPC checks, the hand-off to the loop
 *
 * Each layer calls only those below it; the connection layer tells the
 * others of a lost connection through on_lost, set here.
 *
 * What survives a reconnect: the exchanges, queues and bindings declared
 * through ferryd are declared again, consumers are resubscribed (their
 * delivery tags get a new generation), and publishes that were sent but
 * not confirmed are sent again while their deadline allows. */
#include <pthread.h>
#include <stdlib.h>

#include "errors.h"
#include "mq_conn.h"
#include "mq_consume.h"
#include "mq_publish.h"
#include "mq_pump.h"
#include "mq_topology.h"
#include "mq_worker.h"

struct mq_worker {
    struct mq_conn conn;
    struct mq_topology topo;
    struct mq_publisher pub;
    struct mq_consumers cons;
    struct mq_pump pump;
    pthread_t thread;
};

/* mq_conn's on_lost: what died with the connection, layer by layer. */
static void on_lost(void *ctx, const char *why)
{
    struct mq_worker *wk = ctx;
    mq_publish_on_lost(&wk->pub);
    mq_consume_on_lost(&wk->cons, why);
    mq_topology_forget_exchanges(&wk->topo);
}

/* After connecting: declares again what clients declared, resubscribes
 * consumers and sends unconfirmed messages again. */
static void restore(struct mq_worker *wk)
{
    if (mq_topology_replay(&wk->topo) == FE_UNAVAILABLE)
        return;
    if (mq_consume_restore(&wk->cons))
        mq_publish_restore(&wk->pub);
}

static void connect_now(struct mq_worker *wk)
{
    if (mq_conn_connect(&wk->conn) != 0)
        return;
    restore(wk);
    if (wk->conn.state)
        mq_conn_post_state(&wk->conn);
}

static void execute(struct mq_worker *wk, struct mq_cmd *c)
{
    if (c->kind == MC_CLIENT_GONE || c->kind == MC_CANCEL) {
        /* Run even when late or disconnected: they only let go. */
        mq_consume_run(&wk->cons, c);
        mq_cmd_free(c);
        return;
    }
    if (c->deadline <= mq_now_ms()) {
        mq_cmd_free(c); /* nobody is waiting any more */
        return;
    }
    if (!wk->conn.state) {
        mq_conn_reply_err(&wk->conn, c->seq, FE_UNAVAILABLE, "not connected to the broker: %s",
                          wk->conn.last_error);
        mq_cmd_free(c);
        return;
    }
    switch (c->kind) {
    case MC_EXCHANGE_DECLARE:
    case MC_EXCHANGE_DELETE:
    case MC_QUEUE_DECLARE:
    case MC_QUEUE_BIND:
    case MC_QUEUE_UNBIND:
    case MC_QUEUE_PURGE:
    case MC_QUEUE_DELETE:
        mq_topology_run(&wk->topo, c);
        return;
    case MC_PUBLISH:
    case MC_PUBLISH_DELAYED:
        mq_publish_run(&wk->pub, c);
        return;
    default:
        mq_consume_run(&wk->cons, c);
        mq_cmd_free(c);
        return;
    }
}

static int poll_timeout(struct mq_worker *wk)
{
    struct mq_conn *conn = &wk->conn;
    int timeout = 1000;
    if (conn->state && conn->heartbeat > 0 && conn->heartbeat * 500 < timeout)
        timeout = conn->heartbeat * 500;
    if (!conn->state) {
        uint64_t now = mq_now_ms();
        timeout = conn->retry_at > now ? (int)(conn->retry_at - now) : 0;
        if (timeout > 1000)
            timeout = 1000;
    }
    if (mq_consume_waiting(&wk->cons) || mq_publish_waiting(&wk->pub))
        timeout = timeout > 100 ? 100 : timeout;
    return timeout;
}

static void *worker_main(void *arg)
{
    struct mq_worker *wk = arg;
    struct mq_conn *conn = &wk->conn;
    struct dlist local;
    dlist_init(&local);
    for (;;) {
        if (mq_conn_take_cmds(conn, &local))
            break;
        if (!conn->state && mq_now_ms() >= conn->retry_at)
            connect_now(wk);
        while (!dlist_empty(&local)) {
            struct dlist *n = local.next;
            dlist_remove(n);
            execute(wk, container_of(n, struct mq_cmd, node));
        }
        mq_consume_flush(&wk->cons);
        if (conn->state)
            mq_pump_run(&wk->pump);
        uint64_t now = mq_now_ms();
        mq_consume_expire(&wk->cons, now);
        mq_publish_expire(&wk->pub, now);
        mq_publish_retry(&wk->pub, now);
        if (conn->state && (amqp_frames_enqueued(conn->state) || amqp_data_in_buffer(conn->state)))
            continue;
        mq_conn_wait(conn, poll_timeout(wk));
    }

    /* Stopping: whatever is left gets 'shutting_down' (the loop has
     * answered its requests already; these replies are dropped). */
    while (!dlist_empty(&local)) {
        struct mq_cmd *c = container_of(local.next, struct mq_cmd, node);
        dlist_remove(&c->node);
        mq_cmd_free(c);
    }
    mq_publish_shutdown(&wk->pub);
    mq_consume_shutdown(&wk->cons);
    mq_topology_free(&wk->topo);
    mq_conn_close(conn);
    mq_conn_post(conn, mq_conn_event_new(conn, ME_STOPPED));
    return NULL;
}

struct mq_worker *mq_worker_new(void)
{
    return xcalloc(1, sizeof(struct mq_worker));
}

int mq_worker_start(struct mq_worker *wk, const struct mq_worker_config *cfg, uv_async_t *async)
{
    struct mq_conn *conn = &wk->conn;
    if (mq_conn_init(conn) != 0)
        return -1;
    conn->async = async;
    conn->addrs = cfg->addrs;
    conn->naddrs = cfg->naddrs;
    conn->connect_timeout_ms = cfg->connect_timeout_ms;
    conn->backoff_min_ms = cfg->backoff_min_ms;
    conn->backoff_max_ms = cfg->backoff_max_ms;
    mq_tls_copy(&conn->tls, cfg->tls);
    conn->on_lost = on_lost;
    conn->on_lost_ctx = wk;
    mq_topology_init(&wk->topo, conn);
    mq_publish_init(&wk->pub, conn, &wk->topo);
    mq_consume_init(&wk->cons, conn, &wk->topo);
    wk->pump = (struct mq_pump){.conn = conn, .topo = &wk->topo, .pub = &wk->pub, .cons = &wk->cons};
    conn->started = true;
    if (pthread_create(&wk->thread, NULL, worker_main, wk) != 0) {
        conn->started = false;
        mq_consume_shutdown(&wk->cons);
        mq_conn_destroy(conn);
        return -1;
    }
    return 0;
}

void mq_worker_post(struct mq_worker *wk, struct mq_cmd *cmd)
{
    mq_conn_post_cmd(&wk->conn, cmd);
}

void mq_worker_take_events(struct mq_worker *wk, struct dlist *out)
{
    mq_conn_take_events(&wk->conn, out);
}

void mq_worker_recycle(struct mq_worker *wk, struct dlist *done)
{
    mq_conn_recycle(&wk->conn, done);
}

void mq_worker_stop(struct mq_worker *wk)
{
    mq_conn_stop(&wk->conn);
}

void mq_worker_kick_socket(struct mq_worker *wk)
{
    mq_conn_kick_socket(&wk->conn);
}

void mq_worker_set_tls(struct mq_worker *wk, const struct mq_tls *t)
{
    if (wk->conn.started)
        mq_conn_set_tls(&wk->conn, t);
}

void mq_worker_join(struct mq_worker *wk)
{
    if (!wk->conn.started)
        return;
    pthread_join(wk->thread, NULL);
    wk->conn.started = false;
    mq_conn_destroy(&wk->conn);
}

void mq_worker_free(struct mq_worker *wk)
{
    if (!wk)
        return;
    mq_worker_join(wk);
    free(wk);
}

const struct mq_counters *mq_worker_counters(const struct mq_worker *wk)
{
    return &wk->conn.counters;
}
