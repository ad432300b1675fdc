/* mq_trace.c: the AMQP side's spans and trace propagation; see
 * mq_trace.h. */
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "mq_trace.h"
#include "reqtrace.h"
#include "request.h"
#include "telemetry.h"
#include "trace_context.h"

static bool bytes_is(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

static void common_attrs(struct span *sp, const char *op_type, const char *op_name, const char *dest,
                         const struct url_amqp *server)
{
    span_attr_cstr(sp, "messaging.system", "rabbitmq");
    span_attr_cstr(sp, "messaging.operation.type", op_type);
    span_attr_cstr(sp, "messaging.operation.name", op_name);
    if (dest)
        span_attr_cstr(sp, "messaging.destination.name", dest);
    if (server) {
        span_attr_cstr(sp, "server.address", server->host);
        span_attr_int(sp, "server.port", server->port);
    }
}

/* Puts traceparent (and tracestate) into a message's headers; ferryd's
 * own consumers read them back. */
static void inject(amqp_pool_t *pool, struct mq_msg *m, const char *tp, const char *ts, size_t ts_len)
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

static bool is_publish(enum mq_op op)
{
    return op == MQ_OP_PUBLISH || op == MQ_OP_PUBLISH_BATCH || op == MQ_OP_PUBLISH_DELAYED;
}

/* Attributes of a messaging span beyond what every description has. */
struct extras {
    struct reqtrace_attr a[10];
    size_t n;
};

static void put_str(struct extras *x, const char *key, const char *v, size_t len)
{
    if (v && len && x->n < sizeof(x->a) / sizeof(x->a[0]))
        x->a[x->n++] = (struct reqtrace_attr){.key = key, .str = v, .len = len};
}

static void put_int(struct extras *x, const char *key, int64_t v)
{
    if (x->n < sizeof(x->a) / sizeof(x->a[0]))
        x->a[x->n++] = (struct reqtrace_attr){.key = key, .i = v};
}

static void put_common(struct extras *x, const char *op_type, const char *op_name, const char *dest)
{
    put_str(x, "messaging.system", "rabbitmq", 8);
    if (op_type)
        put_str(x, "messaging.operation.type", op_type, strlen(op_type));
    put_str(x, "messaging.operation.name", op_name, strlen(op_name));
    if (dest)
        put_str(x, "messaging.destination.name", dest, strlen(dest));
}

void mq_trace_request(struct request *r, enum mq_op op, struct mq_cmd *c, const char *queue,
                      const struct url_amqp *server)
{
    if (is_publish(op) || op == MQ_OP_RPC) {
        /* Without a span of ours (not sampled), the client's context goes
         * on unchanged, so the trace stays whole downstream. */
        char tp[TRACEPARENT_LEN + 1];
        const char *ts;
        size_t ts_len;
        if (reqtrace_traceparent(&r->trace, r->v.traceparent, r->v.traceparent_len, r->v.tracestate,
                                 r->v.tracestate_len, tp, &ts, &ts_len))
            for (size_t i = 0; i < c->nmsgs; i++)
                inject(&c->pool, &c->msgs[i], tp, ts, ts_len);
    }
    char dest[300], name[340];
    struct extras x = {.n = 0};
    struct reqtrace_desc d = {
        .kind = SK_CLIENT,
        .system = "rabbitmq",
        .operation = r->op->name,
        .operation_len = strlen(r->op->name),
        .span_name = name,
        .server_address = server ? server->host : NULL,
        .server_address_len = server ? strlen(server->host) : 0,
        .server_port = server ? server->port : 0,
        .conn = server ? (const void *)server : (const void *)r->op,
    };
    switch (op) {
    case MQ_OP_PUBLISH:
    case MQ_OP_PUBLISH_BATCH:
    case MQ_OP_PUBLISH_DELAYED:
    case MQ_OP_RPC: {
        const struct mq_msg *m = &c->msgs[0];
        snprintf(dest, sizeof(dest), "%.*s", (int)m->exchange.len, (char *)m->exchange.bytes);
        if (!dest[0])
            snprintf(dest, sizeof(dest), "amq.default");
        d.kind = op == MQ_OP_RPC ? SK_CLIENT : SK_PRODUCER;
        snprintf(name, sizeof(name), "%s %s", op == MQ_OP_RPC ? "rpc" : "publish", dest);
        put_common(&x, "send", "publish", dest);
        put_str(&x, "messaging.rabbitmq.destination.routing_key", m->routing_key.bytes, m->routing_key.len);
        if (m->props._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
            put_str(&x, "messaging.message.id", m->props.message_id.bytes, m->props.message_id.len);
        if (m->props._flags & AMQP_BASIC_CORRELATION_ID_FLAG)
            put_str(&x, "messaging.message.conversation_id", m->props.correlation_id.bytes,
                    m->props.correlation_id.len);
        put_int(&x, "messaging.message.body.size", (int64_t)m->body.len);
        if (c->nmsgs > 1)
            put_int(&x, "messaging.batch.message_count", (int64_t)c->nmsgs);
        break;
    }
    case MQ_OP_ACK:
    case MQ_OP_NACK:
    case MQ_OP_REJECT: {
        const char *what = op == MQ_OP_ACK ? "ack" : op == MQ_OP_NACK ? "nack" : "reject";
        snprintf(name, sizeof(name), "%s %s", what, queue ? queue : "");
        put_common(&x, "settle", what, queue);
        put_int(&x, "messaging.rabbitmq.message.delivery_tag", (int64_t)(c->delivery_tag & MQ_TAG_MASK));
        break;
    }
    case MQ_OP_GET:
        snprintf(dest, sizeof(dest), "%.*s", (int)c->name.len, (char *)c->name.bytes);
        snprintf(name, sizeof(name), "receive %s", dest);
        put_common(&x, "receive", "receive", dest);
        break;
    default:
        snprintf(dest, sizeof(dest), "%.*s", (int)c->name.len, (char *)c->name.bytes);
        snprintf(name, sizeof(name), "%s %s", r->op->name, dest);
        put_common(&x, NULL, r->op->name, NULL);
        break;
    }
    d.extra = x.a;
    d.nextra = x.n;
    reqtrace_describe(&r->trace, &d);
}

struct span *mq_trace_delivery_start(struct telemetry *t, const char *queue, const struct mq_event *e,
                                     const struct url_amqp *server, char tp_out[MQ_TRACE_TP_SIZE])
{
    struct span *sp = telemetry_span_start(t, e->traceparent, strlen(e->traceparent), e->tracestate,
                                           strlen(e->tracestate), SK_CONSUMER, "process", uv_hrtime());
    struct trace_ctx tc;
    if (sp) {
        span_set_name(sp, "process %s", queue);
        common_attrs(sp, "process", "process", queue, server);
        if (e->routing_key[0])
            span_attr_cstr(sp, "messaging.rabbitmq.destination.routing_key", e->routing_key);
        span_attr_int(sp, "messaging.rabbitmq.message.delivery_tag", (int64_t)(e->delivery_tag & MQ_TAG_MASK));
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

void mq_trace_delivery_end(struct telemetry *t, struct span *sp)
{
    if (sp)
        telemetry_span_end(t, sp, uv_hrtime(), NULL, NULL);
}
