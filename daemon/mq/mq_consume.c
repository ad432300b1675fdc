/* mq_consume.c: consumers, acks, get and RPC on the AMQP thread; see
 * mq_consume.h.
 *
 * Each consumer has a channel of its own, so prefetch is per consumer and
 * a bad ack costs only that consumer (which is then resubscribed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "log.h"
#include "mq_consume.h"
#include "mq_props.h"
#include "mq_tagset.h"

struct mq_consume_sub {
    struct dlist node;             /* in cs->list */
    uint64_t id, client_id;
    amqp_channel_t ch;
    uint64_t gen;                  /* bumped each time it is resubscribed */
    amqp_bytes_t queue;            /* owns */
    char tag[48];
    uint16_t prefetch;
    bool no_ack, exclusive, active;
    /* Tags of this generation delivered and not yet settled, so a second
     * ack, or one of a tag never delivered, is refused before the broker
     * closes the channel over it (and requeues every other delivery). */
    struct mq_tagset open;
    bool over_prefetch_logged;
    /* Single acks taken from the client and not yet sent: at the end of
     * the batch of commands they came in (mq_consume_flush), they go to
     * the broker as one multiple ack when no earlier delivery is still
     * open, and one by one otherwise. Their requests are answered then. */
    struct pending_ack {
        uint64_t tag, seq;
    } *acks;                       /* owns */
    size_t nacks, cap_acks;
};

static void flush_one(struct mq_consumers *cs, struct mq_consume_sub *c);

struct mq_consume_rpc {
    struct dlist node;             /* in cs->rpcs */
    uint64_t seq, deadline;
    char corr[128];                /* the correlation id its reply carries */
};

void mq_consume_init(struct mq_consumers *cs, struct mq_conn *conn, struct mq_topology *topo)
{
    cs->conn = conn;
    cs->topo = topo;
    dlist_init(&cs->list);
    dlist_init(&cs->rpcs);
    cs->next_ch = MQ_CH_FIRST_CONSUMER;
    cbuf_init(&cs->extra);
}

static struct mq_consume_sub *find(struct mq_consumers *cs, uint64_t id)
{
    struct dlist *p;
    dlist_foreach(p, &cs->list) {
        struct mq_consume_sub *c = container_of(p, struct mq_consume_sub, node);
        if (c->id == id)
            return c;
    }
    return NULL;
}

static amqp_channel_t alloc_channel(struct mq_consumers *cs)
{
    int max = amqp_get_channel_max(cs->conn->state);
    if (max <= 0 || max > 65535)
        max = 2047;
    for (int tries = 0; tries < max; tries++) {
        amqp_channel_t ch = cs->next_ch++;
        if (cs->next_ch > max)
            cs->next_ch = MQ_CH_FIRST_CONSUMER;
        bool used = false;
        struct dlist *p;
        dlist_foreach(p, &cs->list)
            used |= container_of(p, struct mq_consume_sub, node)->ch == ch &&
                    container_of(p, struct mq_consume_sub, node)->active;
        if (!used)
            return ch;
    }
    return 0;
}

/* Tells the loop a subscription ended, and why. */
static void push_cancelled(struct mq_consumers *cs, uint64_t consumer, const char *reason)
{
    struct mq_event *e = mq_conn_event_new(cs->conn, ME_PUSH);
    e->consumer = consumer;
    snprintf(e->message, sizeof(e->message), "cancelled");
    cbuf_map(&e->data, 1);
    cbuf_str(&e->data, "reason");
    cbuf_str(&e->data, reason);
    mq_conn_post(cs->conn, e);
}

/* Subscribes c on a fresh channel. Returns 0 or a code with err set. */
static int subscribe(struct mq_consumers *cs, struct mq_consume_sub *c, char *err, size_t errlen)
{
    amqp_connection_state_t k = cs->conn->state;
    c->active = false;
    c->ch = alloc_channel(cs);
    if (!c->ch) {
        snprintf(err, errlen, "no free channel");
        return FE_OVERLOADED;
    }
    c->gen++;
    mq_tagset_reset(&c->open); /* the new channel numbers its deliveries from 1 */
    amqp_channel_open(k, c->ch);
    int rc = mq_conn_check_rpc(cs->conn, c->ch, err, errlen);
    if (rc)
        return rc;
    amqp_basic_qos(k, c->ch, 0, c->prefetch, 0);
    if ((rc = mq_conn_check_rpc(cs->conn, c->ch, err, errlen)) != 0)
        goto fail;
    amqp_basic_consume(k, c->ch, c->queue, amqp_cstring_bytes(c->tag), 0, c->no_ack, c->exclusive,
                       amqp_empty_table);
    if ((rc = mq_conn_check_rpc(cs->conn, c->ch, err, errlen)) != 0)
        goto fail;
    c->active = true;
    return 0;
fail:
    if (rc == FE_BACKEND_ERROR && cs->conn->state) {
        /* mq_conn_check_rpc reopened the channel; this consumer does not need it. */
        amqp_channel_close(cs->conn->state, c->ch, AMQP_REPLY_SUCCESS);
    }
    return rc;
}

/* Answers the pending acks with an error: they will not reach the broker
 * (the channel is going, or the connection went), and the broker will
 * deliver their messages again. */
static void fail_acks(struct mq_consumers *cs, struct mq_consume_sub *c, const char *why)
{
    for (size_t i = 0; i < c->nacks; i++)
        mq_conn_reply_err(cs->conn, c->acks[i].seq, FE_UNAVAILABLE, "%s", why);
    c->nacks = 0;
}

static void sub_free(struct mq_consume_sub *c)
{
    free(c->acks);
    dlist_remove(&c->node);
    amqp_bytes_free(c->queue);
    mq_tagset_free(&c->open);
    free(c);
}

static void consume(struct mq_consumers *cs, struct mq_cmd *cmd)
{
    struct mq_consume_sub *c = xcalloc(1, sizeof(*c));
    c->id = cmd->consumer;
    c->client_id = cmd->client_id;
    c->queue = amqp_bytes_malloc_dup(cmd->name);
    snprintf(c->tag, sizeof(c->tag), "ferry-%llu", (unsigned long long)c->id);
    c->prefetch = cmd->prefetch;
    c->no_ack = cmd->no_ack;
    c->exclusive = cmd->exclusive;
    dlist_push_tail(&cs->list, &c->node);
    char err[200];
    int rc = subscribe(cs, c, err, sizeof(err));
    if (rc) {
        sub_free(c);
        mq_conn_reply_err(cs->conn, cmd->seq, rc, "%s", err);
        return;
    }
    struct cbuf b;
    cbuf_init(&b);
    cbuf_map(&b, 1);
    cbuf_str(&b, "consumer_tag");
    cbuf_str(&b, c->tag);
    mq_conn_reply_ok(cs->conn, cmd->seq, &b);
}

static void drop(struct mq_consumers *cs, struct mq_consume_sub *c, bool requeue_unacked)
{
    flush_one(cs, c);
    fail_acks(cs, c, "the subscription ended before the ack was sent");
    amqp_connection_state_t k = cs->conn->state;
    if (k && c->active) {
        if (requeue_unacked && !c->no_ack)
            amqp_basic_nack(k, c->ch, 0, 1, 1);
        amqp_basic_cancel(k, c->ch, amqp_cstring_bytes(c->tag));
        amqp_channel_close(k, c->ch, AMQP_REPLY_SUCCESS);
    }
    sub_free(c);
}

static void settle(struct mq_consumers *cs, struct mq_cmd *cmd)
{
    struct mq_conn *conn = cs->conn;
    struct mq_consume_sub *c = find(cs, cmd->consumer);
    if (!c) {
        mq_conn_reply_err(conn, cmd->seq, FE_BAD_REQUEST, "no such subscription");
        return;
    }
    if (c->no_ack) {
        mq_conn_reply_err(conn, cmd->seq, FE_BAD_REQUEST, "the subscription acknowledges automatically (no_ack)");
        return;
    }
    if (cmd->kind != MC_ACK || cmd->multiple) {
        /* On the wire in the order the client asked: what is pending
         * first. */
        flush_one(cs, c);
    }
    uint64_t gen = cmd->delivery_tag >> MQ_TAG_BITS, tag = cmd->delivery_tag & MQ_TAG_MASK;
    unsigned long long shown = (unsigned long long)cmd->delivery_tag;
    if (gen == 0 || gen > c->gen) {
        mq_conn_reply_err(conn, cmd->seq, FE_BAD_REQUEST,
                          "delivery tag %llu was never delivered on this subscription", shown);
        return;
    }
    if (gen != c->gen || !c->active) {
        mq_conn_reply_err(conn, cmd->seq, FE_BACKEND_ERROR,
                          "stale delivery tag: the channel was reopened since, and the message was requeued");
        return;
    }
    /* Settling a tag twice, or one never delivered, would make the broker
     * close this consumer's channel (406) and redeliver everything else
     * unacknowledged on it: refuse it here instead. */
    bool multiple = cmd->kind != MC_REJECT && cmd->multiple;
    switch (mq_tagset_check(&c->open, tag, multiple)) {
    case MQ_TAGSET_OPEN:
        break;
    case MQ_TAGSET_UNKNOWN:
        mq_conn_reply_err(conn, cmd->seq, FE_BAD_REQUEST,
                          "delivery tag %llu was never delivered on this subscription", shown);
        return;
    case MQ_TAGSET_SETTLED:
        mq_conn_reply_err(conn, cmd->seq, FE_BAD_REQUEST,
                          multiple ? "every delivery up to tag %llu was already acked, nacked or rejected"
                                   : "delivery tag %llu was already acked, nacked or rejected",
                          shown);
        return;
    case MQ_TAGSET_STRANDED:
        mq_conn_reply_err(conn, cmd->seq, FE_BAD_REQUEST,
                          "delivery tag %llu was already acked, nacked or rejected, and no later delivery is "
                          "unsettled: to settle the earlier ones, name the last of them",
                          shown);
        return;
    }
    if (cmd->kind == MC_ACK && !cmd->multiple) {
        mq_tagset_settle(&c->open, tag, false);
        if (c->nacks == c->cap_acks) {
            c->cap_acks = c->cap_acks ? c->cap_acks * 2 : 16;
            c->acks = xrealloc(c->acks, c->cap_acks * sizeof(*c->acks));
        }
        c->acks[c->nacks++] = (struct pending_ack){tag, cmd->seq};
        return;
    }
    int s;
    if (cmd->kind == MC_ACK)
        s = amqp_basic_ack(conn->state, c->ch, tag, cmd->multiple);
    else if (cmd->kind == MC_NACK)
        s = amqp_basic_nack(conn->state, c->ch, tag, cmd->multiple, cmd->requeue);
    else
        s = amqp_basic_reject(conn->state, c->ch, tag, cmd->requeue);
    if (s != AMQP_STATUS_OK) {
        mq_conn_lost(conn, amqp_error_string2(s));
        mq_conn_reply_err(conn, cmd->seq, FE_UNAVAILABLE, "connection lost");
        return;
    }
    mq_tagset_settle(&c->open, tag, multiple);
    mq_conn_reply_empty(conn, cmd->seq);
}

static void get(struct mq_consumers *cs, struct mq_cmd *cmd)
{
    struct mq_conn *conn = cs->conn;
    char err[200];
    amqp_rpc_reply_t r = amqp_basic_get(conn->state, MQ_CH_TOPO, cmd->name, 1);
    (void)r;
    int rc = mq_conn_check_rpc(conn, MQ_CH_TOPO, err, sizeof(err));
    if (rc) {
        mq_conn_reply_err(conn, cmd->seq, rc, "%s", err);
        return;
    }
    struct cbuf b;
    cbuf_init(&b);
    amqp_rpc_reply_t last = amqp_get_rpc_reply(conn->state);
    if (last.reply.id != AMQP_BASIC_GET_OK_METHOD) {
        cbuf_null(&b);
        mq_conn_reply_ok(conn, cmd->seq, &b);
        return;
    }
    amqp_basic_get_ok_t ok = *(amqp_basic_get_ok_t *)last.reply.decoded;
    amqp_bytes_t ex = amqp_bytes_malloc_dup(ok.exchange), rk = amqp_bytes_malloc_dup(ok.routing_key);
    amqp_message_t m;
    amqp_rpc_reply_t rr = amqp_read_message(conn->state, MQ_CH_TOPO, &m, 0);
    if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
        mq_conn_describe(rr, err, sizeof(err));
        mq_conn_lost(conn, err);
        mq_conn_reply_err(conn, cmd->seq, FE_UNAVAILABLE, "%s", err);
    } else {
        struct cbuf extra;
        cbuf_init(&extra);
        cbuf_str(&extra, "redelivered");
        cbuf_bool(&extra, ok.redelivered);
        cbuf_str(&extra, "message_count");
        cbuf_uint(&extra, ok.message_count);
        mq_props_message(&b, &ex, &rk, &m, 2, extra.data, extra.len);
        cbuf_free(&extra);
        amqp_destroy_message(&m);
        mq_conn_reply_ok(conn, cmd->seq, &b);
    }
    amqp_bytes_free(ex);
    amqp_bytes_free(rk);
    cbuf_free(&b);
}

static void rpc(struct mq_consumers *cs, struct mq_cmd *cmd)
{
    struct mq_msg *m = &cmd->msgs[0];
    struct mq_consume_rpc *w = xcalloc(1, sizeof(*w));
    w->seq = cmd->seq;
    w->deadline = cmd->deadline;
    if (m->props._flags & AMQP_BASIC_CORRELATION_ID_FLAG)
        snprintf(w->corr, sizeof(w->corr), "%.*s", (int)m->props.correlation_id.len,
                 (char *)m->props.correlation_id.bytes);
    else
        snprintf(w->corr, sizeof(w->corr), "ferry-rpc-%llu", (unsigned long long)cmd->seq);
    m->props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
    m->props.correlation_id = amqp_cstring_bytes(w->corr);
    m->props.reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
    char err[200];
    int rc = mq_topology_ensure_exchange(cs->topo, m->exchange, err, sizeof(err));
    if (rc) {
        mq_conn_reply_err(cs->conn, cmd->seq, rc, "%s", err);
        free(w);
        return;
    }
    /* Mandatory: a request that reaches no queue (nobody declared it, so
     * no responder can be there) comes back as a basic.return, answered
     * 'unroutable' at once instead of a 'timeout' at the deadline. */
    int s = amqp_basic_publish(cs->conn->state, MQ_CH_RPC, m->exchange, m->routing_key, 1, 0, &m->props, m->body);
    if (s != AMQP_STATUS_OK) {
        mq_conn_lost(cs->conn, amqp_error_string2(s));
        mq_conn_reply_err(cs->conn, cmd->seq, FE_UNAVAILABLE, "connection lost");
        free(w);
        return;
    }
    dlist_push_tail(&cs->rpcs, &w->node);
}

/* Sends c's pending acks: one multiple ack for the highest when every
 * earlier delivery is settled (they all are acked, or were settled
 * before), else each alone. */
static void flush_one(struct mq_consumers *cs, struct mq_consume_sub *c)
{
    if (!c->nacks)
        return;
    struct mq_conn *conn = cs->conn;
    if (!conn->state || !c->active) {
        fail_acks(cs, c, "connection lost before the ack was sent");
        return;
    }
    uint64_t top = 0;
    for (size_t i = 0; i < c->nacks; i++)
        top = c->acks[i].tag > top ? c->acks[i].tag : top;
    uint64_t low = mq_tagset_lowest(&c->open);
    int s = AMQP_STATUS_OK;
    if (c->nacks > 1 && (low == 0 || low > top)) {
        s = amqp_basic_ack(conn->state, c->ch, top, 1);
        if (s == AMQP_STATUS_OK)
            atomic_fetch_add(&conn->counters.acks_merged, c->nacks);
    } else {
        for (size_t i = 0; i < c->nacks && s == AMQP_STATUS_OK; i++)
            s = amqp_basic_ack(conn->state, c->ch, c->acks[i].tag, 0);
    }
    if (s != AMQP_STATUS_OK) {
        mq_conn_lost(conn, amqp_error_string2(s));
        fail_acks(cs, c, "connection lost");
        return;
    }
    for (size_t i = 0; i < c->nacks; i++)
        mq_conn_reply_empty(conn, c->acks[i].seq);
    c->nacks = 0;
}

void mq_consume_flush(struct mq_consumers *cs)
{
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &cs->list)
        flush_one(cs, container_of(pos, struct mq_consume_sub, node));
}

void mq_consume_run(struct mq_consumers *cs, struct mq_cmd *cmd)
{
    switch (cmd->kind) {
    case MC_CONSUME:
        consume(cs, cmd);
        break;
    case MC_ACK:
    case MC_NACK:
    case MC_REJECT:
        settle(cs, cmd);
        break;
    case MC_CANCEL: {
        struct mq_consume_sub *k = find(cs, cmd->consumer);
        if (k)
            drop(cs, k, false);
        mq_conn_reply_empty(cs->conn, cmd->seq);
        break;
    }
    case MC_CLIENT_GONE: {
        struct dlist *pos, *tmp;
        dlist_foreach_safe(pos, tmp, &cs->list) {
            struct mq_consume_sub *k = container_of(pos, struct mq_consume_sub, node);
            if (k->client_id == cmd->client_id)
                drop(cs, k, true);
        }
        break;
    }
    case MC_GET:
        get(cs, cmd);
        break;
    case MC_RPC:
        rpc(cs, cmd);
        break;
    default:
        mq_conn_reply_err(cs->conn, cmd->seq, FE_INTERNAL, "unknown command");
        break;
    }
}

static bool corr_is(const amqp_message_t *m, const char *corr)
{
    const amqp_bytes_t *c = &m->properties.correlation_id;
    return (m->properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG) && c->len == strlen(corr) &&
           memcmp(c->bytes, corr, c->len) == 0;
}

/* A request of ours the broker returned (mandatory, no queue): its
 * correlation id names the waiting RPC. */
void mq_consume_on_rpc_return(struct mq_consumers *cs, const amqp_basic_return_t *ret, const amqp_message_t *m)
{
    if (!(m->properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG))
        return;
    atomic_fetch_add(&cs->conn->counters.returns, 1);
    struct dlist *pos;
    dlist_foreach(pos, &cs->rpcs) {
        struct mq_consume_rpc *w = container_of(pos, struct mq_consume_rpc, node);
        if (corr_is(m, w->corr)) {
            mq_conn_reply_err(cs->conn, w->seq, FE_UNROUTABLE,
                              "%u %.*s (exchange '%.*s', routing key '%.*s'): no queue took the request, "
                              "so no responder can answer it",
                              ret->reply_code, (int)ret->reply_text.len, (char *)ret->reply_text.bytes,
                              (int)ret->exchange.len, (char *)ret->exchange.bytes, (int)ret->routing_key.len,
                              (char *)ret->routing_key.bytes);
            dlist_remove(pos);
            free(w);
            return;
        }
    }
}

/* Copies the W3C trace context a publisher put in the message's headers
 * (ferry's own publishes do), so the CONSUMER span continues its trace. */
static void trace_headers(const amqp_message_t *m, struct mq_event *e)
{
    if (!(m->properties._flags & AMQP_BASIC_HEADERS_FLAG))
        return;
    const amqp_table_t *h = &m->properties.headers;
    for (int i = 0; i < h->num_entries; i++) {
        const amqp_table_entry_t *en = &h->entries[i];
        if (en->value.kind != AMQP_FIELD_KIND_UTF8 && en->value.kind != AMQP_FIELD_KIND_BYTES)
            continue;
        amqp_bytes_t v = en->value.value.bytes;
        if (en->key.len == 11 && !memcmp(en->key.bytes, "traceparent", 11) && v.len < sizeof(e->traceparent))
            snprintf(e->traceparent, sizeof(e->traceparent), "%.*s", (int)v.len, (char *)v.bytes);
        else if (en->key.len == 10 && !memcmp(en->key.bytes, "tracestate", 10) && v.len < sizeof(e->tracestate))
            snprintf(e->tracestate, sizeof(e->tracestate), "%.*s", (int)v.len, (char *)v.bytes);
    }
}

/* Copies b into dst as a C string, cut to fit. */
static void copy_text(char *dst, size_t cap, amqp_bytes_t b)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    if (n)
        memcpy(dst, b.bytes, n);
    dst[n] = '\0';
}

void mq_consume_on_delivery(struct mq_consumers *cs, amqp_channel_t ch, const amqp_basic_deliver_t *d,
                            const amqp_message_t *m)
{
    if (ch == MQ_CH_RPC) {
        struct dlist *pos;
        dlist_foreach(pos, &cs->rpcs) {
            struct mq_consume_rpc *w = container_of(pos, struct mq_consume_rpc, node);
            if (corr_is(m, w->corr)) {
                struct cbuf b;
                cbuf_init(&b);
                mq_props_message(&b, &d->exchange, &d->routing_key, m, 0, NULL, 0);
                mq_conn_reply_ok(cs->conn, w->seq, &b);
                dlist_remove(pos);
                free(w);
                return;
            }
        }
        return; /* a late reply to an RPC whose deadline passed */
    }
    struct mq_consume_sub *c = NULL;
    struct dlist *pos;
    dlist_foreach(pos, &cs->list) {
        struct mq_consume_sub *k = container_of(pos, struct mq_consume_sub, node);
        if (k->ch == ch && k->active)
            c = k;
    }
    if (!c)
        return;
    atomic_fetch_add(&cs->conn->counters.deliveries, 1);
    if (!c->no_ack && !mq_tagset_add(&c->open, d->delivery_tag & MQ_TAG_MASK, c->prefetch) &&
        !c->over_prefetch_logged) {
        c->over_prefetch_logged = true;
        log_warn("amqp: consumer %s holds more unacknowledged deliveries than its prefetch (%u)", c->tag,
                 c->prefetch);
    }
    struct mq_event *e = mq_conn_event_new(cs->conn, ME_PUSH);
    e->consumer = c->id;
    memcpy(e->message, "delivery", sizeof("delivery"));
    /* The fields after the message's own, built once per delivery in a
     * buffer kept for it, so that a delivery costs no allocation beyond
     * its event and its data. */
    struct cbuf *extra = &cs->extra;
    extra->len = 0;
    cbuf_str(extra, "delivery_tag");
    cbuf_uint(extra, (c->gen << MQ_TAG_BITS) | (d->delivery_tag & MQ_TAG_MASK));
    cbuf_str(extra, "redelivered");
    cbuf_bool(extra, d->redelivered);
    cbuf_str(extra, "consumer_tag");
    cbuf_str(extra, c->tag);
    cbuf_reserve(&e->data, m->body.len + d->exchange.len + d->routing_key.len + extra->len + 256);
    mq_props_message(&e->data, &d->exchange, &d->routing_key, m, 3, extra->data, extra->len);
    trace_headers(m, e);
    e->delivery_tag = (c->gen << MQ_TAG_BITS) | (d->delivery_tag & MQ_TAG_MASK);
    e->body_size = m->body.len;
    copy_text(e->routing_key, sizeof(e->routing_key), d->routing_key);
    if (m->properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        copy_text(e->message_id, sizeof(e->message_id), m->properties.message_id);
    mq_conn_post(cs->conn, e);
}

void mq_consume_on_cancel(struct mq_consumers *cs, amqp_channel_t ch)
{
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &cs->list) {
        struct mq_consume_sub *c = container_of(pos, struct mq_consume_sub, node);
        if (c->ch == ch && c->active) {
            push_cancelled(cs, c->id, "the broker cancelled the consumer (was its queue deleted?)");
            amqp_channel_close(cs->conn->state, c->ch, AMQP_REPLY_SUCCESS);
            sub_free(c);
        }
    }
}

void mq_consume_on_channel_close(struct mq_consumers *cs, amqp_channel_t ch)
{
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &cs->list) {
        struct mq_consume_sub *c = container_of(pos, struct mq_consume_sub, node);
        if (c->ch != ch || !c->active)
            continue;
        fail_acks(cs, c, "the consumer's channel closed before the ack was sent");
        char err[200];
        if (subscribe(cs, c, err, sizeof(err)) != 0) {
            push_cancelled(cs, c->id, err);
            sub_free(c);
        }
        return;
    }
}

bool mq_consume_restore(struct mq_consumers *cs)
{
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &cs->list) {
        struct mq_consume_sub *c = container_of(pos, struct mq_consume_sub, node);
        char err[200];
        if (!cs->conn->state)
            return false;
        if (subscribe(cs, c, err, sizeof(err)) != 0 && cs->conn->state) {
            log_warn("amqp: resubscribing to '%.*s' failed: %s", (int)c->queue.len, (char *)c->queue.bytes, err);
            push_cancelled(cs, c->id, err);
            sub_free(c);
        }
    }
    return true;
}

void mq_consume_on_lost(struct mq_consumers *cs, const char *why)
{
    struct dlist *pos;
    dlist_foreach(pos, &cs->list) {
        struct mq_consume_sub *c = container_of(pos, struct mq_consume_sub, node);
        fail_acks(cs, c, "connection lost before the ack was sent");
        c->active = false;
    }
    cs->next_ch = MQ_CH_FIRST_CONSUMER; /* a new connection has no channels open */
    /* Replies to RPCs cannot arrive on a new connection's reply-to. */
    while (!dlist_empty(&cs->rpcs)) {
        struct mq_consume_rpc *w = container_of(cs->rpcs.next, struct mq_consume_rpc, node);
        dlist_remove(&w->node);
        mq_conn_reply_err(cs->conn, w->seq, FE_UNAVAILABLE, "connection lost before the reply: %s", why);
        free(w);
    }
}

void mq_consume_expire(struct mq_consumers *cs, uint64_t now)
{
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &cs->rpcs) {
        struct mq_consume_rpc *w = container_of(pos, struct mq_consume_rpc, node);
        if (w->deadline <= now) {
            dlist_remove(pos);
            free(w);
        }
    }
}

bool mq_consume_waiting(const struct mq_consumers *cs)
{
    return !dlist_empty(&cs->rpcs);
}

void mq_consume_shutdown(struct mq_consumers *cs)
{
    while (!dlist_empty(&cs->list))
        drop(cs, container_of(cs->list.next, struct mq_consume_sub, node), true);
    while (!dlist_empty(&cs->rpcs)) {
        struct mq_consume_rpc *w = container_of(cs->rpcs.next, struct mq_consume_rpc, node);
        dlist_remove(&w->node);
        free(w);
    }
    cbuf_free(&cs->extra);
}
