/* mq_publish.c: publishing on the AMQP thread; see mq_publish.h.
 *
 * A publish request becomes a group of messages. Each is sent on the
 * confirm channel and waits there for basic.ack/nack (and a basic.return
 * first, when a mandatory message found no queue). When the connection
 * drops, sent messages go back to unsent and are published again after
 * reconnecting, while their deadline allows; so a message the client saw
 * confirmed was confirmed by the broker, and one it did not see may arrive
 * twice.
 *
 * A nack parks the message, and publishing moves to a fresh confirm
 * channel (MQ_CH_PUB and MQ_CH_PUB_ALT take turns), where the parked
 * messages are sent again; the old channel is closed once what was in
 * flight on it has its confirms. The reason is
 * RabbitMQ 3.10's quorum queues: a channel that published to one while its
 * leader was being elected (as right after its node died and ferryd moved
 * to another) goes on nacking every message for that queue, while a new
 * channel on the same connection is confirmed at once. A nack for a real
 * reason (a full queue with x-overflow reject-publish) comes again; the
 * third nack of a message, or its deadline, answers it 'nacked'. Moves
 * are at most one per MQ_PUB_MOVE_MS, so a queue that keeps nacking costs
 * one channel a second. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "log.h"
#include "mq_publish.h"

struct mq_publish_group;

/* The shortest time between two moves to a fresh confirm channel, and
 * how many nacks of one message are answered by sending it again. */
#define MQ_PUB_MOVE_MS 1000
#define MQ_PUB_NACK_RETRIES 2

/* One message awaiting the broker's confirm. */
struct mq_publish_msg {
    struct dlist node;             /* in pb->pubs, in publish order */
    struct mq_publish_group *g;    /* refers */
    const struct mq_msg *msg;      /* refers: in g->cmd's pool */
    amqp_bytes_t exchange;         /* where it is really published (delayed: "") */
    amqp_bytes_t routing_key;
    uint64_t tag;                  /* broker delivery tag; 0 while unsent */
    amqp_channel_t ch;             /* the confirm channel it was sent on, while tag != 0 */
    bool resolved;
    unsigned nacks;                /* how often the broker nacked it */
    bool parked;                   /* nacked, and waits unsent for a fresh channel */
    int code;                      /* outcome once resolved */
    char text[200];
};

/* One publish request: one message, or a batch. */
struct mq_publish_group {
    struct mq_cmd *cmd;            /* owns */
    struct mq_publish_msg *pubs;   /* owns: cmd->nmsgs of them */
    size_t left;
};

static bool bytes_eq(amqp_bytes_t a, amqp_bytes_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.bytes, b.bytes, a.len) == 0);
}

void mq_publish_init(struct mq_publisher *pb, struct mq_conn *conn, struct mq_topology *topo)
{
    pb->conn = conn;
    pb->topo = topo;
    dlist_init(&pb->pubs);
    pb->holding = NULL;
    pb->nholding = 0;
    pb->moved_at = 0;
    pb->nparked = 0;
    pb->draining = 0;
}

static void group_done(struct mq_publisher *pb, struct mq_publish_group *g)
{
    struct mq_cmd *c = g->cmd;
    if (!c->batch) {
        struct mq_publish_msg *p = &g->pubs[0];
        if (p->code) {
            mq_conn_reply_err(pb->conn, c->seq, p->code, "%s", p->text);
        } else {
            struct cbuf b;
            cbuf_init(&b);
            cbuf_map(&b, 1);
            cbuf_str(&b, "confirmed");
            cbuf_bool(&b, true);
            mq_conn_reply_ok(pb->conn, c->seq, &b);
        }
    } else {
        struct cbuf b;
        cbuf_init(&b);
        cbuf_map(&b, 1);
        cbuf_str(&b, "results");
        cbuf_array(&b, c->nmsgs);
        for (size_t i = 0; i < c->nmsgs; i++) {
            struct mq_publish_msg *p = &g->pubs[i];
            if (p->code == 0) {
                cbuf_map(&b, 1);
                cbuf_str(&b, "confirmed");
                cbuf_bool(&b, true);
            } else {
                cbuf_map(&b, 1);
                cbuf_str(&b, "error");
                cbuf_map(&b, 2);
                cbuf_str(&b, "code");
                cbuf_str(&b, fe_name(p->code));
                cbuf_str(&b, "message");
                cbuf_str(&b, p->text);
            }
        }
        mq_conn_reply_ok(pb->conn, c->seq, &b);
    }
    free(g->pubs);
    mq_cmd_free(c);
    free(g);
}

static void resolve(struct mq_publisher *pb, struct mq_publish_msg *p, int code, const char *text)
{
    if (p->resolved)
        return;
    p->resolved = true;
    if (p->parked) {
        p->parked = false;
        pb->nparked--;
    }
    p->code = code;
    snprintf(p->text, sizeof(p->text), "%.190s", text ? text : "");
    dlist_remove(&p->node);
    if (--p->g->left == 0)
        group_done(pb, p->g);
}

/* Sends one message on the confirm channel. Returns 0, a code after
 * resolving p (missing exchange), or FE_UNAVAILABLE (connection gone; p
 * stays waiting and is republished after reconnecting). */
static int send_one(struct mq_publisher *pb, struct mq_publish_msg *p)
{
    char err[200];
    int rc = mq_topology_ensure_exchange(pb->topo, p->exchange, err, sizeof(err));
    if (rc == FE_UNAVAILABLE)
        return rc;
    if (rc) {
        resolve(pb, p, FE_BACKEND_ERROR, err);
        return rc;
    }
    int s = amqp_basic_publish(pb->conn->state, pb->conn->pub_ch, p->exchange, p->routing_key, p->msg->mandatory, 0,
                               &p->msg->props, p->msg->body);
    if (s != AMQP_STATUS_OK) {
        mq_conn_lost(pb->conn, amqp_error_string2(s));
        return FE_UNAVAILABLE;
    }
    p->tag = pb->conn->next_tag++;
    p->ch = pb->conn->pub_ch;
    return 0;
}

static bool covers(const struct mq_publish_msg *p, amqp_channel_t ch, uint64_t tag, bool multiple)
{
    return p->tag != 0 && p->ch == ch && (multiple ? p->tag <= tag : p->tag == tag);
}

void mq_publish_on_confirm(struct mq_publisher *pb, amqp_channel_t ch, uint64_t tag, bool multiple, bool ack)
{
    size_t parked = 0;
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &pb->pubs) {
        struct mq_publish_msg *p = container_of(pos, struct mq_publish_msg, node);
        if (!covers(p, ch, tag, multiple))
            continue;
        if (!ack && ++p->nacks <= MQ_PUB_NACK_RETRIES) {
            p->parked = true;
            p->tag = 0;
            pb->nparked++;
            parked++;
        } else if (!ack) {
            atomic_fetch_add(&pb->conn->counters.nacks, 1);
            resolve(pb, p, FE_NACKED, "the broker nacked the message");
        } else if (p->text[0] && p->code == FE_UNROUTABLE) {
            char text[sizeof(p->text)];
            memcpy(text, p->text, sizeof(text));
            resolve(pb, p, FE_UNROUTABLE, text);
        } else {
            atomic_fetch_add(&pb->conn->counters.confirms, 1);
            resolve(pb, p, 0, NULL);
        }
    }
    if (parked)
        mq_publish_retry(pb, mq_now_ms());
}

/* Closes the confirm channel given up once nothing sent on it awaits its
 * confirm; its number serves again after the close-ok (mq_pump.c). */
static void finish_draining(struct mq_publisher *pb)
{
    struct dlist *pos;
    dlist_foreach(pos, &pb->pubs) {
        struct mq_publish_msg *p = container_of(pos, struct mq_publish_msg, node);
        if (p->tag && p->ch == pb->draining)
            return;
    }
    amqp_channel_close_t cl = {.reply_code = AMQP_REPLY_SUCCESS, .reply_text = amqp_cstring_bytes("moved on")};
    amqp_channel_t ch = pb->draining;
    pb->draining = 0;
    if (amqp_send_method(pb->conn->state, ch, AMQP_CHANNEL_CLOSE_METHOD, &cl) != AMQP_STATUS_OK) {
        mq_conn_lost(pb->conn, "send channel.close failed");
        return;
    }
    pb->conn->pub_closing = true;
}

void mq_publish_retry(struct mq_publisher *pb, uint64_t now)
{
    struct mq_conn *c = pb->conn;
    if (pb->draining && c->state)
        finish_draining(pb);
    if (!pb->nparked)
        return;
    size_t parked = 0;
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &pb->pubs) {
        struct mq_publish_msg *p = container_of(pos, struct mq_publish_msg, node);
        if (!p->parked)
            continue;
        if (p->g->cmd->deadline <= now) {
            /* The broker's last word was a nack: that is the answer. */
            atomic_fetch_add(&c->counters.nacks, 1);
            resolve(pb, p, FE_NACKED, "the broker nacked the message, and the deadline passed before it was sent again");
        } else {
            parked++;
        }
    }
    if (!parked || !c->state || c->blocked || c->pub_closing || pb->draining ||
        (pb->moved_at && now - pb->moved_at < MQ_PUB_MOVE_MS))
        return;
    pb->moved_at = now;
    amqp_channel_t old = c->pub_ch, next = old == MQ_CH_PUB ? MQ_CH_PUB_ALT : MQ_CH_PUB;
    log_info("amqp: the broker nacked %zu messages; sending them again on a fresh channel (%u)", parked, next);
    if (mq_conn_open_channel(c, next) != 0) {
        /* Whatever waits is sent again after reconnecting. */
        mq_conn_lost(c, "could not open a fresh confirm channel");
        return;
    }
    /* The old channel stays open until what is in flight on it has its
     * confirms: sending those again would duplicate every one. */
    c->pub_ch = next;
    pb->draining = old;
    dlist_foreach(pos, &pb->pubs)
        container_of(pos, struct mq_publish_msg, node)->parked = false;
    pb->nparked = 0;
    atomic_fetch_add(&c->counters.republished, parked);
    mq_publish_flush(pb);
    if (pb->draining && c->state)
        finish_draining(pb);
}

void mq_publish_on_channel_closed(struct mq_publisher *pb, amqp_channel_t ch)
{
    if (ch != pb->draining)
        return;
    pb->draining = 0;
    struct dlist *pos;
    dlist_foreach(pos, &pb->pubs) {
        struct mq_publish_msg *p = container_of(pos, struct mq_publish_msg, node);
        if (p->tag && p->ch == ch) {
            p->tag = 0;
            p->code = 0;
            atomic_fetch_add(&pb->conn->counters.republished, 1);
        }
    }
    mq_publish_flush(pb);
}

/* The return names no delivery tag; it precedes the message's ack, so it
 * belongs to the oldest unconfirmed mandatory message with the same
 * exchange, key and body. */
void mq_publish_on_return(struct mq_publisher *pb, amqp_channel_t ch, const amqp_basic_return_t *ret,
                          const amqp_message_t *m)
{
    atomic_fetch_add(&pb->conn->counters.returns, 1);
    struct dlist *pos;
    dlist_foreach(pos, &pb->pubs) {
        struct mq_publish_msg *p = container_of(pos, struct mq_publish_msg, node);
        if (p->tag == 0 || p->ch != ch || !p->msg->mandatory || p->code == FE_UNROUTABLE)
            continue;
        if (bytes_eq(p->exchange, ret->exchange) && bytes_eq(p->routing_key, ret->routing_key) &&
            bytes_eq(p->msg->body, m->body)) {
            p->code = FE_UNROUTABLE;
            snprintf(p->text, sizeof(p->text), "%u %.*s (exchange '%.*s', routing key '%.*s')",
                     ret->reply_code, (int)ret->reply_text.len, (char *)ret->reply_text.bytes,
                     (int)ret->exchange.len, (char *)ret->exchange.bytes, (int)ret->routing_key.len,
                     (char *)ret->routing_key.bytes);
            return;
        }
    }
}

void mq_publish_flush(struct mq_publisher *pb)
{
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &pb->pubs) {
        struct mq_publish_msg *p = container_of(pos, struct mq_publish_msg, node);
        if (!pb->conn->state || pb->conn->blocked)
            return;
        if (p->tag || p->parked) /* parked: mq_publish_retry answers it at its deadline */
            continue;
        if (p->g->cmd->deadline <= mq_now_ms()) {
            resolve(pb, p, FE_UNCONFIRMED, "the deadline passed before the broker confirmed");
            continue;
        }
        if (send_one(pb, p) == FE_UNAVAILABLE)
            return;
    }
}

void mq_publish_resend(struct mq_publisher *pb)
{
    struct dlist *pos;
    dlist_foreach(pos, &pb->pubs) {
        struct mq_publish_msg *p = container_of(pos, struct mq_publish_msg, node);
        p->parked = false;
        if (p->tag && p->ch == pb->conn->pub_ch) {
            p->tag = 0;
            p->code = 0; /* a return from the closed channel says nothing of the next try */
            atomic_fetch_add(&pb->conn->counters.republished, 1);
        }
    }
    pb->nparked = 0;
    mq_publish_flush(pb);
}

void mq_publish_restore(struct mq_publisher *pb)
{
    size_t again = 0;
    struct dlist *pos;
    dlist_foreach(pos, &pb->pubs)
        again += container_of(pos, struct mq_publish_msg, node)->tag == 0;
    if (again) {
        log_info("amqp: publishing %zu unconfirmed messages again", again);
        atomic_fetch_add(&pb->conn->counters.republished, again);
    }
    mq_publish_flush(pb);
}

static void forget_holding(struct mq_publisher *pb)
{
    for (size_t i = 0; i < pb->nholding; i++)
        free(pb->holding[i]);
    free(pb->holding);
    pb->holding = NULL;
    pb->nholding = 0;
}

void mq_publish_on_lost(struct mq_publisher *pb)
{
    /* Sent-but-unconfirmed messages go back to unsent, to be published
     * again after reconnecting while their deadline allows. */
    struct dlist *pos;
    dlist_foreach(pos, &pb->pubs) {
        struct mq_publish_msg *p = container_of(pos, struct mq_publish_msg, node);
        p->tag = 0;
        p->code = 0;       /* a return on the old connection says nothing of the next try */
        p->parked = false; /* a new connection brings new channels */
    }
    pb->nparked = 0;
    pb->draining = 0;
    forget_holding(pb);
}

void mq_publish_expire(struct mq_publisher *pb, uint64_t now)
{
    if (pb->conn->state && !pb->conn->blocked)
        return;
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &pb->pubs) {
        struct mq_publish_msg *p = container_of(pos, struct mq_publish_msg, node);
        if (p->g->cmd->deadline <= now)
            resolve(pb, p, pb->conn->blocked ? FE_BLOCKED : FE_UNCONFIRMED,
                    "the deadline passed before the broker confirmed");
    }
}

bool mq_publish_waiting(const struct mq_publisher *pb)
{
    return !dlist_empty(&pb->pubs);
}

void mq_publish_shutdown(struct mq_publisher *pb)
{
    while (!dlist_empty(&pb->pubs))
        resolve(pb, container_of(pb->pubs.next, struct mq_publish_msg, node), FE_SHUTTING_DOWN, "shutting down");
    forget_holding(pb);
}

/* ---- delayed publishing ---- */

static bool holding_known(struct mq_publisher *pb, const char *name)
{
    for (size_t i = 0; i < pb->nholding; i++)
        if (strcmp(pb->holding[i], name) == 0)
            return true;
    return false;
}

/* The holding queue for (delay, exchange, key): messages wait there for
 * their TTL, then dead-letter to the target exchange with the original
 * routing key. It is durable, and expires after a minute unused. */
static int ensure_holding(struct mq_publisher *pb, const struct mq_cmd *c, const struct mq_msg *m, char *name,
                          size_t namelen, char *err, size_t errlen)
{
    int n = snprintf(name, namelen, "ferry.delay.%llums.%.*s.%.*s", (unsigned long long)c->delay_ms,
                     (int)m->exchange.len, (char *)m->exchange.bytes, (int)m->routing_key.len,
                     (char *)m->routing_key.bytes);
    if (n < 0 || (size_t)n >= namelen || n > 255) {
        /* Too long for a queue name: use a hash of the pair instead. */
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < m->exchange.len; i++)
            h = (h ^ ((uint8_t *)m->exchange.bytes)[i]) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
        for (size_t i = 0; i < m->routing_key.len; i++)
            h = (h ^ ((uint8_t *)m->routing_key.bytes)[i]) * 1099511628211ull;
        snprintf(name, namelen, "ferry.delay.%llums.%016llx", (unsigned long long)c->delay_ms,
                 (unsigned long long)h);
    }
    if (holding_known(pb, name))
        return 0;
    amqp_table_entry_t e[4];
    e[0].key = amqp_cstring_bytes("x-message-ttl");
    e[0].value.kind = AMQP_FIELD_KIND_I64;
    e[0].value.value.i64 = (int64_t)c->delay_ms;
    e[1].key = amqp_cstring_bytes("x-dead-letter-exchange");
    e[1].value.kind = AMQP_FIELD_KIND_UTF8;
    e[1].value.value.bytes = m->exchange;
    e[2].key = amqp_cstring_bytes("x-dead-letter-routing-key");
    e[2].value.kind = AMQP_FIELD_KIND_UTF8;
    e[2].value.value.bytes = m->routing_key;
    e[3].key = amqp_cstring_bytes("x-expires");
    e[3].value.kind = AMQP_FIELD_KIND_I64;
    e[3].value.value.i64 = (int64_t)c->delay_ms + 60000;
    amqp_table_t args = {.num_entries = 4, .entries = e};
    amqp_queue_declare(pb->conn->state, MQ_CH_TOPO, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
    int rc = mq_conn_check_rpc(pb->conn, MQ_CH_TOPO, err, errlen);
    if (rc)
        return rc;
    pb->holding = xrealloc(pb->holding, (pb->nholding + 1) * sizeof(char *));
    pb->holding[pb->nholding++] = xstrdup(name);
    return 0;
}

static void confirmed(struct mq_publisher *pb, struct mq_cmd *c)
{
    struct mq_publish_group *g = xcalloc(1, sizeof(*g));
    g->cmd = c;
    g->pubs = xcalloc(c->nmsgs, sizeof(struct mq_publish_msg));
    g->left = c->nmsgs;
    for (size_t i = 0; i < c->nmsgs; i++) {
        struct mq_publish_msg *p = &g->pubs[i];
        p->g = g;
        p->msg = &c->msgs[i];
        p->exchange = p->msg->exchange;
        p->routing_key = p->msg->routing_key;
        dlist_push_tail(&pb->pubs, &p->node);
    }
    if (c->kind == MC_PUBLISH_DELAYED && pb->conn->state) {
        char name[300], err[200];
        struct mq_publish_msg *p = &g->pubs[0];
        int rc = ensure_holding(pb, c, p->msg, name, sizeof(name), err, sizeof(err));
        if (rc) {
            resolve(pb, p, rc, err);
            return;
        }
        amqp_pool_alloc_bytes(&c->pool, strlen(name), &p->routing_key);
        memcpy(p->routing_key.bytes, name, strlen(name));
        p->exchange = amqp_empty_bytes;
    }
    mq_publish_flush(pb);
}

/* A transaction on its own channel: every exchange is checked first, so an
 * invalid message fails the batch before anything is sent; otherwise all
 * messages are published and committed together. */
static void transaction(struct mq_publisher *pb, struct mq_cmd *c)
{
    char err[200];
    for (size_t i = 0; i < c->nmsgs; i++) {
        int rc = mq_topology_ensure_exchange(pb->topo, c->msgs[i].exchange, err, sizeof(err));
        if (rc) {
            mq_conn_reply_err(pb->conn, c->seq, rc, "message %zu: %s; the transaction was rolled back", i, err);
            mq_cmd_free(c);
            return;
        }
    }
    for (size_t i = 0; i < c->nmsgs; i++) {
        const struct mq_msg *m = &c->msgs[i];
        int s = amqp_basic_publish(pb->conn->state, MQ_CH_TX, m->exchange, m->routing_key, 0, 0, &m->props,
                                   m->body);
        if (s != AMQP_STATUS_OK) {
            mq_conn_lost(pb->conn, amqp_error_string2(s));
            mq_conn_reply_err(pb->conn, c->seq, FE_UNAVAILABLE,
                              "connection lost during the transaction; nothing was committed");
            mq_cmd_free(c);
            return;
        }
    }
    amqp_tx_commit(pb->conn->state, MQ_CH_TX);
    int rc = mq_conn_check_rpc(pb->conn, MQ_CH_TX, err, sizeof(err));
    if (rc) {
        mq_conn_reply_err(pb->conn, c->seq, rc, "commit failed, nothing was published: %s", err);
    } else {
        struct cbuf b;
        cbuf_init(&b);
        cbuf_map(&b, 2);
        cbuf_str(&b, "committed");
        cbuf_bool(&b, true);
        cbuf_str(&b, "count");
        cbuf_uint(&b, c->nmsgs);
        mq_conn_reply_ok(pb->conn, c->seq, &b);
    }
    mq_cmd_free(c);
}

void mq_publish_run(struct mq_publisher *pb, struct mq_cmd *c)
{
    if (c->tx)
        transaction(pb, c);
    else
        confirmed(pb, c);
}
