/* amqp_backend.c: the AMQP ops on the loop: arguments are checked and
 * converted here (so bad input gets 'bad_request' even while the broker is
 * frozen), then handed to the worker thread (amqp_worker.c); its results
 * and deliveries come back through a uv_async and end requests or become
 * push frames.
 *
 * Subscriptions: a consume request's id is the subscription id the client
 * sees in push frames ("sub"); ferryd numbers consumers itself so that two
 * clients may use the same request id. */
#include <stdlib.h>
#include <string.h>

#include "amqp_backend.h"
#include "amqp_props.h"
#include "amqp_worker.h"
#include "backend.h"
#include "client.h"
#include "codec.h"
#include "errors.h"
#include "log.h"
#include "reqring.h"
#include "request.h"
#include "server.h"
#include "telemetry.h"
#include "trace_context.h"

/* How long a stopping worker may take to close the connection before its
 * socket is shut down under it (a frozen broker). */
#define STOP_GRACE_MS 2000

/* The largest message body accepted; RabbitMQ's own default limit is
 * 128 MiB, but a body must also fit in one ferry frame. */
#define MAX_BODY (8u * 1024 * 1024)

struct amqp_sub {
    struct dlist node;       /* in ab->subs */
    uint64_t consumer;       /* ferry-wide consumer number */
    struct client *client;   /* refers; removed before the client is freed */
    uint64_t sub;            /* the consume request's id */
    bool active;             /* the broker confirmed the subscription */
    char queue[256];         /* for the spans of its deliveries and acks */
};

struct amqp_backend {
    struct backend base;
    struct amqp_addr *addrs; /* owns */
    size_t naddrs;
    bool enabled;            /* an amqp_url is configured */
    struct amqp_worker wk;
    uv_async_t async;        /* the worker's events arrive here */
    uv_timer_t stop_timer;
    bool handles_open, stopping;
    enum { AS_CONNECTING, AS_UP, AS_DOWN } state;
    bool blocked;
    char last_error[256];
    struct reqring pending;  /* requests awaiting the worker */
    struct dlist subs;       /* struct amqp_sub */
    uint64_t next_consumer;
};

enum op_kind {
    OP_EXCHANGE_DECLARE = 1, OP_EXCHANGE_DELETE, OP_QUEUE_DECLARE, OP_QUEUE_BIND, OP_QUEUE_UNBIND,
    OP_QUEUE_PURGE, OP_QUEUE_DELETE, OP_PUBLISH, OP_PUBLISH_BATCH, OP_PUBLISH_DELAYED, OP_CONSUME,
    OP_ACK, OP_NACK, OP_REJECT, OP_CANCEL, OP_GET, OP_RPC,
};

static const struct {
    const char *name;
    enum op_kind kind;
} amqp_ops[] = {
    {"exchange.declare", OP_EXCHANGE_DECLARE}, {"exchange.delete", OP_EXCHANGE_DELETE},
    {"queue.declare", OP_QUEUE_DECLARE},       {"queue.bind", OP_QUEUE_BIND},
    {"queue.unbind", OP_QUEUE_UNBIND},         {"queue.purge", OP_QUEUE_PURGE},
    {"queue.delete", OP_QUEUE_DELETE},         {"publish", OP_PUBLISH},
    {"publish.batch", OP_PUBLISH_BATCH},       {"publish.delayed", OP_PUBLISH_DELAYED},
    {"consume", OP_CONSUME},                   {"ack", OP_ACK},
    {"nack", OP_NACK},                         {"reject", OP_REJECT},
    {"cancel", OP_CANCEL},                     {"get", OP_GET},
    {"rpc", OP_RPC},
};

static struct amqp_backend *ab_of(struct backend *b) { return container_of(b, struct amqp_backend, base); }

static bool is_publish(int kind);

static bool bytes_is(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

/* ---- argument parsing ---- */

/* A small reader over a CBOR args map that remembers the first problem. */
struct args {
    const cbor_item_t *map;
    const char *bad;
    amqp_pool_t *pool;
};

static const cbor_item_t *arg(struct args *a, const char *key) { return cbor_map_find(a->map, key); }

static bool arg_bool(struct args *a, const char *key, bool def)
{
    const cbor_item_t *v = arg(a, key);
    if (!v)
        return def;
    if (!item_is_bool(v)) {
        a->bad = a->bad ? a->bad : "flags must be booleans";
        return def;
    }
    return cbor_get_bool(v);
}

static amqp_bytes_t arg_text(struct args *a, const char *key, bool required, const char *def)
{
    const cbor_item_t *v = arg(a, key);
    amqp_bytes_t out = amqp_cstring_bytes(def ? def : "");
    if (!v) {
        if (required && !a->bad)
            a->bad = "a required name is missing";
        return out;
    }
    if (!cbor_isa_string(v) || !amqp_bytes_from_cbor(v, &out, a->pool)) {
        a->bad = a->bad ? a->bad : "names must be text";
        return amqp_cstring_bytes(def ? def : "");
    }
    if (out.len > 255)
        a->bad = a->bad ? a->bad : "names are at most 255 bytes";
    return out;
}

/* Checks the queue arguments whose types RabbitMQ insists on, so a wrong
 * type is a clear 'bad_request' rather than a broker channel error. */
static const char *check_queue_args(const cbor_item_t *m)
{
    static const char *const ints[] = {"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                                       "x-max-priority", "x-delivery-limit"};
    static const char *const texts[] = {"x-dead-letter-exchange", "x-dead-letter-routing-key", "x-overflow",
                                        "x-queue-mode", "x-single-active-consumer"};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        const cbor_item_t *v = cbor_map_find(m, ints[i]);
        if (v && !cbor_isa_uint(v))
            return "x-message-ttl, x-expires, x-max-length(-bytes), x-max-priority and x-delivery-limit "
                   "must be non-negative integers";
    }
    const cbor_item_t *p = cbor_map_find(m, "x-max-priority");
    if (p && (cbor_get_int(p) < 1 || cbor_get_int(p) > 255))
        return "x-max-priority must be 1..255";
    for (size_t i = 0; i < 4; i++) {
        const cbor_item_t *v = cbor_map_find(m, texts[i]);
        if (v && !cbor_isa_string(v))
            return "x-dead-letter-exchange, x-dead-letter-routing-key, x-overflow and x-queue-mode must be text";
    }
    const cbor_item_t *t = cbor_map_find(m, "x-queue-type");
    if (t) {
        if (!cbor_isa_string(t))
            return "x-queue-type must be text";
        size_t n = cbor_string_length(t);
        const char *s = (const char *)cbor_string_handle(t);
        if (!((n == 7 && !memcmp(s, "classic", 7)) || (n == 6 && !memcmp(s, "quorum", 6)) ||
              (n == 6 && !memcmp(s, "stream", 6))))
            return "x-queue-type must be classic, quorum or stream";
    }
    return NULL;
}

static void arg_table(struct args *a, const char *key, amqp_table_t *out, bool queue_args)
{
    const cbor_item_t *v = arg(a, key);
    *out = amqp_empty_table;
    if (!v || a->bad)
        return;
    const char *bad = queue_args && cbor_isa_map(v) ? check_queue_args(v) : NULL;
    if (!bad)
        bad = amqp_table_from_cbor(v, out, a->pool);
    if (bad)
        a->bad = bad;
}

static bool is_exchange_type(amqp_bytes_t t)
{
    static const char *const types[] = {"direct", "fanout", "topic", "headers"};
    for (size_t i = 0; i < 4; i++)
        if (t.len == strlen(types[i]) && memcmp(t.bytes, types[i], t.len) == 0)
            return true;
    return false;
}

static struct amqp_sub *find_sub(struct amqp_backend *ab, const struct client *c, uint64_t sub)
{
    struct dlist *p;
    dlist_foreach(p, &ab->subs) {
        struct amqp_sub *s = container_of(p, struct amqp_sub, node);
        if (s->client == c && s->sub == sub && s->active)
            return s;
    }
    return NULL;
}

static struct amqp_sub *find_consumer(struct amqp_backend *ab, uint64_t consumer)
{
    struct dlist *p;
    dlist_foreach(p, &ab->subs) {
        struct amqp_sub *s = container_of(p, struct amqp_sub, node);
        if (s->consumer == consumer)
            return s;
    }
    return NULL;
}

static const char *parse_messages(struct amqp_cmd *c, const cbor_item_t *list)
{
    if (!list || !cbor_isa_array(list) || cbor_array_size(list) == 0)
        return "messages must be a non-empty array of publish args";
    size_t n = cbor_array_size(list);
    if (n > 10000)
        return "at most 10000 messages in one batch";
    c->msgs = amqp_pool_alloc(&c->pool, n * sizeof(struct amqp_out_msg));
    c->nmsgs = n;
    for (size_t i = 0; i < n; i++) {
        const char *bad = amqp_msg_from_cbor(cbor_array_handle((cbor_item_t *)list)[i], &c->msgs[i], &c->pool,
                                             MAX_BODY, "publish.batch message");
        if (bad)
            return bad;
    }
    return NULL;
}

/* The keys each op's args map may hold (publish, rpc and publish.delayed:
 * the message keys, which amqp_msg_from_cbor checks). Any other key is
 * 'bad_request' naming it: a typo such as "durabel" would otherwise
 * declare a transient queue without a word. */
static const char *const op_keys[][8] = {
    [OP_EXCHANGE_DECLARE] = {"name", "type", "durable", "auto_delete", "internal", "passive", "arguments"},
    [OP_EXCHANGE_DELETE] = {"name", "if_unused"},
    [OP_QUEUE_DECLARE] = {"name", "durable", "exclusive", "auto_delete", "passive", "arguments"},
    [OP_QUEUE_BIND] = {"queue", "exchange", "routing_key", "arguments"},
    [OP_QUEUE_UNBIND] = {"queue", "exchange", "routing_key", "arguments"},
    [OP_QUEUE_PURGE] = {"queue"},
    [OP_QUEUE_DELETE] = {"queue", "if_unused", "if_empty"},
    [OP_PUBLISH_BATCH] = {"messages", "transactional"},
    [OP_CONSUME] = {"queue", "prefetch", "no_ack", "exclusive"},
    [OP_ACK] = {"sub", "delivery_tag", "multiple"},
    [OP_NACK] = {"sub", "delivery_tag", "multiple", "requeue"},
    [OP_REJECT] = {"sub", "delivery_tag", "requeue"},
    [OP_CANCEL] = {"sub"},
    [OP_GET] = {"queue"},
};

/* Returns NULL when every key of map is one op takes, or what is wrong
 * (in pool). */
static const char *check_keys(enum op_kind op, const char *op_name, const cbor_item_t *map, amqp_pool_t *pool)
{
    if (op == OP_PUBLISH || op == OP_RPC || op == OP_PUBLISH_DELAYED)
        return NULL;
    const struct cbor_pair *p = cbor_map_handle(map);
    for (size_t i = 0; i < cbor_map_size(map); i++) {
        if (!cbor_isa_string(p[i].key) || !cbor_string_is_definite(p[i].key))
            return "args keys must be text";
        size_t n = cbor_string_length(p[i].key), k;
        for (k = 0; k < 8 && op_keys[op][k]; k++)
            if (strlen(op_keys[op][k]) == n && memcmp(op_keys[op][k], cbor_string_handle(p[i].key), n) == 0)
                break;
        if (k == 8 || !op_keys[op][k])
            return mq_unknown_key(p[i].key, op_name, pool);
    }
    return NULL;
}

/* Builds the worker command for r from its args. Returns NULL and sets
 * *code and *why (copied into msg, since the command that may hold the
 * text is freed) when the request is bad. */
static struct amqp_cmd *build(struct amqp_backend *ab, struct request *r, const cbor_item_t *map, int *code,
                              const char **why, char *msg, size_t msglen)
{
    static const enum amqp_cmd_kind kinds[] = {
        [OP_EXCHANGE_DECLARE] = AC_EXCHANGE_DECLARE, [OP_EXCHANGE_DELETE] = AC_EXCHANGE_DELETE,
        [OP_QUEUE_DECLARE] = AC_QUEUE_DECLARE,       [OP_QUEUE_BIND] = AC_QUEUE_BIND,
        [OP_QUEUE_UNBIND] = AC_QUEUE_UNBIND,         [OP_QUEUE_PURGE] = AC_QUEUE_PURGE,
        [OP_QUEUE_DELETE] = AC_QUEUE_DELETE,         [OP_PUBLISH] = AC_PUBLISH,
        [OP_PUBLISH_BATCH] = AC_PUBLISH,             [OP_PUBLISH_DELAYED] = AC_PUBLISH_DELAYED,
        [OP_CONSUME] = AC_CONSUME,                   [OP_ACK] = AC_ACK,
        [OP_NACK] = AC_NACK,                         [OP_REJECT] = AC_REJECT,
        [OP_CANCEL] = AC_CANCEL,                     [OP_GET] = AC_GET,
        [OP_RPC] = AC_RPC,
    };
    enum op_kind op = (enum op_kind)r->op->kind;
    uint64_t deadline = amqp_now_ms() + (r->deadline.at - uv_now(ab->base.server->loop));
    struct amqp_cmd *c = amqp_cmd_new(kinds[op], 0, deadline);
    struct args a = {.map = map, .bad = NULL, .pool = &c->pool};
    *code = FE_BAD_REQUEST;
    a.bad = check_keys(op, r->op->name, map, &c->pool);
    if (a.bad)
        goto done;

    switch (op) {
    case OP_EXCHANGE_DECLARE:
        c->name = arg_text(&a, "name", true, NULL);
        c->type = arg_text(&a, "type", false, "direct");
        if (!a.bad && !is_exchange_type(c->type))
            a.bad = "unknown exchange type: use direct, fanout, topic or headers";
        c->passive = arg_bool(&a, "passive", false);
        c->durable = arg_bool(&a, "durable", false);
        c->auto_delete = arg_bool(&a, "auto_delete", false);
        c->internal = arg_bool(&a, "internal", false);
        arg_table(&a, "arguments", &c->arguments, false);
        if (!a.bad && c->name.len == 0)
            a.bad = "the default exchange cannot be declared";
        break;
    case OP_EXCHANGE_DELETE:
        c->name = arg_text(&a, "name", true, NULL);
        c->if_unused = arg_bool(&a, "if_unused", false);
        break;
    case OP_QUEUE_DECLARE:
        c->name = arg_text(&a, "name", false, "");
        c->passive = arg_bool(&a, "passive", false);
        c->durable = arg_bool(&a, "durable", false);
        c->exclusive = arg_bool(&a, "exclusive", false);
        c->auto_delete = arg_bool(&a, "auto_delete", false);
        arg_table(&a, "arguments", &c->arguments, true);
        break;
    case OP_QUEUE_BIND:
    case OP_QUEUE_UNBIND:
        c->name = arg_text(&a, "queue", true, NULL);
        c->exchange = arg_text(&a, "exchange", true, NULL);
        c->routing_key = arg_text(&a, "routing_key", false, "");
        arg_table(&a, "arguments", &c->arguments, false);
        break;
    case OP_QUEUE_PURGE:
        c->name = arg_text(&a, "queue", true, NULL);
        break;
    case OP_QUEUE_DELETE:
        c->name = arg_text(&a, "queue", true, NULL);
        c->if_unused = arg_bool(&a, "if_unused", false);
        c->if_empty = arg_bool(&a, "if_empty", false);
        break;
    case OP_PUBLISH:
    case OP_RPC:
        c->msgs = amqp_pool_alloc(&c->pool, sizeof(struct amqp_out_msg));
        c->nmsgs = 1;
        a.bad = amqp_msg_from_cbor(map, &c->msgs[0], &c->pool, MAX_BODY, r->op->name);
        break;
    case OP_PUBLISH_DELAYED: {
        /* The same args as publish, plus delay_ms, which is not a message
         * property: take it out of a copy of the map. */
        const cbor_item_t *d = arg(&a, "delay_ms");
        if (!d || !cbor_isa_uint(d) || cbor_get_int(d) < 1 || cbor_get_int(d) > 86400000u * 7) {
            a.bad = "delay_ms must be a positive number of milliseconds (at most a week)";
            break;
        }
        c->delay_ms = cbor_get_int(d);
        cbor_item_t *copy = cbor_new_definite_map(cbor_map_size(map));
        struct cbor_pair *p = cbor_map_handle(map);
        for (size_t i = 0; i < cbor_map_size(map); i++)
            if (p[i].value != d)
                cbor_map_add(copy, p[i]);
        c->msgs = amqp_pool_alloc(&c->pool, sizeof(struct amqp_out_msg));
        c->nmsgs = 1;
        a.bad = amqp_msg_from_cbor(copy, &c->msgs[0], &c->pool, MAX_BODY, r->op->name);
        cbor_decref(&copy);
        if (!a.bad && c->msgs[0].mandatory)
            a.bad = "a delayed message cannot be mandatory";
        break;
    }
    case OP_PUBLISH_BATCH:
        c->batch = true;
        c->tx = arg_bool(&a, "transactional", false);
        if (!a.bad)
            a.bad = parse_messages(c, arg(&a, "messages"));
        for (size_t i = 0; !a.bad && c->tx && i < c->nmsgs; i++)
            if (c->msgs[i].mandatory)
                a.bad = "mandatory messages cannot be published in a transaction: the broker commits a "
                        "transaction whose messages reached no queue, so all-or-nothing could not hold";
        break;
    case OP_CONSUME: {
        c->name = arg_text(&a, "queue", true, NULL);
        /* 0 would mean "no limit" to the broker: a consumer that does not
         * read would then take the whole queue into its output buffer. */
        const cbor_item_t *pf = arg(&a, "prefetch");
        if (pf && (!cbor_isa_uint(pf) || cbor_get_int(pf) < 1 || cbor_get_int(pf) > 65535))
            a.bad = a.bad ? a.bad : "prefetch must be 1..65535";
        c->prefetch = pf && !a.bad ? (uint16_t)cbor_get_int(pf) : (uint16_t)ab->base.server->cfg.amqp_prefetch;
        c->no_ack = arg_bool(&a, "no_ack", false);
        c->exclusive = arg_bool(&a, "exclusive", false);
        c->client_id = r->client->id;
        break;
    }
    case OP_ACK:
    case OP_NACK:
    case OP_REJECT:
    case OP_CANCEL: {
        const cbor_item_t *sv = arg(&a, "sub");
        if (!sv || !cbor_isa_uint(sv)) {
            a.bad = "sub (the id of the consume request) is required";
            break;
        }
        struct amqp_sub *s = find_sub(ab, r->client, cbor_get_int(sv));
        if (!s) {
            a.bad = "no such subscription on this connection";
            break;
        }
        c->consumer = s->consumer;
        if (op == OP_CANCEL)
            break;
        const cbor_item_t *t = arg(&a, "delivery_tag");
        if (!t || !cbor_isa_uint(t)) {
            a.bad = "delivery_tag is required";
            break;
        }
        c->delivery_tag = cbor_get_int(t);
        c->multiple = op != OP_REJECT && arg_bool(&a, "multiple", false);
        c->requeue = arg_bool(&a, "requeue", op == OP_NACK);
        break;
    }
    case OP_GET:
        c->name = arg_text(&a, "queue", true, NULL);
        break;
    }
done:
    if (a.bad) {
        snprintf(msg, msglen, "%s", a.bad);
        *why = msg;
        *code = strstr(a.bad, "broker's limit") ? FE_TOO_LARGE : FE_BAD_REQUEST;
        amqp_cmd_free(c);
        return NULL;
    }
    return c;
}

/* ---- telemetry ---- */

static void common_attrs(struct amqp_backend *ab, struct span *sp, const char *op_type, const char *op_name,
                         const char *dest)
{
    span_attr_cstr(sp, "messaging.system", "rabbitmq");
    span_attr_cstr(sp, "messaging.operation.type", op_type);
    span_attr_cstr(sp, "messaging.operation.name", op_name);
    if (dest)
        span_attr_cstr(sp, "messaging.destination.name", dest);
    if (ab->naddrs) {
        span_attr_cstr(sp, "server.address", ab->addrs[0].host);
        span_attr_int(sp, "server.port", ab->addrs[0].port);
    }
}

static void bytes_attr(struct span *sp, const char *key, amqp_bytes_t b)
{
    if (b.len)
        span_attr_str(sp, key, b.bytes, b.len);
}

/* Puts traceparent (and tracestate) into a message's headers, so that a
 * consumer continues the trace; ferryd's own consumers read them back. */
static void inject(amqp_pool_t *pool, struct amqp_out_msg *m, const char *tp, const char *ts, size_t ts_len)
{
    amqp_table_t *h = &m->props.headers;
    if (!(m->props._flags & AMQP_BASIC_HEADERS_FLAG))
        *h = amqp_empty_table;
    int n = h->num_entries;
    amqp_table_entry_t *e = amqp_pool_alloc(pool, (size_t)(n + 2) * sizeof(*e));
    int k = 0;
    for (int i = 0; i < n; i++) /* a client's own trace headers are replaced */
        if (!bytes_is(h->entries[i].key, "traceparent") && !bytes_is(h->entries[i].key, "tracestate"))
            e[k++] = h->entries[i];
    e[k].key = amqp_cstring_bytes("traceparent");
    e[k].value.kind = AMQP_FIELD_KIND_UTF8;
    amqp_pool_alloc_bytes(pool, strlen(tp), &e[k].value.value.bytes);
    memcpy(e[k].value.value.bytes.bytes, tp, strlen(tp));
    k++;
    if (ts && ts_len) {
        e[k].key = amqp_cstring_bytes("tracestate");
        e[k].value.kind = AMQP_FIELD_KIND_UTF8;
        amqp_pool_alloc_bytes(pool, ts_len, &e[k].value.value.bytes);
        memcpy(e[k].value.value.bytes.bytes, ts, ts_len);
        k++;
    }
    h->entries = e;
    h->num_entries = k;
    m->props._flags |= AMQP_BASIC_HEADERS_FLAG;
}

/* Names the request's span per the messaging semantic conventions, and
 * for publishes carries the trace into the messages. */
static void annotate(struct amqp_backend *ab, struct request *r, struct amqp_cmd *c)
{
    struct span *sp = reqtrace_span(&r->trace);
    enum op_kind op = (enum op_kind)r->op->kind;
    if (is_publish(op) || op == OP_RPC) {
        /* Without a span of ours (not sampled), pass the client's context
         * on unchanged, so the trace stays whole downstream. */
        char tp[TRACEPARENT_LEN + 1];
        struct trace_ctx tc;
        const char *ts = r->v.tracestate;
        size_t ts_len = r->v.tracestate_len;
        if (sp)
            span_traceparent(sp, tp);
        else if (r->v.traceparent && trace_ctx_parse(r->v.traceparent, r->v.traceparent_len, &tc))
            trace_ctx_format(&tc, tp);
        else
            tp[0] = '\0';
        if (sp && !sp->trace_state_len)
            ts = NULL, ts_len = 0;
        for (size_t i = 0; tp[0] && i < c->nmsgs; i++)
            inject(&c->pool, &c->msgs[i], tp, ts, ts_len);
    }
    if (!sp)
        return;
    char dest[300];
    switch (op) {
    case OP_PUBLISH:
    case OP_PUBLISH_BATCH:
    case OP_PUBLISH_DELAYED:
    case OP_RPC: {
        const struct amqp_out_msg *m = &c->msgs[0];
        snprintf(dest, sizeof(dest), "%.*s", (int)m->exchange.len, (char *)m->exchange.bytes);
        if (!dest[0])
            snprintf(dest, sizeof(dest), "amq.default");
        sp->kind = op == OP_RPC ? SK_CLIENT : SK_PRODUCER;
        span_set_name(sp, "%s %s", op == OP_RPC ? "rpc" : "publish", dest);
        common_attrs(ab, sp, "send", "publish", dest);
        bytes_attr(sp, "messaging.rabbitmq.destination.routing_key", m->routing_key);
        if (m->props._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
            bytes_attr(sp, "messaging.message.id", m->props.message_id);
        if (m->props._flags & AMQP_BASIC_CORRELATION_ID_FLAG)
            bytes_attr(sp, "messaging.message.conversation_id", m->props.correlation_id);
        span_attr_int(sp, "messaging.message.body.size", (int64_t)m->body.len);
        if (c->nmsgs > 1)
            span_attr_int(sp, "messaging.batch.message_count", (int64_t)c->nmsgs);
        break;
    }
    case OP_ACK:
    case OP_NACK:
    case OP_REJECT: {
        const char *name = op == OP_ACK ? "ack" : op == OP_NACK ? "nack" : "reject";
        struct amqp_sub *s = find_consumer(ab, c->consumer);
        sp->kind = SK_CLIENT;
        span_set_name(sp, "%s %s", name, s ? s->queue : "");
        common_attrs(ab, sp, "settle", name, s ? s->queue : NULL);
        span_attr_int(sp, "messaging.rabbitmq.message.delivery_tag", (int64_t)(c->delivery_tag & AMQP_TAG_MASK));
        break;
    }
    case OP_GET:
        snprintf(dest, sizeof(dest), "%.*s", (int)c->name.len, (char *)c->name.bytes);
        sp->kind = SK_CLIENT;
        span_set_name(sp, "receive %s", dest);
        common_attrs(ab, sp, "receive", "receive", dest);
        break;
    default:
        snprintf(dest, sizeof(dest), "%.*s", (int)c->name.len, (char *)c->name.bytes);
        sp->kind = SK_CLIENT;
        span_set_name(sp, "%s %s", r->op->name, dest);
        span_attr_cstr(sp, "messaging.system", "rabbitmq");
        span_attr_cstr(sp, "messaging.operation.name", r->op->name);
        break;
    }
}

/* One CONSUMER span per delivery pushed to a client: it continues the
 * publisher's trace (from the message's headers), and its traceparent
 * goes to the client in the push frame. */
static struct span *delivery_span(struct amqp_backend *ab, const struct amqp_sub *s, const struct amqp_event *e,
                                  char *tp_out)
{
    struct telemetry *t = ab->base.server->tel;
    struct span *sp = telemetry_span_start(t, e->traceparent, strlen(e->traceparent), e->tracestate,
                                           strlen(e->tracestate), SK_CONSUMER, "process", uv_hrtime());
    struct trace_ctx tc;
    if (sp) {
        span_set_name(sp, "process %s", s->queue);
        common_attrs(ab, sp, "process", "process", s->queue);
        if (e->routing_key[0])
            span_attr_cstr(sp, "messaging.rabbitmq.destination.routing_key", e->routing_key);
        span_attr_int(sp, "messaging.rabbitmq.message.delivery_tag", (int64_t)(e->delivery_tag & AMQP_TAG_MASK));
        if (e->message_id[0])
            span_attr_cstr(sp, "messaging.message.id", e->message_id);
        span_attr_int(sp, "messaging.message.body.size", (int64_t)e->body_size);
        span_traceparent(sp, tp_out);
    } else if (trace_ctx_parse(e->traceparent, strlen(e->traceparent), &tc)) {
        trace_ctx_format(&tc, tp_out);
    } else {
        tp_out[0] = '\0';
    }
    return sp;
}

/* ---- the backend interface ---- */

static void ab_submit(struct backend *b, struct request *r)
{
    struct amqp_backend *ab = ab_of(b);
    enum op_kind op = (enum op_kind)r->op->kind;
    if (!ab->enabled) {
        request_fail(r, FE_UNAVAILABLE, "AMQP is not configured (amqp_url is empty)");
        return;
    }
    cbor_item_t *map = NULL;
    if (r->v.args) {
        struct cbor_load_result lr;
        map = cbor_load(r->v.args, r->v.args_len, &lr);
    }
    if (!map || !cbor_isa_map(map)) {
        if (map)
            cbor_decref(&map);
        request_fail(r, FE_BAD_REQUEST, "args must be a map");
        return;
    }
    int code = 0;
    const char *why = NULL;
    char msg[256];
    struct amqp_cmd *c = build(ab, r, map, &code, &why, msg, sizeof(msg));
    cbor_decref(&map);
    if (!c) {
        request_fail(r, code, why);
        return;
    }
    if (op == OP_CANCEL) {
        /* Forget the subscription now: pushes still in flight for it are
         * dropped rather than sent after the client was told it ended. */
        struct amqp_sub *s = find_consumer(ab, c->consumer);
        if (s) {
            dlist_remove(&s->node);
            free(s);
        }
    }
    if (ab->state == AS_DOWN && op != OP_CANCEL) {
        amqp_cmd_free(c);
        char msg[320];
        snprintf(msg, sizeof(msg), "the broker is unreachable (%s)", ab->last_error);
        request_fail(r, FE_UNAVAILABLE, msg);
        return;
    }
    if (reqring_size(&ab->pending) >= (size_t)b->server->cfg.amqp_max_pending) {
        amqp_cmd_free(c);
        request_fail(r, FE_OVERLOADED, NULL);
        return;
    }
    if (op == OP_CONSUME) {
        struct amqp_sub *s = xcalloc(1, sizeof(*s));
        s->consumer = c->consumer = ++ab->next_consumer;
        s->client = r->client;
        s->sub = r->id;
        snprintf(s->queue, sizeof(s->queue), "%.*s", (int)c->name.len, (char *)c->name.bytes);
        dlist_push_tail(&ab->subs, &s->node);
        r->bdata = s;
    }
    annotate(ab, r, c);
    c->seq = reqring_push(&ab->pending, r) + 1; /* 0 means "no answer due" */
    r->bseq = c->seq;
    amqp_worker_post(&ab->wk, c);
}

static void drop_sub(struct amqp_backend *ab, struct amqp_sub *s, bool tell_worker)
{
    if (tell_worker) {
        struct amqp_cmd *c = amqp_cmd_new(AC_CANCEL, 0, UINT64_MAX);
        c->consumer = s->consumer;
        amqp_worker_post(&ab->wk, c);
    }
    dlist_remove(&s->node);
    free(s);
}

static void ab_cancel(struct backend *b, struct request *r)
{
    struct amqp_backend *ab = ab_of(b);
    reqring_cancel(&ab->pending, r->bseq - 1, r);
    /* A consume that timed out may still succeed at the broker; cancel it
     * there too, since nobody will read its deliveries. */
    if (r->op->kind == OP_CONSUME && r->bdata)
        drop_sub(ab, r->bdata, true);
}

static bool is_publish(int kind)
{
    return kind == OP_PUBLISH || kind == OP_PUBLISH_BATCH || kind == OP_PUBLISH_DELAYED;
}

static int ab_timeout_code(struct backend *b, struct request *r)
{
    struct amqp_backend *ab = ab_of(b);
    if (!is_publish(r->op->kind))
        return FE_TIMEOUT;
    if (ab->blocked)
        return FE_BLOCKED;
    return ab->state == AS_UP ? FE_TIMEOUT : FE_UNCONFIRMED;
}

static void ab_client_closed(struct backend *b, struct client *c)
{
    struct amqp_backend *ab = ab_of(b);
    bool any = false;
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &ab->subs) {
        struct amqp_sub *s = container_of(pos, struct amqp_sub, node);
        if (s->client == c) {
            dlist_remove(&s->node);
            free(s);
            any = true;
        }
    }
    if (any) {
        struct amqp_cmd *cmd = amqp_cmd_new(AC_CLIENT_GONE, 0, UINT64_MAX);
        cmd->client_id = c->id;
        amqp_worker_post(&ab->wk, cmd);
    }
}

/* ---- events from the worker ---- */

static void on_stop_timer(uv_timer_t *t)
{
    struct amqp_backend *ab = container_of(t, struct amqp_backend, stop_timer);
    log_warn("amqp: the worker is slow to stop; shutting its socket down");
    amqp_worker_kick_socket(&ab->wk);
}

static void handle_event(struct amqp_backend *ab, struct amqp_event *e)
{
    switch (e->kind) {
    case AE_RESULT: {
        struct request *r = reqring_take(&ab->pending, e->seq - 1);
        if (!r)
            break; /* it timed out, or its client left */
        if (r->op->kind == OP_CONSUME && r->bdata) {
            struct amqp_sub *s = r->bdata;
            if (e->code)
                drop_sub(ab, s, false);
            else
                s->active = true;
        }
        if (e->code) {
            request_fail(r, e->code, e->message);
        } else if (r->op->kind == OP_CONSUME) {
            /* Add the subscription id to the worker's {"consumer_tag"}. */
            size_t at;
            struct cbuf *out = request_result_begin(r, &at);
            cbuf_map(out, 2);
            cbuf_str(out, "sub");
            cbuf_uint(out, r->id);
            cbuf_put(out, e->data.data + 1, e->data.len - 1);
            request_result_end(r, at);
        } else {
            request_result(r, e->data.data, e->data.len);
        }
        break;
    }
    case AE_PUSH: {
        struct amqp_sub *s = find_consumer(ab, e->consumer);
        if (!s)
            break;
        struct client *c = s->client;
        bool ended = strcmp(e->message, "cancelled") == 0;
        char tp[TRACEPARENT_LEN + 1] = "";
        struct span *sp = ended ? NULL : delivery_span(ab, s, e, tp);
        client_push(c, s->sub, e->message, e->data.data, e->data.len, tp[0] ? tp : NULL);
        if (sp)
            telemetry_span_end(ab->base.server->tel, sp, uv_hrtime(), NULL, NULL);
        if (ended)
            drop_sub(ab, s, false);
        break;
    }
    case AE_STATE:
        ab->state = e->up ? AS_UP : AS_DOWN;
        ab->blocked = e->blocked;
        snprintf(ab->last_error, sizeof(ab->last_error), "%s", e->message);
        server_backend_changed(ab->base.server);
        break;
    case AE_STOPPED:
        amqp_worker_join(&ab->wk);
        uv_close((uv_handle_t *)&ab->async, NULL);
        uv_close((uv_handle_t *)&ab->stop_timer, NULL);
        ab->handles_open = false;
        break;
    }
}

static void on_async(uv_async_t *h)
{
    struct amqp_backend *ab = container_of(h, struct amqp_backend, async);
    struct dlist batch;
    dlist_init(&batch);
    pthread_mutex_lock(&ab->wk.mu);
    while (!dlist_empty(&ab->wk.events)) {
        struct dlist *n = ab->wk.events.next;
        dlist_remove(n);
        dlist_push_tail(&batch, n);
    }
    pthread_mutex_unlock(&ab->wk.mu);
    struct dlist done;
    dlist_init(&done);
    bool stopped = false;
    while (!dlist_empty(&batch)) {
        struct amqp_event *e = container_of(batch.next, struct amqp_event, node);
        dlist_remove(&e->node);
        stopped = e->kind == AE_STOPPED;
        if (stopped) {
            /* Whatever is done goes back before the worker is joined. */
            amqp_worker_recycle(&ab->wk, &done);
            handle_event(ab, e);
            amqp_event_free(e);
            break; /* the worker is joined and its queues freed */
        }
        handle_event(ab, e);
        dlist_push_tail(&done, &e->node);
    }
    if (!stopped)
        amqp_worker_recycle(&ab->wk, &done);
    while (!dlist_empty(&batch)) {
        struct amqp_event *e = container_of(batch.next, struct amqp_event, node);
        dlist_remove(&e->node);
        amqp_event_free(e);
    }
}

static int ab_start(struct backend *b)
{
    struct amqp_backend *ab = ab_of(b);
    if (!ab->enabled)
        return 0;
    struct server *s = b->server;
    uv_async_init(s->loop, &ab->async, on_async);
    uv_timer_init(s->loop, &ab->stop_timer);
    ab->handles_open = true;
    ab->wk.async = &ab->async;
    ab->wk.addrs = ab->addrs;
    ab->wk.naddrs = ab->naddrs;
    ab->wk.connect_timeout_ms = (uint64_t)s->cfg.amqp_connect_timeout_ms;
    ab->wk.backoff_min_ms = (uint64_t)s->cfg.amqp_backoff_min_ms;
    ab->wk.backoff_max_ms = (uint64_t)s->cfg.amqp_backoff_max_ms;
    if (amqp_worker_start(&ab->wk) != 0) {
        log_error("amqp: cannot start the worker thread");
        return FE_INTERNAL;
    }
    log_info("amqp backend: %s%s", ab->addrs[0].redacted, ab->naddrs > 1 ? " (and fallbacks)" : "");
    return 0;
}

static void ab_stats(struct backend *b, struct cbuf *o)
{
    struct amqp_backend *ab = ab_of(b);
    struct amqp_counters *k = &ab->wk.counters;
    size_t nsubs = 0;
    struct dlist *p;
    dlist_foreach(p, &ab->subs)
        nsubs++;
    cbuf_map(o, 14);
    cbuf_str(o, "url");
    cbuf_str(o, ab->naddrs ? ab->addrs[0].redacted : "");
    cbuf_str(o, "state");
    cbuf_str(o, !ab->enabled ? "disabled" : ab->state == AS_UP ? "up" : ab->state == AS_DOWN ? "down" : "connecting");
    cbuf_str(o, "blocked");
    cbuf_bool(o, ab->blocked);
    cbuf_str(o, "last_error");
    cbuf_str(o, ab->last_error);
    cbuf_str(o, "pending");
    cbuf_uint(o, reqring_size(&ab->pending));
    cbuf_str(o, "subscriptions");
    cbuf_uint(o, nsubs);
#define K(name)                    \
    cbuf_str(o, #name);            \
    cbuf_uint(o, atomic_load(&k->name));
    K(connects) K(drops) K(confirms) K(nacks) K(returns) K(republished) K(deliveries)
#undef K
    cbuf_str(o, "max_body");
    cbuf_uint(o, MAX_BODY);
}

static enum backend_health ab_health(struct backend *b, char *why, size_t len)
{
    struct amqp_backend *ab = ab_of(b);
    if (!ab->enabled)
        return BH_OFF;
    snprintf(why, len, "%s", ab->state == AS_UP ? "" : ab->last_error);
    return ab->state == AS_UP ? BH_UP : ab->state == AS_DOWN ? BH_DOWN : BH_CONNECTING;
}

static void ab_metrics(struct backend *b, const struct metric_emit *e)
{
    struct amqp_backend *ab = ab_of(b);
    if (!ab->enabled)
        return;
    if (e->connections)
        e->connections(e->ctx, "amqp", ab->state == AS_UP ? "up" : ab->state == AS_DOWN ? "down" : "connecting", 1);
    if (e->counter) {
        struct amqp_counters *k = &ab->wk.counters;
        uint64_t connects = atomic_load(&k->connects);
        e->counter(e->ctx, "amqp", "ferry.backend.reconnects", connects > 1 ? connects - 1 : 0);
        e->counter(e->ctx, "amqp", "ferry.amqp.confirms", atomic_load(&k->confirms));
        e->counter(e->ctx, "amqp", "ferry.amqp.nacks", atomic_load(&k->nacks));
        e->counter(e->ctx, "amqp", "ferry.amqp.returns", atomic_load(&k->returns));
    }
}

static void ab_reload(struct backend *b, const struct config *cfg)
{
    (void)b;
    (void)cfg; /* amqp_max_pending and amqp_prefetch are read where used */
}

static void ab_close(struct backend *b)
{
    struct amqp_backend *ab = ab_of(b);
    if (!ab->handles_open || ab->stopping)
        return;
    ab->stopping = true;
    amqp_worker_stop(&ab->wk);
    uv_timer_start(&ab->stop_timer, on_stop_timer, STOP_GRACE_MS, 0);
    uv_unref((uv_handle_t *)&ab->stop_timer);
}

static void ab_destroy(struct backend *b)
{
    struct amqp_backend *ab = ab_of(b);
    amqp_worker_join(&ab->wk);
    while (!dlist_empty(&ab->subs))
        drop_sub(ab, container_of(ab->subs.next, struct amqp_sub, node), false);
    for (size_t i = 0; i < ab->naddrs; i++)
        amqp_addr_free(&ab->addrs[i]);
    free(ab->addrs);
    reqring_free(&ab->pending);
    free(ab);
}

static const struct backend_ops amqp_ops_vt = {
    .name = "amqp",
    .start = ab_start,
    .submit = ab_submit,
    .cancel = ab_cancel,
    .timeout_code = ab_timeout_code,
    .client_closed = ab_client_closed,
    .health = ab_health,
    .stats = ab_stats,
    .metrics = ab_metrics,
    .reload = ab_reload,
    .close = ab_close,
    .destroy = ab_destroy,
};

struct backend *amqp_backend_new(struct server *s, char *err, size_t errlen)
{
    struct amqp_backend *ab = xcalloc(1, sizeof(*ab));
    ab->base.ops = &amqp_ops_vt;
    ab->base.server = s;
    dlist_init(&ab->subs);
    reqring_init(&ab->pending);
    const char *spec = s->cfg.amqp_url;
    char *copy = xstrdup(spec);
    for (char *save = NULL, *u = strtok_r(copy, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        while (*u == ' ')
            u++;
        if (!*u)
            continue;
        ab->addrs = xrealloc(ab->addrs, (ab->naddrs + 1) * sizeof(*ab->addrs));
        char why[256];
        if (url_parse_amqp(u, &ab->addrs[ab->naddrs], why, sizeof(why)) != 0) {
            snprintf(err, errlen, "key 'amqp_url': %s", why);
            free(copy);
            ab_destroy(&ab->base);
            return NULL;
        }
        ab->naddrs++;
    }
    free(copy);
    ab->enabled = ab->naddrs > 0;
    /* Without a broker the ops are not served at all: hello lists only what
     * can work, and a client that sends one anyway gets unknown_op, which
     * no retry will change, rather than unavailable, which invites one. */
    for (size_t i = 0; ab->enabled && i < sizeof(amqp_ops) / sizeof(amqp_ops[0]); i++)
        if (server_add_op(s, amqp_ops[i].name, NULL, &ab->base, amqp_ops[i].kind) != 0) {
            snprintf(err, errlen, "cannot register the AMQP ops");
            ab_destroy(&ab->base);
            return NULL;
        }
    return &ab->base;
}
