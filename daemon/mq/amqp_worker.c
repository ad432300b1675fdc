/* amqp_worker.c: the AMQP connection's thread; see amqp_worker.h.
 *
 * Channels, each with one job so that a broker error on one (a channel
 * error closes only that channel) cannot disturb the others:
 *   1 publishing, in confirm mode;   2 topology RPCs and basic.get;
 *   3 transactional batches;         4 RPC over direct reply-to;
 *   10+ one per consumer, so prefetch is per consumer and a bad ack costs
 *       only that consumer (which is then resubscribed).
 *
 * What survives a reconnect: the exchanges, queues and bindings declared
 * through ferryd are declared again, consumers are resubscribed (their
 * delivery tags get a new generation), and publishes that were sent but
 * not confirmed are sent again while their deadline allows. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <amqp_tcp_socket.h>

#include "amqp_wstate.h"
#include "backoff.h"
#include "config.h"
#include "errors.h"
#include "log.h"

uint64_t amqp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct amqp_cmd *amqp_cmd_new(enum amqp_cmd_kind kind, uint64_t seq, uint64_t deadline)
{
    struct amqp_cmd *c = xcalloc(1, sizeof(*c));
    c->kind = kind;
    c->seq = seq;
    c->deadline = deadline;
    init_amqp_pool(&c->pool, 4096);
    c->name = c->type = c->exchange = c->routing_key = amqp_empty_bytes;
    c->arguments = amqp_empty_table;
    dlist_init(&c->node);
    return c;
}

void amqp_cmd_free(struct amqp_cmd *c)
{
    if (!c)
        return;
    empty_amqp_pool(&c->pool);
    free(c);
}

void amqp_event_free(struct amqp_event *e)
{
    cbuf_free(&e->data);
    free(e);
}

static bool bytes_eq(amqp_bytes_t a, amqp_bytes_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.bytes, b.bytes, a.len) == 0);
}

/* ---- talking to the loop ---- */

static void post(struct amqp_worker *wk, struct amqp_event *e)
{
    if (wk->w->holding_events) {
        dlist_push_tail(&wk->w->held, &e->node);
        return;
    }
    pthread_mutex_lock(&wk->mu);
    dlist_push_tail(&wk->events, &e->node);
    pthread_mutex_unlock(&wk->mu);
    uv_async_send(wk->async);
}

/* Posts what pump() held back, in order. */
static void post_held(struct amqp_worker *wk)
{
    struct amqp_wstate *st = wk->w;
    st->holding_events = false;
    if (dlist_empty(&st->held))
        return;
    pthread_mutex_lock(&wk->mu);
    while (!dlist_empty(&st->held)) {
        struct dlist *n = st->held.next;
        dlist_remove(n);
        dlist_push_tail(&wk->events, n);
    }
    pthread_mutex_unlock(&wk->mu);
    uv_async_send(wk->async);
}

/* Events kept for reuse, and the largest data buffer one may keep. */
#define EVENT_SPARE_MAX 1024
#define EVENT_KEEP_DATA (64 * 1024)

static struct amqp_event *event_new(struct amqp_worker *wk, enum amqp_event_kind kind)
{
    struct amqp_wstate *st = wk->w;
    if (dlist_empty(&st->spare)) {
        /* Take every spare event at once: one lock per batch. */
        pthread_mutex_lock(&wk->mu);
        while (!dlist_empty(&wk->spare)) {
            struct dlist *n = wk->spare.next;
            dlist_remove(n);
            dlist_push_tail(&st->spare, n);
        }
        wk->nspare = 0;
        pthread_mutex_unlock(&wk->mu);
    }
    struct amqp_event *e;
    if (!dlist_empty(&st->spare)) {
        e = container_of(st->spare.next, struct amqp_event, node);
        dlist_remove(&e->node);
        /* Field by field: the text arrays are 1 KiB that a C string's
         * first byte empties. */
        e->seq = 0;
        e->code = 0;
        e->message[0] = '\0';
        e->data.len = 0;
        e->consumer = 0;
        e->up = e->blocked = false;
        e->traceparent[0] = e->tracestate[0] = e->routing_key[0] = e->message_id[0] = '\0';
        e->delivery_tag = 0;
        e->body_size = 0;
    } else {
        e = xcalloc(1, sizeof(*e));
        cbuf_init(&e->data);
    }
    e->kind = kind;
    return e;
}

void amqp_worker_recycle(struct amqp_worker *wk, struct dlist *done)
{
    pthread_mutex_lock(&wk->mu);
    while (!dlist_empty(done)) {
        struct amqp_event *e = container_of(done->next, struct amqp_event, node);
        dlist_remove(&e->node);
        if (wk->nspare < EVENT_SPARE_MAX && e->data.cap <= EVENT_KEEP_DATA && wk->w) {
            dlist_push_tail(&wk->spare, &e->node);
            wk->nspare++;
        } else {
            amqp_event_free(e);
        }
    }
    pthread_mutex_unlock(&wk->mu);
}

void amqp_worker_reply_ok(struct amqp_worker *wk, uint64_t seq, struct cbuf *data)
{
    if (!seq) {
        cbuf_free(data);
        return;
    }
    struct amqp_event *e = event_new(wk, AE_RESULT);
    e->seq = seq;
    cbuf_free(&e->data); /* a recycled event's buffer: the result brings its own */
    e->data = *data;
    cbuf_init(data);
    post(wk, e);
}

static void reply_simple_ok(struct amqp_worker *wk, uint64_t seq)
{
    struct cbuf b;
    cbuf_init(&b);
    cbuf_map(&b, 0);
    amqp_worker_reply_ok(wk, seq, &b);
}

void amqp_worker_reply_err(struct amqp_worker *wk, uint64_t seq, int code, const char *fmt, ...)
{
    if (!seq)
        return;
    struct amqp_event *e = event_new(wk, AE_RESULT);
    e->seq = seq;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    post(wk, e);
}

/* Tells the loop a subscription ended, and why. */
static void push_cancelled(struct amqp_worker *wk, uint64_t consumer, const char *reason)
{
    struct amqp_event *e = event_new(wk, AE_PUSH);
    e->consumer = consumer;
    snprintf(e->message, sizeof(e->message), "cancelled");
    cbuf_map(&e->data, 1);
    cbuf_str(&e->data, "reason");
    cbuf_str(&e->data, reason);
    post(wk, e);
}

static void post_state(struct amqp_worker *wk)
{
    struct amqp_event *e = event_new(wk, AE_STATE);
    e->up = wk->w->conn != NULL;
    e->blocked = wk->w->blocked;
    snprintf(e->message, sizeof(e->message), "%s", wk->w->last_error);
    post(wk, e);
}

/* ---- errors from rabbitmq-c ---- */

static void describe(amqp_rpc_reply_t r, char *buf, size_t len)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(buf, len, "ok");
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(buf, len, "no reply from the broker");
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, len, "%s", amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(buf, len, "%u %.*s", m->reply_code, (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(buf, len, "connection closed by the broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else {
            snprintf(buf, len, "unexpected broker method 0x%08x", r.reply.id);
        }
        break;
    }
}

static int open_channel(struct amqp_worker *wk, amqp_channel_t ch);

int amqp_worker_check_rpc(struct amqp_worker *wk, amqp_channel_t ch, char *err, size_t errlen)
{
    struct amqp_wstate *st = wk->w;
    amqp_rpc_reply_t r = amqp_get_rpc_reply(st->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    describe(r, err, errlen);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t ok = {0};
        if (amqp_send_method(st->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK ||
            open_channel(wk, ch) != 0) {
            amqp_worker_conn_lost(wk, "could not reopen a channel after a channel error");
            return FE_UNAVAILABLE;
        }
        return FE_BACKEND_ERROR;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(st->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    }
    amqp_worker_conn_lost(wk, err);
    return FE_UNAVAILABLE;
}

/* ---- channels ---- */

static int open_channel(struct amqp_worker *wk, amqp_channel_t ch)
{
    struct amqp_wstate *st = wk->w;
    amqp_channel_open(st->conn, ch);
    if (amqp_get_rpc_reply(st->conn).reply_type != AMQP_RESPONSE_NORMAL)
        return -1;
    if (ch == CH_PUB) {
        amqp_confirm_select(st->conn, ch);
        st->next_tag = 1;
    } else if (ch == CH_TX) {
        amqp_tx_select(st->conn, ch);
    } else if (ch == CH_RPC) {
        amqp_basic_consume(st->conn, ch, amqp_cstring_bytes("amq.rabbitmq.reply-to"), amqp_empty_bytes,
                           0, 1, 0, amqp_empty_table);
    } else {
        return 0;
    }
    return amqp_get_rpc_reply(st->conn).reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
}

static amqp_channel_t alloc_channel(struct amqp_worker *wk)
{
    struct amqp_wstate *st = wk->w;
    int max = amqp_get_channel_max(st->conn);
    if (max <= 0 || max > 65535)
        max = 2047;
    for (int tries = 0; tries < max; tries++) {
        amqp_channel_t ch = st->next_ch++;
        if (st->next_ch > max)
            st->next_ch = CH_FIRST_CONSUMER;
        bool used = false;
        struct dlist *p;
        dlist_foreach(p, &st->consumers)
            used |= container_of(p, struct consumer, node)->ch == ch &&
                    container_of(p, struct consumer, node)->active;
        if (!used)
            return ch;
    }
    return 0;
}

/* ---- topology ---- */

static bool same(amqp_bytes_t a, amqp_bytes_t b) { return bytes_eq(a, b); }

/* Keeps the declarations to replay after a reconnect, and forgets what a
 * delete removed. Takes c when it is kept. */
static bool record_topology(struct amqp_wstate *st, struct amqp_cmd *c)
{
    struct dlist *pos, *tmp;
    switch (c->kind) {
    case AC_EXCHANGE_DECLARE:
    case AC_QUEUE_DECLARE:
        if (c->passive || c->name.len == 0)
            return false; /* server-named queues cannot be declared again by name */
        dlist_foreach_safe(pos, tmp, &st->topology) {
            struct amqp_cmd *t = container_of(pos, struct amqp_cmd, node);
            if (t->kind == c->kind && same(t->name, c->name)) {
                dlist_remove(pos);
                amqp_cmd_free(t);
            }
        }
        dlist_push_tail(&st->topology, &c->node);
        return true;
    case AC_QUEUE_BIND:
        dlist_push_tail(&st->topology, &c->node);
        return true;
    case AC_EXCHANGE_DELETE:
    case AC_QUEUE_DELETE:
    case AC_QUEUE_UNBIND:
        dlist_foreach_safe(pos, tmp, &st->topology) {
            struct amqp_cmd *t = container_of(pos, struct amqp_cmd, node);
            bool drop = false;
            if (c->kind == AC_EXCHANGE_DELETE)
                drop = (t->kind == AC_EXCHANGE_DECLARE && same(t->name, c->name)) ||
                       (t->kind == AC_QUEUE_BIND && same(t->exchange, c->name));
            else if (c->kind == AC_QUEUE_DELETE)
                drop = (t->kind == AC_QUEUE_DECLARE && same(t->name, c->name)) ||
                       (t->kind == AC_QUEUE_BIND && same(t->name, c->name));
            else
                drop = t->kind == AC_QUEUE_BIND && same(t->name, c->name) && same(t->exchange, c->exchange) &&
                       same(t->routing_key, c->routing_key);
            if (drop) {
                dlist_remove(pos);
                amqp_cmd_free(t);
            }
        }
        if (c->kind == AC_EXCHANGE_DELETE) {
            for (size_t i = 0; i < st->nknown; i++)
                if (strlen(st->known_exchanges[i]) == c->name.len &&
                    memcmp(st->known_exchanges[i], c->name.bytes, c->name.len) == 0)
                    st->known_exchanges[i][0] = '\0';
        }
        return false;
    default:
        return false;
    }
}

/* Runs one topology RPC on CH_TOPO. Returns 0 or a code with err set;
 * on success the reply's fields go to out as a CBOR map. */
static int run_topology(struct amqp_worker *wk, struct amqp_cmd *c, struct cbuf *out, char *err, size_t errlen)
{
    struct amqp_wstate *st = wk->w;
    amqp_connection_state_t k = st->conn;
    int rc;
    switch (c->kind) {
    case AC_EXCHANGE_DECLARE:
        amqp_exchange_declare(k, CH_TOPO, c->name, c->type, c->passive, c->durable, c->auto_delete, c->internal,
                              c->arguments);
        break;
    case AC_EXCHANGE_DELETE:
        amqp_exchange_delete(k, CH_TOPO, c->name, c->if_unused);
        break;
    case AC_QUEUE_DECLARE: {
        amqp_queue_declare_ok_t *ok = amqp_queue_declare(k, CH_TOPO, c->name, c->passive, c->durable,
                                                         c->exclusive, c->auto_delete, c->arguments);
        if ((rc = amqp_worker_check_rpc(wk, CH_TOPO, err, errlen)) != 0)
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
    case AC_QUEUE_BIND:
        amqp_queue_bind(k, CH_TOPO, c->name, c->exchange, c->routing_key, c->arguments);
        break;
    case AC_QUEUE_UNBIND:
        amqp_queue_unbind(k, CH_TOPO, c->name, c->exchange, c->routing_key, c->arguments);
        break;
    case AC_QUEUE_PURGE: {
        amqp_queue_purge_ok_t *ok = amqp_queue_purge(k, CH_TOPO, c->name);
        if ((rc = amqp_worker_check_rpc(wk, CH_TOPO, err, errlen)) != 0)
            return rc;
        if (out) {
            cbuf_map(out, 1);
            cbuf_str(out, "message_count");
            cbuf_uint(out, ok->message_count);
        }
        return 0;
    }
    case AC_QUEUE_DELETE: {
        amqp_queue_delete_ok_t *ok = amqp_queue_delete(k, CH_TOPO, c->name, c->if_unused, c->if_empty);
        if ((rc = amqp_worker_check_rpc(wk, CH_TOPO, err, errlen)) != 0)
            return rc;
        if (out) {
            cbuf_map(out, 1);
            cbuf_str(out, "message_count");
            cbuf_uint(out, ok->message_count);
        }
        return 0;
    }
    default:
        return FE_INTERNAL;
    }
    if ((rc = amqp_worker_check_rpc(wk, CH_TOPO, err, errlen)) != 0)
        return rc;
    if (out)
        cbuf_map(out, 0);
    return 0;
}

static void do_topology(struct amqp_worker *wk, struct amqp_cmd *c)
{
    char err[200];
    struct cbuf out;
    cbuf_init(&out);
    int rc = run_topology(wk, c, &out, err, sizeof(err));
    if (rc) {
        amqp_worker_reply_err(wk, c->seq, rc, "%s", err);
        cbuf_free(&out);
        amqp_cmd_free(c);
        return;
    }
    amqp_worker_reply_ok(wk, c->seq, &out);
    if (!record_topology(wk->w, c))
        amqp_cmd_free(c);
}

/* ---- consumers ---- */

static struct consumer *find_consumer(struct amqp_wstate *st, uint64_t id)
{
    struct dlist *p;
    dlist_foreach(p, &st->consumers) {
        struct consumer *c = container_of(p, struct consumer, node);
        if (c->id == id)
            return c;
    }
    return NULL;
}

/* Subscribes c on a fresh channel. Returns 0 or a code with err set. */
static int subscribe(struct amqp_worker *wk, struct consumer *c, char *err, size_t errlen)
{
    struct amqp_wstate *st = wk->w;
    c->active = false;
    c->ch = alloc_channel(wk);
    if (!c->ch) {
        snprintf(err, errlen, "no free channel");
        return FE_OVERLOADED;
    }
    c->gen++;
    tagset_reset(&c->open); /* the new channel numbers its deliveries from 1 */
    amqp_channel_open(st->conn, c->ch);
    int rc = amqp_worker_check_rpc(wk, c->ch, err, errlen);
    if (rc)
        return rc;
    amqp_basic_qos(st->conn, c->ch, 0, c->prefetch, 0);
    if ((rc = amqp_worker_check_rpc(wk, c->ch, err, errlen)) != 0)
        goto fail;
    amqp_basic_consume(st->conn, c->ch, c->queue, amqp_cstring_bytes(c->tag), 0, c->no_ack, c->exclusive,
                       amqp_empty_table);
    if ((rc = amqp_worker_check_rpc(wk, c->ch, err, errlen)) != 0)
        goto fail;
    c->active = true;
    return 0;
fail:
    if (rc == FE_BACKEND_ERROR && st->conn) {
        /* amqp_worker_check_rpc reopened the channel; this consumer does not need it. */
        amqp_channel_close(st->conn, c->ch, AMQP_REPLY_SUCCESS);
    }
    return rc;
}

static void consumer_free(struct consumer *c)
{
    dlist_remove(&c->node);
    amqp_bytes_free(c->queue);
    tagset_free(&c->open);
    free(c);
}

static void do_consume(struct amqp_worker *wk, struct amqp_cmd *cmd)
{
    struct amqp_wstate *st = wk->w;
    struct consumer *c = xcalloc(1, sizeof(*c));
    c->id = cmd->consumer;
    c->client_id = cmd->client_id;
    c->queue = amqp_bytes_malloc_dup(cmd->name);
    snprintf(c->tag, sizeof(c->tag), "ferry-%llu", (unsigned long long)c->id);
    c->prefetch = cmd->prefetch;
    c->no_ack = cmd->no_ack;
    c->exclusive = cmd->exclusive;
    dlist_push_tail(&st->consumers, &c->node);
    char err[200];
    int rc = subscribe(wk, c, err, sizeof(err));
    if (rc) {
        consumer_free(c);
        amqp_worker_reply_err(wk, cmd->seq, rc, "%s", err);
        return;
    }
    struct cbuf b;
    cbuf_init(&b);
    cbuf_map(&b, 1);
    cbuf_str(&b, "consumer_tag");
    cbuf_str(&b, c->tag);
    amqp_worker_reply_ok(wk, cmd->seq, &b);
}

static void drop_consumer(struct amqp_worker *wk, struct consumer *c, bool requeue_unacked)
{
    struct amqp_wstate *st = wk->w;
    if (st->conn && c->active) {
        if (requeue_unacked && !c->no_ack)
            amqp_basic_nack(st->conn, c->ch, 0, 1, 1);
        amqp_basic_cancel(st->conn, c->ch, amqp_cstring_bytes(c->tag));
        amqp_channel_close(st->conn, c->ch, AMQP_REPLY_SUCCESS);
    }
    consumer_free(c);
}

static void do_ack(struct amqp_worker *wk, struct amqp_cmd *cmd)
{
    struct amqp_wstate *st = wk->w;
    struct consumer *c = find_consumer(st, cmd->consumer);
    if (!c) {
        amqp_worker_reply_err(wk, cmd->seq, FE_BAD_REQUEST, "no such subscription");
        return;
    }
    if (c->no_ack) {
        amqp_worker_reply_err(wk, cmd->seq, FE_BAD_REQUEST, "the subscription acknowledges automatically (no_ack)");
        return;
    }
    uint64_t gen = cmd->delivery_tag >> AMQP_TAG_BITS, tag = cmd->delivery_tag & AMQP_TAG_MASK;
    unsigned long long shown = (unsigned long long)cmd->delivery_tag;
    if (gen == 0 || gen > c->gen) {
        amqp_worker_reply_err(wk, cmd->seq, FE_BAD_REQUEST,
                              "delivery tag %llu was never delivered on this subscription", shown);
        return;
    }
    if (gen != c->gen || !c->active) {
        amqp_worker_reply_err(wk, cmd->seq, FE_BACKEND_ERROR,
                  "stale delivery tag: the channel was reopened since, and the message was requeued");
        return;
    }
    /* Settling a tag twice, or one never delivered, would make the broker
     * close this consumer's channel (406) and redeliver everything else
     * unacknowledged on it: refuse it here instead. */
    bool multiple = cmd->kind != AC_REJECT && cmd->multiple;
    switch (tagset_check(&c->open, tag, multiple)) {
    case TAGSET_OPEN:
        break;
    case TAGSET_UNKNOWN:
        amqp_worker_reply_err(wk, cmd->seq, FE_BAD_REQUEST,
                              "delivery tag %llu was never delivered on this subscription", shown);
        return;
    case TAGSET_SETTLED:
        amqp_worker_reply_err(wk, cmd->seq, FE_BAD_REQUEST,
                              multiple ? "every delivery up to tag %llu was already acked, nacked or rejected"
                                       : "delivery tag %llu was already acked, nacked or rejected",
                              shown);
        return;
    case TAGSET_STRANDED:
        amqp_worker_reply_err(wk, cmd->seq, FE_BAD_REQUEST,
                              "delivery tag %llu was already acked, nacked or rejected, and no later delivery is "
                              "unsettled: to settle the earlier ones, name the last of them",
                              shown);
        return;
    }
    int s;
    if (cmd->kind == AC_ACK)
        s = amqp_basic_ack(st->conn, c->ch, tag, cmd->multiple);
    else if (cmd->kind == AC_NACK)
        s = amqp_basic_nack(st->conn, c->ch, tag, cmd->multiple, cmd->requeue);
    else
        s = amqp_basic_reject(st->conn, c->ch, tag, cmd->requeue);
    if (s != AMQP_STATUS_OK) {
        amqp_worker_conn_lost(wk, amqp_error_string2(s));
        amqp_worker_reply_err(wk, cmd->seq, FE_UNAVAILABLE, "connection lost");
        return;
    }
    tagset_settle(&c->open, tag, multiple);
    reply_simple_ok(wk, cmd->seq);
}

/* ---- get and rpc ---- */

static void do_get(struct amqp_worker *wk, struct amqp_cmd *cmd)
{
    struct amqp_wstate *st = wk->w;
    char err[200];
    amqp_rpc_reply_t r = amqp_basic_get(st->conn, CH_TOPO, cmd->name, 1);
    (void)r;
    int rc = amqp_worker_check_rpc(wk, CH_TOPO, err, sizeof(err));
    if (rc) {
        amqp_worker_reply_err(wk, cmd->seq, rc, "%s", err);
        return;
    }
    struct cbuf b;
    cbuf_init(&b);
    amqp_rpc_reply_t last = amqp_get_rpc_reply(st->conn);
    if (last.reply.id != AMQP_BASIC_GET_OK_METHOD) {
        cbuf_null(&b);
        amqp_worker_reply_ok(wk, cmd->seq, &b);
        return;
    }
    amqp_basic_get_ok_t ok = *(amqp_basic_get_ok_t *)last.reply.decoded;
    amqp_bytes_t ex = amqp_bytes_malloc_dup(ok.exchange), rk = amqp_bytes_malloc_dup(ok.routing_key);
    amqp_message_t m;
    amqp_rpc_reply_t rr = amqp_read_message(st->conn, CH_TOPO, &m, 0);
    if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
        describe(rr, err, sizeof(err));
        amqp_worker_conn_lost(wk, err);
        amqp_worker_reply_err(wk, cmd->seq, FE_UNAVAILABLE, "%s", err);
    } else {
        struct cbuf extra;
        cbuf_init(&extra);
        cbuf_str(&extra, "redelivered");
        cbuf_bool(&extra, ok.redelivered);
        cbuf_str(&extra, "message_count");
        cbuf_uint(&extra, ok.message_count);
        amqp_message_to_cbor(&b, &ex, &rk, &m, 2, extra.data, extra.len);
        cbuf_free(&extra);
        amqp_destroy_message(&m);
        amqp_worker_reply_ok(wk, cmd->seq, &b);
    }
    amqp_bytes_free(ex);
    amqp_bytes_free(rk);
    cbuf_free(&b);
}

static void do_rpc(struct amqp_worker *wk, struct amqp_cmd *cmd)
{
    struct amqp_wstate *st = wk->w;
    struct amqp_out_msg *m = &cmd->msgs[0];
    struct rpc_wait *w = xcalloc(1, sizeof(*w));
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
    int rc = amqp_publish_ensure_exchange(wk, m->exchange, err, sizeof(err));
    if (rc) {
        amqp_worker_reply_err(wk, cmd->seq, rc, "%s", err);
        free(w);
        return;
    }
    /* Mandatory: a request that reaches no queue (nobody declared it, so
     * no responder can be there) comes back as a basic.return, answered
     * 'unroutable' at once instead of a 'timeout' at the deadline. */
    int s = amqp_basic_publish(st->conn, CH_RPC, m->exchange, m->routing_key, 1, 0, &m->props, m->body);
    if (s != AMQP_STATUS_OK) {
        amqp_worker_conn_lost(wk, amqp_error_string2(s));
        amqp_worker_reply_err(wk, cmd->seq, FE_UNAVAILABLE, "connection lost");
        free(w);
        return;
    }
    dlist_push_tail(&st->rpcs, &w->node);
}

/* A request of ours the broker returned (mandatory, no queue): its
 * correlation id names the waiting RPC. */
static void rpc_on_return(struct amqp_worker *wk, const amqp_basic_return_t *ret, const amqp_message_t *m)
{
    struct amqp_wstate *st = wk->w;
    const amqp_bytes_t *corr = &m->properties.correlation_id;
    if (!(m->properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG))
        return;
    atomic_fetch_add(&wk->counters.returns, 1);
    struct dlist *pos;
    dlist_foreach(pos, &st->rpcs) {
        struct rpc_wait *w = container_of(pos, struct rpc_wait, node);
        if (corr->len == strlen(w->corr) && memcmp(corr->bytes, w->corr, corr->len) == 0) {
            amqp_worker_reply_err(wk, w->seq, FE_UNROUTABLE,
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

/* ---- incoming frames ---- */

/* Copies the W3C trace context a publisher put in the message's headers
 * (ferry's own publishes do), so the CONSUMER span continues its trace. */
static void trace_headers(const amqp_message_t *m, struct amqp_event *e)
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

static void on_delivery(struct amqp_worker *wk, amqp_channel_t ch, const amqp_basic_deliver_t *d,
                        const amqp_message_t *m)
{
    struct amqp_wstate *st = wk->w;
    if (ch == CH_RPC) {
        struct dlist *pos;
        dlist_foreach(pos, &st->rpcs) {
            struct rpc_wait *w = container_of(pos, struct rpc_wait, node);
            const amqp_bytes_t *corr = &m->properties.correlation_id;
            if ((m->properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG) && corr->len == strlen(w->corr) &&
                memcmp(corr->bytes, w->corr, corr->len) == 0) {
                struct cbuf b;
                cbuf_init(&b);
                amqp_message_to_cbor(&b, &d->exchange, &d->routing_key, m, 0, NULL, 0);
                amqp_worker_reply_ok(wk, w->seq, &b);
                dlist_remove(pos);
                free(w);
                return;
            }
        }
        return; /* a late reply to an RPC whose deadline passed */
    }
    struct consumer *c = NULL;
    struct dlist *pos;
    dlist_foreach(pos, &st->consumers) {
        struct consumer *k = container_of(pos, struct consumer, node);
        if (k->ch == ch && k->active)
            c = k;
    }
    if (!c)
        return;
    atomic_fetch_add(&wk->counters.deliveries, 1);
    if (!c->no_ack && !tagset_add(&c->open, d->delivery_tag & AMQP_TAG_MASK, c->prefetch) &&
        !c->over_prefetch_logged) {
        c->over_prefetch_logged = true;
        log_warn("amqp: consumer %s holds more unacknowledged deliveries than its prefetch (%u)", c->tag,
                 c->prefetch);
    }
    struct amqp_event *e = event_new(wk, AE_PUSH);
    e->consumer = c->id;
    memcpy(e->message, "delivery", sizeof("delivery"));
    /* The fields after the message's own, built once per delivery in a
     * buffer the worker keeps, so that a delivery costs no allocation
     * beyond its event and its data. */
    struct cbuf *extra = &wk->w->extra;
    extra->len = 0;
    cbuf_str(extra, "delivery_tag");
    cbuf_uint(extra, (c->gen << AMQP_TAG_BITS) | (d->delivery_tag & AMQP_TAG_MASK));
    cbuf_str(extra, "redelivered");
    cbuf_bool(extra, d->redelivered);
    cbuf_str(extra, "consumer_tag");
    cbuf_str(extra, c->tag);
    cbuf_reserve(&e->data, m->body.len + d->exchange.len + d->routing_key.len + extra->len + 256);
    amqp_message_to_cbor(&e->data, &d->exchange, &d->routing_key, m, 3, extra->data, extra->len);
    trace_headers(m, e);
    e->delivery_tag = (c->gen << AMQP_TAG_BITS) | (d->delivery_tag & AMQP_TAG_MASK);
    e->body_size = m->body.len;
    copy_text(e->routing_key, sizeof(e->routing_key), d->routing_key);
    if (m->properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        copy_text(e->message_id, sizeof(e->message_id), m->properties.message_id);
    post(wk, e);
}

/* A channel the broker closed under us: reopen it and put back what lived
 * on it. */
static void on_channel_close(struct amqp_worker *wk, amqp_channel_t ch, const amqp_channel_close_t *cl)
{
    struct amqp_wstate *st = wk->w;
    log_warn("amqp: channel %u closed by the broker: %u %.*s", ch, cl->reply_code, (int)cl->reply_text.len,
             (char *)cl->reply_text.bytes);
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(st->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK) {
        amqp_worker_conn_lost(wk, "send channel.close-ok failed");
        return;
    }
    if (ch <= CH_RPC) {
        if (open_channel(wk, ch) != 0) {
            amqp_worker_conn_lost(wk, "could not reopen a channel");
            return;
        }
        if (ch == CH_PUB) {
            /* Unconfirmed messages died with the channel: send them again.
             * The exchange that closed it is checked again first. */
            amqp_publish_forget_exchanges(st);
            struct dlist *pos;
            dlist_foreach(pos, &st->pubs) {
                struct pub *p = container_of(pos, struct pub, node);
                if (p->tag) {
                    p->tag = 0;
                    atomic_fetch_add(&wk->counters.republished, 1);
                }
            }
            amqp_publish_flush(wk);
        }
        return;
    }
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &st->consumers) {
        struct consumer *c = container_of(pos, struct consumer, node);
        if (c->ch != ch || !c->active)
            continue;
        char err[200];
        if (subscribe(wk, c, err, sizeof(err)) != 0) {
            push_cancelled(wk, c->id, err);
            consumer_free(c);
        }
        return;
    }
}

/* Reads every frame that has arrived, without waiting. */
static void pump_frames(struct amqp_worker *wk);

static void pump(struct amqp_worker *wk)
{
    wk->w->holding_events = true;
    pump_frames(wk);
    post_held(wk);
}

static void pump_frames(struct amqp_worker *wk)
{
    struct amqp_wstate *st = wk->w;
    for (int n = 0; st->conn && n < 10000; n++) {
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        int s = amqp_simple_wait_frame_noblock(st->conn, &f, &zero);
        if (s == AMQP_STATUS_TIMEOUT)
            break;
        if (s != AMQP_STATUS_OK) {
            amqp_worker_conn_lost(wk, amqp_error_string2(s));
            return;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        amqp_channel_t ch = f.channel;
        switch (f.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            amqp_publish_on_confirm(wk, a->delivery_tag, a->multiple, true);
            break;
        }
        case AMQP_BASIC_NACK_METHOD: {
            amqp_basic_nack_t *a = f.payload.method.decoded;
            amqp_publish_on_confirm(wk, a->delivery_tag, a->multiple, false);
            break;
        }
        case AMQP_BASIC_RETURN_METHOD: {
            amqp_basic_return_t ret = *(amqp_basic_return_t *)f.payload.method.decoded;
            ret.reply_text = amqp_bytes_malloc_dup(ret.reply_text);
            ret.exchange = amqp_bytes_malloc_dup(ret.exchange);
            ret.routing_key = amqp_bytes_malloc_dup(ret.routing_key);
            amqp_message_t m;
            amqp_rpc_reply_t r = amqp_read_message(st->conn, ch, &m, 0);
            if (r.reply_type == AMQP_RESPONSE_NORMAL) {
                if (ch == CH_RPC)
                    rpc_on_return(wk, &ret, &m);
                else
                    amqp_publish_on_return(wk, &ret, &m);
                amqp_destroy_message(&m);
            }
            amqp_bytes_free(ret.reply_text);
            amqp_bytes_free(ret.exchange);
            amqp_bytes_free(ret.routing_key);
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                amqp_worker_conn_lost(wk, "reading a returned message failed");
                return;
            }
            break;
        }
        case AMQP_BASIC_DELIVER_METHOD: {
            /* The method's strings live in the frame pool, which reading
             * the message may reuse; both are short strings (at most 255
             * bytes), so they are copied to the stack, not the heap. */
            amqp_basic_deliver_t d = *(amqp_basic_deliver_t *)f.payload.method.decoded;
            char exch[256], rkey[256];
            if (d.exchange.len)
                memcpy(exch, d.exchange.bytes, d.exchange.len & 255);
            if (d.routing_key.len)
                memcpy(rkey, d.routing_key.bytes, d.routing_key.len & 255);
            d.exchange.bytes = exch;
            d.exchange.len &= 255;
            d.routing_key.bytes = rkey;
            d.routing_key.len &= 255;
            d.consumer_tag = amqp_empty_bytes;
            amqp_message_t m;
            amqp_rpc_reply_t r = amqp_read_message(st->conn, ch, &m, 0);
            if (r.reply_type == AMQP_RESPONSE_NORMAL) {
                on_delivery(wk, ch, &d, &m);
                amqp_destroy_message(&m);
            }
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                amqp_worker_conn_lost(wk, "reading a delivery failed");
                return;
            }
            break;
        }
        case AMQP_BASIC_CANCEL_METHOD: {
            /* The broker cancelled a consumer (its queue was deleted). */
            struct dlist *pos, *tmp;
            dlist_foreach_safe(pos, tmp, &st->consumers) {
                struct consumer *c = container_of(pos, struct consumer, node);
                if (c->ch == ch && c->active) {
                    push_cancelled(wk, c->id, "the broker cancelled the consumer (was its queue deleted?)");
                    amqp_channel_close(st->conn, c->ch, AMQP_REPLY_SUCCESS);
                    consumer_free(c);
                }
            }
            break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD:
            on_channel_close(wk, ch, f.payload.method.decoded);
            break;
        case AMQP_CONNECTION_CLOSE_METHOD: {
            amqp_connection_close_t *cl = f.payload.method.decoded;
            char why[200];
            snprintf(why, sizeof(why), "connection closed by the broker: %u %.*s", cl->reply_code,
                     (int)cl->reply_text.len, (char *)cl->reply_text.bytes);
            amqp_connection_close_ok_t ok = {0};
            amqp_send_method(st->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
            amqp_worker_conn_lost(wk, why);
            return;
        }
        case AMQP_CONNECTION_BLOCKED_METHOD:
            st->blocked = true;
            log_warn("amqp: the broker is blocking publishers");
            post_state(wk);
            break;
        case AMQP_CONNECTION_UNBLOCKED_METHOD:
            st->blocked = false;
            log_info("amqp: the broker unblocked publishers");
            post_state(wk);
            amqp_publish_flush(wk);
            break;
        default:
            break;
        }
    }
    if (st->conn)
        amqp_maybe_release_buffers(st->conn);
}

/* ---- connecting ---- */

void amqp_worker_conn_lost(struct amqp_worker *wk, const char *why)
{
    struct amqp_wstate *st = wk->w;
    if (!st->conn)
        return;
    snprintf(st->last_error, sizeof(st->last_error), "%s", why);
    log_warn("amqp: connection lost: %s", why);
    atomic_store(&wk->sockfd, -1);
    amqp_destroy_connection(st->conn);
    st->conn = NULL;
    st->blocked = false;
    atomic_fetch_add(&wk->counters.drops, 1);
    st->failures = 1;
    st->retry_at = amqp_now_ms() + backoff_ms(&st->rng, st->failures, wk->backoff_min_ms, wk->backoff_max_ms);
    /* Sent-but-unconfirmed messages go back to unsent, to be published
     * again after reconnecting while their deadline allows. */
    struct dlist *pos;
    dlist_foreach(pos, &st->pubs)
        container_of(pos, struct pub, node)->tag = 0;
    dlist_foreach(pos, &st->consumers)
        container_of(pos, struct consumer, node)->active = false;
    /* Replies to RPCs cannot arrive on a new connection's reply-to. */
    while (!dlist_empty(&st->rpcs)) {
        struct rpc_wait *w = container_of(st->rpcs.next, struct rpc_wait, node);
        dlist_remove(&w->node);
        amqp_worker_reply_err(wk, w->seq, FE_UNAVAILABLE, "connection lost before the reply: %s", why);
        free(w);
    }
    amqp_publish_forget_exchanges(st);
    amqp_publish_forget_holding(st);
    post_state(wk);
}

static amqp_table_entry_t entry_bool(const char *k, bool v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e.value.value.boolean = v;
    return e;
}

static int try_connect(struct amqp_worker *wk, const struct url_amqp *a)
{
    struct amqp_wstate *st = wk->w;
    struct timeval tv = {.tv_sec = (time_t)(wk->connect_timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(wk->connect_timeout_ms % 1000) * 1000};
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (!sock) {
        amqp_destroy_connection(conn);
        snprintf(st->last_error, sizeof(st->last_error), "cannot create a socket");
        return -1;
    }
    int s = amqp_socket_open_noblock(sock, a->host, a->port, &tv);
    if (s != AMQP_STATUS_OK) {
        snprintf(st->last_error, sizeof(st->last_error), "%.120s: %.70s", a->redacted, amqp_error_string2(s));
        amqp_destroy_connection(conn);
        return -1;
    }
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    amqp_table_entry_t caps[] = {entry_bool("publisher_confirms", true), entry_bool("consumer_cancel_notify", true),
                                 entry_bool("connection.blocked", true), entry_bool("basic.nack", true),
                                 entry_bool("exchange_exchange_bindings", true)};
    amqp_table_entry_t props[3];
    props[0].key = amqp_cstring_bytes("connection_name");
    props[0].value.kind = AMQP_FIELD_KIND_UTF8;
    props[0].value.value.bytes = amqp_cstring_bytes(a->name);
    props[1].key = amqp_cstring_bytes("product");
    props[1].value.kind = AMQP_FIELD_KIND_UTF8;
    props[1].value.value.bytes = amqp_cstring_bytes("ferryd " FERRY_VERSION);
    props[2].key = amqp_cstring_bytes("capabilities");
    props[2].value.kind = AMQP_FIELD_KIND_TABLE;
    props[2].value.value.table.num_entries = 5;
    props[2].value.value.table.entries = caps;
    amqp_table_t client_props = {.num_entries = 3, .entries = props};
    amqp_rpc_reply_t r = amqp_login_with_properties(conn, a->vhost, 0, 131072, a->heartbeat, &client_props,
                                                    AMQP_SASL_METHOD_PLAIN, a->user, a->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[160];
        describe(r, why, sizeof(why));
        snprintf(st->last_error, sizeof(st->last_error), "%.100s: login: %.90s", a->redacted, why);
        amqp_destroy_connection(conn);
        return -1;
    }
    st->conn = conn;
    st->heartbeat = a->heartbeat;
    st->next_ch = CH_FIRST_CONSUMER;
    for (amqp_channel_t ch = CH_PUB; ch <= CH_RPC; ch++) {
        if (open_channel(wk, ch) != 0) {
            snprintf(st->last_error, sizeof(st->last_error), "%.120s: opening channel %u failed", a->redacted, ch);
            amqp_destroy_connection(conn);
            st->conn = NULL;
            return -1;
        }
    }
    atomic_store(&wk->sockfd, amqp_get_sockfd(conn));
    return 0;
}

/* Declares again what clients declared, resubscribes consumers and sends
 * unconfirmed messages again. */
static void restore(struct amqp_worker *wk)
{
    struct amqp_wstate *st = wk->w;
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &st->topology) {
        struct amqp_cmd *c = container_of(pos, struct amqp_cmd, node);
        char err[200];
        int rc = run_topology(wk, c, NULL, err, sizeof(err));
        if (rc == FE_UNAVAILABLE)
            return;
        if (rc)
            log_warn("amqp: re-declaring '%.*s' after reconnecting failed: %s", (int)c->name.len,
                     (char *)c->name.bytes, err);
    }
    dlist_foreach_safe(pos, tmp, &st->consumers) {
        struct consumer *c = container_of(pos, struct consumer, node);
        char err[200];
        if (!st->conn)
            return;
        if (subscribe(wk, c, err, sizeof(err)) != 0 && st->conn) {
            log_warn("amqp: resubscribing to '%.*s' failed: %s", (int)c->queue.len, (char *)c->queue.bytes, err);
            push_cancelled(wk, c->id, err);
            consumer_free(c);
        }
    }
    size_t again = 0;
    dlist_foreach(pos, &st->pubs)
        again += container_of(pos, struct pub, node)->tag == 0;
    if (again) {
        log_info("amqp: publishing %zu unconfirmed messages again", again);
        atomic_fetch_add(&wk->counters.republished, again);
    }
    amqp_publish_flush(wk);
}

static void connect_now(struct amqp_worker *wk)
{
    struct amqp_wstate *st = wk->w;
    for (size_t k = 0; k < wk->naddrs; k++) {
        const struct url_amqp *a = &wk->addrs[(st->addr_next + k) % wk->naddrs];
        if (try_connect(wk, a) == 0) {
            st->addr_next = (st->addr_next + k) % wk->naddrs;
            st->failures = 0;
            st->last_error[0] = '\0';
            atomic_fetch_add(&wk->counters.connects, 1);
            log_info("amqp: connected to %s", a->redacted);
            restore(wk);
            if (st->conn)
                post_state(wk);
            return;
        }
    }
    st->failures++;
    if (st->failures == 1 || st->failures % 20 == 0)
        log_warn("amqp: cannot connect: %s", st->last_error);
    st->retry_at = amqp_now_ms() + backoff_ms(&st->rng, st->failures, wk->backoff_min_ms, wk->backoff_max_ms);
    post_state(wk);
}

/* ---- the thread ---- */

static void execute(struct amqp_worker *wk, struct amqp_cmd *c)
{
    struct amqp_wstate *st = wk->w;
    if (c->kind == AC_CLIENT_GONE) {
        struct dlist *pos, *tmp;
        dlist_foreach_safe(pos, tmp, &st->consumers) {
            struct consumer *k = container_of(pos, struct consumer, node);
            if (k->client_id == c->client_id)
                drop_consumer(wk, k, true);
        }
        amqp_cmd_free(c);
        return;
    }
    if (c->kind == AC_CANCEL) {
        struct consumer *k = find_consumer(st, c->consumer);
        if (k)
            drop_consumer(wk, k, false);
        reply_simple_ok(wk, c->seq);
        amqp_cmd_free(c);
        return;
    }
    if (c->deadline <= amqp_now_ms()) {
        amqp_cmd_free(c); /* nobody is waiting any more */
        return;
    }
    if (!st->conn) {
        amqp_worker_reply_err(wk, c->seq, FE_UNAVAILABLE, "not connected to the broker: %s", st->last_error);
        amqp_cmd_free(c);
        return;
    }
    switch (c->kind) {
    case AC_EXCHANGE_DECLARE:
    case AC_EXCHANGE_DELETE:
    case AC_QUEUE_DECLARE:
    case AC_QUEUE_BIND:
    case AC_QUEUE_UNBIND:
    case AC_QUEUE_PURGE:
    case AC_QUEUE_DELETE:
        do_topology(wk, c);
        return;
    case AC_PUBLISH:
    case AC_PUBLISH_DELAYED:
        if (c->tx)
            amqp_publish_tx(wk, c);
        else
            amqp_publish_run(wk, c);
        return;
    case AC_CONSUME:
        do_consume(wk, c);
        break;
    case AC_ACK:
    case AC_NACK:
    case AC_REJECT:
        do_ack(wk, c);
        break;
    case AC_GET:
        do_get(wk, c);
        break;
    case AC_RPC:
        do_rpc(wk, c);
        break;
    default:
        amqp_worker_reply_err(wk, c->seq, FE_INTERNAL, "unknown command");
        break;
    }
    amqp_cmd_free(c);
}

static void expire(struct amqp_worker *wk)
{
    struct amqp_wstate *st = wk->w;
    uint64_t now = amqp_now_ms();
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &st->rpcs) {
        struct rpc_wait *w = container_of(pos, struct rpc_wait, node);
        if (w->deadline <= now) {
            dlist_remove(pos);
            free(w);
        }
    }
    if (!st->conn || st->blocked) {
        dlist_foreach_safe(pos, tmp, &st->pubs) {
            struct pub *p = container_of(pos, struct pub, node);
            if (p->g->cmd->deadline <= now)
                amqp_publish_resolve(wk, p, st->blocked ? FE_BLOCKED : FE_UNCONFIRMED,
                            "the deadline passed before the broker confirmed");
        }
    }
}

static void *worker_main(void *arg)
{
    struct amqp_worker *wk = arg;
    struct amqp_wstate *st = wk->w;
    struct dlist local;
    dlist_init(&local);
    for (;;) {
        pthread_mutex_lock(&wk->mu);
        bool stop = wk->stop;
        while (!dlist_empty(&wk->cmds)) {
            struct dlist *n = wk->cmds.next;
            dlist_remove(n);
            dlist_push_tail(&local, n);
        }
        pthread_mutex_unlock(&wk->mu);
        if (stop)
            break;
        if (!st->conn && amqp_now_ms() >= st->retry_at)
            connect_now(wk);
        while (!dlist_empty(&local)) {
            struct dlist *n = local.next;
            dlist_remove(n);
            execute(wk, container_of(n, struct amqp_cmd, node));
        }
        if (st->conn)
            pump(wk);
        expire(wk);
        if (st->conn && (amqp_frames_enqueued(st->conn) || amqp_data_in_buffer(st->conn)))
            continue;

        int timeout = 1000;
        if (st->conn && st->heartbeat > 0 && st->heartbeat * 500 < timeout)
            timeout = st->heartbeat * 500;
        if (!st->conn) {
            uint64_t now = amqp_now_ms();
            timeout = st->retry_at > now ? (int)(st->retry_at - now) : 0;
            if (timeout > 1000)
                timeout = 1000;
        }
        if (!dlist_empty(&st->rpcs) || !dlist_empty(&st->pubs))
            timeout = timeout > 100 ? 100 : timeout;
        struct pollfd fds[2] = {{.fd = wk->wake_fd, .events = POLLIN},
                                {.fd = st->conn ? amqp_get_sockfd(st->conn) : -1, .events = POLLIN}};
        poll(fds, 2, timeout);
        if (fds[0].revents & POLLIN) {
            uint64_t v;
            ssize_t r = read(wk->wake_fd, &v, sizeof(v));
            (void)r;
        }
    }

    /* Stopping: whatever is left gets 'shutting_down' (the loop has
     * answered its requests already; these replies are dropped). */
    while (!dlist_empty(&local)) {
        struct amqp_cmd *c = container_of(local.next, struct amqp_cmd, node);
        dlist_remove(&c->node);
        amqp_cmd_free(c);
    }
    while (!dlist_empty(&st->pubs))
        amqp_publish_resolve(wk, container_of(st->pubs.next, struct pub, node), FE_SHUTTING_DOWN, "shutting down");
    while (!dlist_empty(&st->consumers))
        drop_consumer(wk, container_of(st->consumers.next, struct consumer, node), true);
    while (!dlist_empty(&st->rpcs)) {
        struct rpc_wait *w = container_of(st->rpcs.next, struct rpc_wait, node);
        dlist_remove(&w->node);
        free(w);
    }
    while (!dlist_empty(&st->topology)) {
        struct amqp_cmd *c = container_of(st->topology.next, struct amqp_cmd, node);
        dlist_remove(&c->node);
        amqp_cmd_free(c);
    }
    if (st->conn) {
        atomic_store(&wk->sockfd, -1);
        amqp_connection_close(st->conn, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(st->conn);
        st->conn = NULL;
    }
    amqp_publish_forget_exchanges(st);
    amqp_publish_forget_holding(st);
    post(wk, event_new(wk, AE_STOPPED));
    return NULL;
}

int amqp_worker_start(struct amqp_worker *wk)
{
    pthread_mutex_init(&wk->mu, NULL);
    dlist_init(&wk->cmds);
    dlist_init(&wk->events);
    dlist_init(&wk->spare);
    wk->nspare = 0;
    atomic_store(&wk->sockfd, -1);
    wk->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wk->wake_fd < 0)
        return -1;
    struct amqp_wstate *st = xcalloc(1, sizeof(*st));
    dlist_init(&st->pubs);
    dlist_init(&st->consumers);
    dlist_init(&st->rpcs);
    dlist_init(&st->topology);
    dlist_init(&st->held);
    dlist_init(&st->spare);
    cbuf_init(&st->extra);
    st->rng = (uint32_t)amqp_now_ms() ^ (uint32_t)getpid();
    wk->w = st;
    if (pthread_create(&wk->thread, NULL, worker_main, wk) != 0) {
        close(wk->wake_fd);
        free(st);
        wk->w = NULL;
        return -1;
    }
    wk->started = true;
    return 0;
}

static void wake(struct amqp_worker *wk)
{
    uint64_t one = 1;
    ssize_t r = write(wk->wake_fd, &one, sizeof(one));
    (void)r;
}

void amqp_worker_post(struct amqp_worker *wk, struct amqp_cmd *cmd)
{
    pthread_mutex_lock(&wk->mu);
    dlist_push_tail(&wk->cmds, &cmd->node);
    pthread_mutex_unlock(&wk->mu);
    wake(wk);
}

void amqp_worker_stop(struct amqp_worker *wk)
{
    pthread_mutex_lock(&wk->mu);
    wk->stop = true;
    pthread_mutex_unlock(&wk->mu);
    wake(wk);
}

void amqp_worker_kick_socket(struct amqp_worker *wk)
{
    int fd = atomic_load(&wk->sockfd);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

void amqp_worker_join(struct amqp_worker *wk)
{
    if (!wk->started)
        return;
    pthread_join(wk->thread, NULL);
    wk->started = false;
    close(wk->wake_fd);
    while (!dlist_empty(&wk->cmds)) {
        struct amqp_cmd *c = container_of(wk->cmds.next, struct amqp_cmd, node);
        dlist_remove(&c->node);
        amqp_cmd_free(c);
    }
    while (!dlist_empty(&wk->events)) {
        struct amqp_event *e = container_of(wk->events.next, struct amqp_event, node);
        dlist_remove(&e->node);
        amqp_event_free(e);
    }
    while (!dlist_empty(&wk->spare)) {
        struct amqp_event *e = container_of(wk->spare.next, struct amqp_event, node);
        dlist_remove(&e->node);
        amqp_event_free(e);
    }
    if (wk->w) {
        cbuf_free(&wk->w->extra);
        while (!dlist_empty(&wk->w->spare)) {
            struct amqp_event *e = container_of(wk->w->spare.next, struct amqp_event, node);
            dlist_remove(&e->node);
            amqp_event_free(e);
        }
    }
    free(wk->w);
    wk->w = NULL;
    pthread_mutex_destroy(&wk->mu);
}
