/* dedpool.c: the pool of dedicated connections (dedpool.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "dedpool.h"
#include "log.h"
#include "rds_backend.h"
#include "rds_config.h"
#include "rds_conn.h"

struct dedpool {
    struct rds_backend *rb;     /* refers */
    struct rds_conn **conns;    /* owns: every dedicated connection made */
    bool *busy;                 /* by index: taken, or being unblocked */
    size_t n, cap;
    bool started;               /* the loop runs: new connections may start */
    uint64_t taken, refused, unblocks;
};

static struct dedpool *pool_of(struct rds_backend *rb)
{
    return rds_backend_state(rb, &dedpool_module);
}

static size_t index_of(struct dedpool *p, const struct rds_conn *c)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->conns[i] == c)
            return i;
    abort();
}

/* Each (re)connect: learn its id, which CLIENT UNBLOCK names. */
static void on_client_id(void *arg, const redisReply *reply)
{
    struct rds_conn *c = arg;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        c->client_id = (uint64_t)reply->integer;
}

static void on_ready(struct rds_conn *c, void *arg)
{
    (void)arg;
    const char *argv[2] = {"CLIENT", "ID"};
    size_t lens[2] = {6, 2};
    c->client_id = 0;
    if (rds_conn_call(c, 2, argv, lens, on_client_id, c) != 0)
        log_warn("redis: cannot ask a dedicated connection's CLIENT ID");
}

struct rds_conn *dedpool_take(struct rds_backend *rb)
{
    struct dedpool *p = pool_of(rb);
    struct rds_conn *best = NULL;
    size_t bi = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct rds_conn *c = p->conns[i];
        if (p->busy[i] || !rds_conn_usable(c))
            continue;
        if (!best || (c->state == RC_READY && best->state != RC_READY)) {
            best = c;
            bi = i;
        }
    }
    if (!best && p->n < (size_t)rb->t.rc->blocking_pool) {
        if (p->n == p->cap) {
            p->cap = p->cap ? p->cap * 2 : 4;
            p->conns = xrealloc(p->conns, p->cap * sizeof(*p->conns));
            p->busy = xrealloc(p->busy, p->cap * sizeof(*p->busy));
        }
        best = rds_backend_dedicated(rb);
        best->hooks.ready = on_ready;
        best->hooks.arg = p;
        bi = p->n++;
        p->conns[bi] = best;
        if (p->started)
            rds_conn_start(best);
    }
    if (!best) {
        p->refused++;
        return NULL;
    }
    p->busy[bi] = true;
    p->taken++;
    return best;
}

/* The PING behind an unblocked command answered: the connection is free. */
static void on_drained(void *arg, const redisReply *reply)
{
    (void)reply;
    struct rds_conn *c = arg;
    struct dedpool *p = c->hooks.arg;
    p->busy[index_of(p, c)] = false;
}

static void on_unblock(void *arg, const redisReply *reply)
{
    (void)arg;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("redis: CLIENT UNBLOCK refused: %.*s", (int)(reply->len > 200 ? 200 : reply->len), reply->str);
}

void dedpool_give(struct rds_backend *rb, struct rds_conn *c, bool maybe_blocked)
{
    struct dedpool *p = pool_of(rb);
    size_t i = index_of(p, c);
    if (!maybe_blocked || rds_conn_pending(c) == 0 || c->state != RC_READY) {
        p->busy[i] = false;
        return;
    }
    /* Why CLIENT UNBLOCK rather than dropping the connection: it keeps
     * the connection (no reconnect, no handshake), and Redis answers the
     * blocked command at once with its timeout reply, which is read and
     * dropped (its slot is empty). A connection that is gone is not
     * unblocked: it reconnects by itself. */
    if (c->client_id) {
        char id[24];
        int n = snprintf(id, sizeof(id), "%llu", (unsigned long long)c->client_id);
        const char *argv[4] = {"CLIENT", "UNBLOCK", id, "TIMEOUT"};
        size_t lens[4] = {6, 7, (size_t)n, 7};
        if (rds_backend_call(rb, NULL, 0, 4, argv, lens, on_unblock, NULL) == 0)
            p->unblocks++;
    }
    const char *ping[1] = {"PING"};
    size_t plen[1] = {4};
    if (rds_conn_call(c, 1, ping, plen, on_drained, c) != 0)
        p->busy[i] = false; /* it failed: nothing is blocked on it any more */
}

static int dp_create(struct rds_backend *rb, void **state, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct dedpool *p = xcalloc(1, sizeof(*p));
    p->rb = rb;
    *state = p;
    /* Descriptors the pool may hold at once, which clients must leave. */
    rb->base.fds += rb->t.rc->blocking_pool;
    return 0;
}

static void dp_start(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct dedpool *p = state;
    p->started = true;
    for (size_t i = 0; i < p->n; i++)
        rds_conn_start(p->conns[i]);
}

static void dp_stats(struct rds_backend *rb, void *state, struct cbuf *o)
{
    struct dedpool *p = state;
    size_t busy = 0, ready = 0;
    for (size_t i = 0; i < p->n; i++) {
        busy += p->busy[i];
        ready += p->conns[i]->state == RC_READY;
    }
    cbuf_map(o, 7);
    cbuf_str(o, "size");
    cbuf_uint(o, (uint64_t)rb->t.rc->blocking_pool);
    cbuf_str(o, "open");
    cbuf_uint(o, p->n);
    cbuf_str(o, "ready");
    cbuf_uint(o, ready);
    cbuf_str(o, "in_use");
    cbuf_uint(o, busy);
    cbuf_str(o, "taken");
    cbuf_uint(o, p->taken);
    cbuf_str(o, "refused");
    cbuf_uint(o, p->refused);
    cbuf_str(o, "unblocks");
    cbuf_uint(o, p->unblocks);
}

static void dp_close(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct dedpool *p = state;
    for (size_t i = 0; i < p->n; i++)
        rds_conn_stop(p->conns[i]);
}

static void dp_destroy(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct dedpool *p = state;
    for (size_t i = 0; i < p->n; i++)
        rds_conn_free(p->conns[i]);
    free(p->conns);
    free(p->busy);
    free(p);
}

const struct rds_module dedpool_module = {
    .name = "dedicated",
    .create = dp_create,
    .start = dp_start,
    .stats = dp_stats,
    .close = dp_close,
    .destroy = dp_destroy,
};
