/* dedpool.c: the pool of dedicated connections (dedpool.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "dedpool.h"
#include "errors.h"
#include "log.h"
#include "rds_backend.h"
#include "rds_cluster.h"
#include "rds_config.h"
#include "rds_conn.h"

/* What a dedicated connection is doing. */
enum dslot_state {
    DS_FREE,     /* idle: dedpool_take may hand it out */
    DS_TAKEN,    /* its taker's */
    DS_DRAINING, /* given back while a command may still block on it */
};

struct dslot {
    struct rds_conn *c;       /* owns */
    enum dslot_state st;
    bool asking;              /* a CLIENT ID awaits its reply on it */
    unsigned retries;         /* CLIENT UNBLOCKs that found it not (yet) blocked */
};

struct dedpool {
    struct rds_backend *rb;     /* refers */
    struct dslot *slots;        /* owns: every dedicated connection made */
    size_t n, cap;
    bool started;               /* the loop runs: new connections may start */
    bool just_moved;            /* the latest take moved an idle connection (for dedpool_refusal) */
    struct rds_conn *unusable;  /* refers: the latest take's idle connection to its node that cannot serve now */
    uint64_t taken, refused, unblocks;
    uint64_t moved;             /* idle connections moved to another cluster node */
};

/* A CLIENT UNBLOCK that finds its target not blocked is sent again this
 * many times at most: the command may not have reached Redis yet. */
#define UNBLOCK_RETRIES 100

static struct dedpool *pool_of(struct rds_backend *rb)
{
    return rds_backend_state(rb, &dedpool_module);
}

static struct dslot *slot_of(struct dedpool *p, const struct rds_conn *c)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->slots[i].c == c)
            return &p->slots[i];
    abort();
}

static void send_unblock(struct dedpool *p, struct dslot *s);

/* CLIENT ID answered: the id CLIENT UNBLOCK names. A connection given
 * back before its id was known is unblocked now. */
static void on_client_id(void *arg, const redisReply *reply)
{
    struct rds_conn *c = arg;
    struct dedpool *p = c->hooks.arg;
    struct dslot *s = slot_of(p, c);
    s->asking = false;
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        c->client_id = (uint64_t)reply->integer;
        if (s->st == DS_DRAINING && rds_conn_pending(c) >= 2)
            send_unblock(p, s);
    }
}

/* Asks c's CLIENT ID. Why at take, ahead of the taker's command, and not
 * only once the handshake is over: a connection taken while it connects
 * already holds its taker's command, queued behind the handshake, and a
 * CLIENT ID sent from the ready hook would be answered only after that
 * command (a BLPOP: maybe never), when the id is needed to unblock it. */
static void ask_id(struct dslot *s)
{
    const char *argv[2] = {"CLIENT", "ID"};
    size_t lens[2] = {6, 2};
    if (s->asking || s->c->client_id)
        return;
    if (rds_conn_call(s->c, 2, argv, lens, on_client_id, s->c) == 0)
        s->asking = true;
    else
        log_warn("redis: cannot ask a dedicated connection's CLIENT ID");
}

static void on_ready(struct rds_conn *c, void *arg)
{
    struct dedpool *p = arg;
    struct dslot *s = slot_of(p, c);
    if (s->st == DS_FREE)
        ask_id(s);
}

/* The id belonged to the connection that was lost. */
static void on_lost(struct rds_conn *c, void *arg)
{
    (void)arg;
    c->client_id = 0;
}

struct rds_conn *dedpool_take(struct rds_backend *rb) { return dedpool_take_for(rb, -1); }

/* On a cluster, a connection belongs to one node (its target, which
 * the node owns): one for slot is taken among the connections to the
 * slot's primary. When the pool is full and none of those is idle, an
 * idle one to another node is moved there (it reconnects) and this
 * request is refused with overloaded: the pool stays bounded over all
 * the nodes, and a retry finds the moved one. */
struct rds_conn *dedpool_take_for(struct rds_backend *rb, int slot)
{
    struct dedpool *p = pool_of(rb);
    /* A keyless command (slot < 0) may take any idle connection. */
    struct rds_target *t = rb->cluster && slot >= 0 ? rds_cluster_slot_target(rb->cluster, slot) : NULL;
    struct dslot *best = NULL, *other = NULL, *same = NULL;
    p->just_moved = false;
    for (size_t i = 0; i < p->n; i++) {
        struct dslot *s = &p->slots[i];
        if (s->st != DS_FREE)
            continue;
        if (t && s->c->t != t) {
            other = other ? other : s;
            continue;
        }
        if (!rds_conn_usable(s->c)) {
            same = same ? same : s;
            continue;
        }
        if (!best || (s->c->state == RC_READY && best->c->state != RC_READY))
            best = s;
    }
    p->unusable = same ? same->c : NULL;
    if (!best && p->n < (size_t)rb->t.rc->blocking_pool) {
        if (p->n == p->cap) {
            p->cap = p->cap ? p->cap * 2 : 4;
            p->slots = xrealloc(p->slots, p->cap * sizeof(*p->slots));
        }
        struct rds_conn *c = t ? rds_backend_dedicated_to(rb, t) : rds_backend_dedicated(rb);
        c->hooks.ready = on_ready;
        c->hooks.lost = on_lost;
        c->hooks.arg = p;
        best = &p->slots[p->n++];
        *best = (struct dslot){.c = c};
        if (p->started)
            rds_conn_start(c);
    }
    /* Not while an idle one to that node is (re)connecting: a burst of
     * retries would move one connection each. */
    if (!best && !same && other && p->started) {
        log_info("redis: a dedicated connection moves from %s to %s", other->c->t->url_redacted, t->url_redacted);
        other->c->t = t;
        other->c->client_id = 0;
        p->moved++;
        p->just_moved = true;
        rds_conn_reconnect(other->c, "moved to another cluster node");
    }
    if (!best) {
        bool all_taken = true;
        for (size_t i = 0; i < p->n; i++)
            all_taken &= p->slots[i].st != DS_FREE;
        p->refused += all_taken || other;
        return NULL;
    }
    best->st = DS_TAKEN;
    p->taken++;
    ask_id(best);
    return best->c;
}

int dedpool_refusal(struct rds_backend *rb, char *msg, size_t len)
{
    struct dedpool *p = pool_of(rb);
    if (p->just_moved) {
        snprintf(msg, len, "all %ld dedicated connections (redis_blocking_pool) are in use or serve other cluster "
                 "nodes; an idle one is moving to the key's node: retry", (long)rb->t.rc->blocking_pool);
        return FE_OVERLOADED;
    }
    if (p->unusable) {
        const struct rds_conn *c = p->unusable;
        snprintf(msg, len, "redis is unreachable (%s)", c->last_error[0] ? c->last_error : "reconnecting");
        return FE_UNAVAILABLE;
    }
    for (size_t i = 0; i < p->n; i++)
        if (p->slots[i].st == DS_FREE) {
            const struct rds_conn *c = p->slots[i].c;
            snprintf(msg, len, "redis is unreachable (%s)", c->last_error[0] ? c->last_error : "reconnecting");
            return FE_UNAVAILABLE;
        }
    snprintf(msg, len, "all %ld dedicated connections (redis_blocking_pool) are in use", (long)rb->t.rc->blocking_pool);
    return FE_OVERLOADED;
}

/* The PING behind an unblocked command answered (or the connection
 * failed): nothing is blocked on it any more. */
static void on_drained(void *arg, const redisReply *reply)
{
    (void)reply;
    struct rds_conn *c = arg;
    struct dedpool *p = c->hooks.arg;
    struct dslot *s = slot_of(p, c);
    if (s->st == DS_DRAINING)
        s->st = DS_FREE;
}

/* CLIENT UNBLOCK answered: 1 when it unblocked the command, 0 when the
 * connection was not blocked. 0 while the command's reply is still
 * awaited (it and the PING behind it pending) means the command had not
 * reached Redis yet (the UNBLOCK, on another connection, overtook it):
 * try again, or the command would block until its timeout, and could
 * take an element nobody will receive. */
static void on_unblock(void *arg, const redisReply *reply)
{
    struct rds_conn *c = arg;
    struct dedpool *p = c->hooks.arg;
    struct dslot *s = slot_of(p, c);
    if (!reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("redis: CLIENT UNBLOCK refused: %.*s", (int)(reply->len > 200 ? 200 : reply->len), reply->str);
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0 && s->st == DS_DRAINING &&
        rds_conn_pending(c) >= 2 && c->state == RC_READY) {
        if (s->retries++ < UNBLOCK_RETRIES)
            send_unblock(p, s);
        else
            log_warn("redis: a dedicated connection's command could not be unblocked; it ends at its timeout");
    }
}

/* Why CLIENT UNBLOCK rather than dropping the connection: it keeps the
 * connection (no reconnect, no handshake), and Redis answers the blocked
 * command at once with its timeout reply, which is read and dropped. It
 * goes on a pooled connection: the blocked one cannot carry it. */
static void send_unblock(struct dedpool *p, struct dslot *s)
{
    char id[24];
    int n = snprintf(id, sizeof(id), "%llu", (unsigned long long)s->c->client_id);
    const char *argv[4] = {"CLIENT", "UNBLOCK", id, "TIMEOUT"};
    size_t lens[4] = {6, 7, (size_t)n, 7};
    if (rds_backend_call(p->rb, NULL, 0, 4, argv, lens, on_unblock, s->c) == 0)
        p->unblocks++;
}

void dedpool_give(struct rds_backend *rb, struct rds_conn *c, bool maybe_blocked)
{
    struct dedpool *p = pool_of(rb);
    struct dslot *s = slot_of(p, c);
    /* Pending replies on a connection that is not usable were failed
     * already; one still connecting writes its commands once connected,
     * so it is drained like a ready one. */
    if (!maybe_blocked || rds_conn_pending(c) == 0 || !rds_conn_usable(c)) {
        s->st = DS_FREE;
        return;
    }
    s->st = DS_DRAINING;
    s->retries = 0;
    /* Without its id yet (taken while connecting), on_client_id sends
     * the UNBLOCK once the id is known. */
    if (c->client_id)
        send_unblock(p, s);
    const char *ping[1] = {"PING"};
    size_t plen[1] = {4};
    if (rds_conn_call(c, 1, ping, plen, on_drained, c) != 0)
        s->st = DS_FREE; /* it failed: nothing is blocked on it any more */
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
        rds_conn_start(p->slots[i].c);
}

static void dp_stats(struct rds_backend *rb, void *state, struct cbuf *o)
{
    struct dedpool *p = state;
    size_t busy = 0, ready = 0;
    for (size_t i = 0; i < p->n; i++) {
        busy += p->slots[i].st != DS_FREE;
        ready += p->slots[i].c->state == RC_READY;
    }
    cbuf_map(o, 8);
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
    cbuf_str(o, "moved");
    cbuf_uint(o, p->moved);
}

static void dp_close(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct dedpool *p = state;
    for (size_t i = 0; i < p->n; i++)
        rds_conn_stop(p->slots[i].c);
}

static void dp_destroy(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct dedpool *p = state;
    for (size_t i = 0; i < p->n; i++)
        rds_conn_free(p->slots[i].c);
    free(p->slots);
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
