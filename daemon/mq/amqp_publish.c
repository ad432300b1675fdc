/* amqp_publish.c: publishing on the worker thread: confirmed messages
 * (single and batched), delayed messages through holding queues, and
 * transactional batches.
 *
 * A publish request becomes a pub_group of pubs, one per message. A pub is
 * sent on the confirm channel and waits there for basic.ack/nack (and a
 * basic.return first, when a mandatory message found no queue). When the
 * connection drops, sent pubs go back to unsent and are published again
 * after reconnecting, while their deadline allows; so a message the client
 * saw confirmed was confirmed by the broker, and one it did not see may
 * arrive twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_wstate.h"
#include "errors.h"
#include "log.h"

static bool bytes_eq(amqp_bytes_t a, amqp_bytes_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.bytes, b.bytes, a.len) == 0);
}

static bool exchange_known(struct amqp_wstate *st, amqp_bytes_t ex)
{
    if (ex.len == 0 || (ex.len >= 4 && memcmp(ex.bytes, "amq.", 4) == 0))
        return true;
    for (size_t i = 0; i < st->nknown; i++)
        if (strlen(st->known_exchanges[i]) == ex.len && memcmp(st->known_exchanges[i], ex.bytes, ex.len) == 0)
            return true;
    return false;
}

void amqp_publish_forget_exchanges(struct amqp_wstate *st)
{
    for (size_t i = 0; i < st->nknown; i++)
        free(st->known_exchanges[i]);
    free(st->known_exchanges);
    st->known_exchanges = NULL;
    st->nknown = 0;
}

/* Publishing to a missing exchange closes the publishing channel, and
 * with it every unconfirmed message of every client. So the first publish
 * to an exchange checks it with a passive declare on the topology channel,
 * where a 404 costs only that request. Returns 0, or a code with err set. */
int amqp_publish_ensure_exchange(struct amqp_worker *wk, amqp_bytes_t ex, char *err, size_t errlen)
{
    struct amqp_wstate *st = wk->w;
    if (exchange_known(st, ex))
        return 0;
    amqp_exchange_declare(st->conn, CH_TOPO, ex, amqp_cstring_bytes("direct"), 1, 0, 0, 0, amqp_empty_table);
    int rc = amqp_worker_check_rpc(wk, CH_TOPO, err, errlen);
    if (rc)
        return rc;
    st->known_exchanges = xrealloc(st->known_exchanges, (st->nknown + 1) * sizeof(char *));
    char *name = xmalloc(ex.len + 1);
    memcpy(name, ex.bytes, ex.len);
    name[ex.len] = '\0';
    st->known_exchanges[st->nknown++] = name;
    return 0;
}

/* Sends one message on the confirm channel. Returns 0, a code after
 * resolving p (missing exchange), or FE_UNAVAILABLE (connection gone; p
 * stays pending and is republished after reconnecting). */
static int pub_send(struct amqp_worker *wk, struct pub *p)
{
    struct amqp_wstate *st = wk->w;
    char err[200];
    int rc = amqp_publish_ensure_exchange(wk, p->exchange, err, sizeof(err));
    if (rc == FE_UNAVAILABLE)
        return rc;
    if (rc) {
        amqp_publish_resolve(wk, p, FE_BACKEND_ERROR, err);
        return rc;
    }
    int s = amqp_basic_publish(st->conn, CH_PUB, p->exchange, p->routing_key, p->msg->mandatory, 0,
                               &p->msg->props, p->msg->body);
    if (s != AMQP_STATUS_OK) {
        amqp_worker_conn_lost(wk, amqp_error_string2(s));
        return FE_UNAVAILABLE;
    }
    p->tag = st->next_tag++;
    return 0;
}

static void group_done(struct amqp_worker *wk, struct pub_group *g)
{
    struct amqp_cmd *c = g->cmd;
    if (!c->batch) {
        struct pub *p = &g->pubs[0];
        if (p->code) {
            amqp_worker_reply_err(wk, c->seq, p->code, "%s", p->text);
        } else {
            struct cbuf b;
            cbuf_init(&b);
            cbuf_map(&b, 1);
            cbuf_str(&b, "confirmed");
            cbuf_bool(&b, true);
            amqp_worker_reply_ok(wk, c->seq, &b);
        }
    } else {
        struct cbuf b;
        cbuf_init(&b);
        cbuf_map(&b, 1);
        cbuf_str(&b, "results");
        cbuf_array(&b, c->nmsgs);
        for (size_t i = 0; i < c->nmsgs; i++) {
            struct pub *p = &g->pubs[i];
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
        amqp_worker_reply_ok(wk, c->seq, &b);
    }
    free(g->pubs);
    amqp_cmd_free(c);
    free(g);
}

void amqp_publish_resolve(struct amqp_worker *wk, struct pub *p, int code, const char *text)
{
    if (p->resolved)
        return;
    p->resolved = true;
    p->code = code;
    snprintf(p->text, sizeof(p->text), "%.190s", text ? text : "");
    dlist_remove(&p->node);
    if (--p->g->left == 0)
        group_done(wk, p->g);
}

/* basic.ack / basic.nack on the confirm channel. */
void amqp_publish_on_confirm(struct amqp_worker *wk, uint64_t tag, bool multiple, bool ack)
{
    struct amqp_wstate *st = wk->w;
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &st->pubs) {
        struct pub *p = container_of(pos, struct pub, node);
        if (p->tag == 0 || p->tag > tag)
            continue;
        if (!multiple && p->tag != tag)
            continue;
        if (!ack) {
            atomic_fetch_add(&wk->counters.nacks, 1);
            amqp_publish_resolve(wk, p, FE_NACKED, "the broker nacked the message");
        } else if (p->text[0] && p->code == FE_UNROUTABLE) {
            char text[sizeof(p->text)];
            memcpy(text, p->text, sizeof(text));
            amqp_publish_resolve(wk, p, FE_UNROUTABLE, text);
        } else {
            atomic_fetch_add(&wk->counters.confirms, 1);
            amqp_publish_resolve(wk, p, 0, NULL);
        }
    }
}

/* basic.return: a mandatory message no queue took. The return names no
 * delivery tag; it precedes the message's ack, so it belongs to the oldest
 * unconfirmed mandatory message with the same exchange, key and body. */
void amqp_publish_on_return(struct amqp_worker *wk, const amqp_basic_return_t *ret, const amqp_message_t *m)
{
    struct amqp_wstate *st = wk->w;
    atomic_fetch_add(&wk->counters.returns, 1);
    struct dlist *pos;
    dlist_foreach(pos, &st->pubs) {
        struct pub *p = container_of(pos, struct pub, node);
        if (p->tag == 0 || !p->msg->mandatory || p->code == FE_UNROUTABLE)
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

/* Sends whatever is pending and unsent, unless blocked or disconnected. */
void amqp_publish_flush(struct amqp_worker *wk)
{
    struct amqp_wstate *st = wk->w;
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &st->pubs) {
        struct pub *p = container_of(pos, struct pub, node);
        if (!st->conn || st->blocked)
            return;
        if (p->tag)
            continue;
        if (p->g->cmd->deadline <= amqp_now_ms()) {
            amqp_publish_resolve(wk, p, FE_UNCONFIRMED, "the deadline passed before the broker confirmed");
            continue;
        }
        if (pub_send(wk, p) == FE_UNAVAILABLE)
            return;
    }
}

/* ---- delayed publishing ---- */

void amqp_publish_forget_holding(struct amqp_wstate *st)
{
    for (size_t i = 0; i < st->nholding; i++)
        free(st->holding[i]);
    free(st->holding);
    st->holding = NULL;
    st->nholding = 0;
}

static bool holding_known(struct amqp_wstate *st, const char *name)
{
    for (size_t i = 0; i < st->nholding; i++)
        if (strcmp(st->holding[i], name) == 0)
            return true;
    return false;
}

/* The holding queue for (delay, exchange, key): messages wait there for
 * their TTL, then dead-letter to the target exchange with the original
 * routing key. It is durable, and expires after a minute unused. */
static int ensure_holding(struct amqp_worker *wk, const struct amqp_cmd *c, const struct amqp_out_msg *m,
                          char *name, size_t namelen, char *err, size_t errlen)
{
    struct amqp_wstate *st = wk->w;
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
    if (holding_known(st, name))
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
    amqp_queue_declare(st->conn, CH_TOPO, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
    int rc = amqp_worker_check_rpc(wk, CH_TOPO, err, errlen);
    if (rc)
        return rc;
    st->holding = xrealloc(st->holding, (st->nholding + 1) * sizeof(char *));
    st->holding[st->nholding++] = xstrdup(name);
    return 0;
}

void amqp_publish_run(struct amqp_worker *wk, struct amqp_cmd *c)
{
    struct amqp_wstate *st = wk->w;
    struct pub_group *g = xcalloc(1, sizeof(*g));
    g->cmd = c;
    g->pubs = xcalloc(c->nmsgs, sizeof(struct pub));
    g->left = c->nmsgs;
    for (size_t i = 0; i < c->nmsgs; i++) {
        struct pub *p = &g->pubs[i];
        p->g = g;
        p->msg = &c->msgs[i];
        p->exchange = p->msg->exchange;
        p->routing_key = p->msg->routing_key;
        dlist_push_tail(&st->pubs, &p->node);
    }
    if (c->kind == AC_PUBLISH_DELAYED && st->conn) {
        char name[300], err[200];
        struct pub *p = &g->pubs[0];
        int rc = ensure_holding(wk, c, p->msg, name, sizeof(name), err, sizeof(err));
        if (rc) {
            amqp_publish_resolve(wk, p, rc, err);
            return;
        }
        amqp_pool_alloc_bytes(&c->pool, strlen(name), &p->routing_key);
        memcpy(p->routing_key.bytes, name, strlen(name));
        p->exchange = amqp_empty_bytes;
    }
    amqp_publish_flush(wk);
}

/* A transaction on its own channel: every exchange is checked first, so an
 * invalid message fails the batch before anything is sent; otherwise all
 * messages are published and committed together. */
void amqp_publish_tx(struct amqp_worker *wk, struct amqp_cmd *c)
{
    struct amqp_wstate *st = wk->w;
    char err[200];
    for (size_t i = 0; i < c->nmsgs; i++) {
        int rc = amqp_publish_ensure_exchange(wk, c->msgs[i].exchange, err, sizeof(err));
        if (rc) {
            amqp_worker_reply_err(wk, c->seq, rc, "message %zu: %s; the transaction was rolled back", i, err);
            amqp_cmd_free(c);
            return;
        }
    }
    for (size_t i = 0; i < c->nmsgs; i++) {
        const struct amqp_out_msg *m = &c->msgs[i];
        int s = amqp_basic_publish(st->conn, CH_TX, m->exchange, m->routing_key, 0, 0, &m->props, m->body);
        if (s != AMQP_STATUS_OK) {
            amqp_worker_conn_lost(wk, amqp_error_string2(s));
            amqp_worker_reply_err(wk, c->seq, FE_UNAVAILABLE, "connection lost during the transaction; nothing was committed");
            amqp_cmd_free(c);
            return;
        }
    }
    amqp_tx_commit(st->conn, CH_TX);
    int rc = amqp_worker_check_rpc(wk, CH_TX, err, sizeof(err));
    if (rc) {
        amqp_worker_reply_err(wk, c->seq, rc, "commit failed, nothing was published: %s", err);
    } else {
        struct cbuf b;
        cbuf_init(&b);
        cbuf_map(&b, 2);
        cbuf_str(&b, "committed");
        cbuf_bool(&b, true);
        cbuf_str(&b, "count");
        cbuf_uint(&b, c->nmsgs);
        amqp_worker_reply_ok(wk, c->seq, &b);
    }
    amqp_cmd_free(c);
}

