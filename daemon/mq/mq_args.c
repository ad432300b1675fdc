/* mq_args.c: the AMQP ops' arguments, read through the codec's cursors;
 * see mq_args.h.
 *
 * The request was checked whole by codec_decode_request (well-formed,
 * definite lengths, valid UTF-8, within the depth and item limits), so a
 * cursor here fails only on a bug; it is then refused like bad input.
 * A key is looked up by scanning its map from the start, as the maps are
 * small: when a key comes twice, the first one counts. */
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "mq_args.h"
#include "mq_props.h"

#define MAX_TABLE_DEPTH 16
#define MALFORMED "truncated or malformed CBOR"

/* A value in a map: its first header, where it starts, and a cursor just
 * past that header (at the first entry of a map or array). */
struct val {
    struct tok t;
    size_t at;
    struct cursor c;
};

/* The args map being read, and the first problem found in it. */
struct args {
    struct cursor map;   /* just past the map's header */
    uint64_t pairs;
    const char *bad;     /* refers: static text, or text in pool */
    amqp_pool_t *pool;   /* refers: the command's */
};

static bool key_eq(const struct tok *k, const char *s)
{
    size_t n = strlen(s);
    return k->type == TOK_TEXT && k->n == n && memcmp(k->p, s, n) == 0;
}

/* Finds key in the map whose entries start at map. */
static bool find(const struct cursor *map, uint64_t pairs, const char *key, struct val *out)
{
    struct cursor c = *map;
    for (uint64_t i = 0; i < pairs; i++) {
        struct tok k;
        if (cursor_next(&c, &k) != 0 || cursor_skip_rest(&c, &k) != 0)
            return false;
        out->at = c.pos;
        if (cursor_next(&c, &out->t) != 0)
            return false;
        if (key_eq(&k, key)) {
            out->c = c;
            return true;
        }
        if (cursor_skip_rest(&c, &out->t) != 0)
            return false;
    }
    return false;
}

static bool arg(struct args *a, const char *key, struct val *v)
{
    return find(&a->map, a->pairs, key, v);
}

/* A text or byte string, copied into pool. */
static bool copy_bytes(const struct tok *t, amqp_bytes_t *out, amqp_pool_t *pool)
{
    if (t->type != TOK_TEXT && t->type != TOK_BYTES)
        return false;
    amqp_pool_alloc_bytes(pool, t->n, out);
    if (t->n && !out->bytes)
        return false;
    if (t->n)
        memcpy(out->bytes, t->p, t->n);
    return true;
}

/* An integer that fits int64_t. */
static bool tok_int(const struct tok *t, int64_t *v)
{
    if ((t->type != TOK_UINT && t->type != TOK_NEGINT) || t->u > INT64_MAX)
        return false;
    *v = t->type == TOK_UINT ? (int64_t)t->u : -(int64_t)t->u - 1;
    return true;
}

/* "unknown key 'KEY' in WHERE args", in pool: a typo ("durabel") is an
 * error naming the key rather than a silently ignored flag. */
static const char *unknown_key(const struct tok *key, const char *where, amqp_pool_t *pool)
{
    /* At most 64 bytes of the key, cut at a character boundary: the
     * message goes out as CBOR text, which must stay valid UTF-8. */
    size_t n = key->n;
    const unsigned char *p = key->p;
    if (n > 64) {
        n = 64;
        while (n > 0 && (p[n] & 0xc0) == 0x80)
            n--;
    }
    char buf[160];
    int len = snprintf(buf, sizeof(buf), "unknown key '%.*s' in %s args", (int)n, (const char *)p, where);
    if (len < 0 || (size_t)len >= sizeof(buf))
        return "unknown key in args";
    char *out = amqp_pool_alloc(pool, (size_t)len + 1);
    if (!out)
        return "unknown key in args";
    memcpy(out, buf, (size_t)len + 1);
    return out;
}

/* ---- field tables ---- */

static const char *value_from(struct cursor *c, const struct tok *t, amqp_field_value_t *v, amqp_pool_t *pool,
                              int depth);

static const char *table_from(struct cursor *c, const struct tok *t, amqp_table_t *out, amqp_pool_t *pool,
                              int depth)
{
    if (t->type != TOK_MAP)
        return "a table must be a map";
    if (depth > MAX_TABLE_DEPTH)
        return "table nesting is too deep";
    size_t n = (size_t)t->u;
    out->num_entries = (int)n;
    out->entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_table_entry_t)) : NULL;
    for (size_t i = 0; i < n; i++) {
        struct tok k, v;
        if (cursor_next(c, &k) != 0)
            return MALFORMED;
        if (k.type != TOK_TEXT)
            return "table keys must be text";
        if (k.n > 128)
            return "table keys are at most 128 bytes";
        copy_bytes(&k, &out->entries[i].key, pool);
        if (cursor_next(c, &v) != 0)
            return MALFORMED;
        const char *bad = value_from(c, &v, &out->entries[i].value, pool, depth + 1);
        if (bad)
            return bad;
    }
    return NULL;
}

static const char *value_from(struct cursor *c, const struct tok *t, amqp_field_value_t *v, amqp_pool_t *pool,
                              int depth)
{
    int64_t i;
    if (depth > MAX_TABLE_DEPTH)
        return "table nesting is too deep";
    if (tok_int(t, &i)) {
        v->kind = AMQP_FIELD_KIND_I64;
        v->value.i64 = i;
        return NULL;
    }
    switch (t->type) {
    case TOK_TEXT:
        v->kind = AMQP_FIELD_KIND_UTF8;
        copy_bytes(t, &v->value.bytes, pool);
        return NULL;
    case TOK_BYTES:
        v->kind = AMQP_FIELD_KIND_BYTES;
        copy_bytes(t, &v->value.bytes, pool);
        return NULL;
    case TOK_BOOL:
        v->kind = AMQP_FIELD_KIND_BOOLEAN;
        v->value.boolean = t->u != 0;
        return NULL;
    case TOK_NULL:
    case TOK_UNDEF:
        v->kind = AMQP_FIELD_KIND_VOID;
        return NULL;
    case TOK_FLOAT:
        v->kind = AMQP_FIELD_KIND_F64;
        v->value.f64 = t->f;
        return NULL;
    case TOK_ARRAY: {
        size_t n = (size_t)t->u;
        v->kind = AMQP_FIELD_KIND_ARRAY;
        v->value.array.num_entries = (int)n;
        v->value.array.entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_field_value_t)) : NULL;
        for (size_t k = 0; k < n; k++) {
            struct tok e;
            if (cursor_next(c, &e) != 0)
                return MALFORMED;
            const char *bad = value_from(c, &e, &v->value.array.entries[k], pool, depth + 1);
            if (bad)
                return bad;
        }
        return NULL;
    }
    case TOK_MAP:
        v->kind = AMQP_FIELD_KIND_TABLE;
        return table_from(c, t, &v->value.table, pool, depth + 1);
    default:
        return "unsupported value type in a table (tags, or integers beyond 64 bits)";
    }
}

const char *mq_args_table(struct cursor *c, amqp_table_t *out, amqp_pool_t *pool)
{
    struct tok t;
    if (cursor_next(c, &t) != 0)
        return MALFORMED;
    return table_from(c, &t, out, pool, 0);
}

/* ---- messages ---- */

/* Fills m from publish arguments: exchange, routing_key, body, mandatory,
 * persistent and the basic properties (mq_props_texts, headers,
 * delivery_mode, priority, timestamp). t is the map's header, c just past
 * it; the entry whose value starts at skip_at is left out (publish.delayed's
 * delay_ms). Returns NULL, or what is wrong. */
static const char *msg_from(struct cursor *c, const struct tok *t, struct mq_msg *m, amqp_pool_t *pool,
                            const char *where, size_t skip_at)
{
    memset(m, 0, sizeof(*m));
    m->exchange = amqp_empty_bytes;
    m->routing_key = amqp_empty_bytes;
    m->body = amqp_empty_bytes;
    if (t->type != TOK_MAP)
        return "publish args must be a map";
    bool has_body = false;
    for (uint64_t i = 0; i < t->u; i++) {
        struct tok k, v;
        if (cursor_next(c, &k) != 0 || cursor_skip_rest(c, &k) != 0)
            return MALFORMED;
        size_t at = c->pos;
        if (cursor_next(c, &v) != 0)
            return MALFORMED;
        if (at == skip_at) {
            if (cursor_skip_rest(c, &v) != 0)
                return MALFORMED;
            continue;
        }
        if (k.type != TOK_TEXT)
            return "publish args keys must be text";
        if (key_eq(&k, "exchange")) {
            if (v.type != TOK_TEXT || !copy_bytes(&v, &m->exchange, pool))
                return "exchange must be text";
            if (m->exchange.len > 255)
                return "exchange names are at most 255 bytes";
        } else if (key_eq(&k, "routing_key")) {
            if (v.type != TOK_TEXT || !copy_bytes(&v, &m->routing_key, pool))
                return "routing_key must be text";
            if (m->routing_key.len > 255)
                return "routing keys are at most 255 bytes";
        } else if (key_eq(&k, "body")) {
            if (!copy_bytes(&v, &m->body, pool))
                return "body must be a byte string (or text)";
            if (m->body.len > MQ_ARGS_MAX_BODY)
                return "body is larger than the broker's limit";
            has_body = true;
        } else if (key_eq(&k, "mandatory")) {
            if (v.type != TOK_BOOL)
                return "mandatory must be a boolean";
            m->mandatory = v.u != 0;
        } else if (key_eq(&k, "persistent")) {
            if (v.type != TOK_BOOL)
                return "persistent must be a boolean";
            m->props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
            m->props.delivery_mode = v.u ? 2 : 1;
        } else if (key_eq(&k, "delivery_mode")) {
            int64_t dm;
            if (!tok_int(&v, &dm) || (dm != 1 && dm != 2))
                return "delivery_mode must be 1 (transient) or 2 (persistent)";
            m->props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
            m->props.delivery_mode = (uint8_t)dm;
        } else if (key_eq(&k, "priority")) {
            int64_t pr;
            if (!tok_int(&v, &pr) || pr < 0 || pr > 255)
                return "priority must be an integer 0..255";
            m->props._flags |= AMQP_BASIC_PRIORITY_FLAG;
            m->props.priority = (uint8_t)pr;
        } else if (key_eq(&k, "timestamp")) {
            int64_t ts;
            if (!tok_int(&v, &ts) || ts < 0)
                return "timestamp must be a non-negative integer (seconds since the epoch)";
            m->props._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
            m->props.timestamp = (uint64_t)ts;
        } else if (key_eq(&k, "headers")) {
            const char *bad = table_from(c, &v, &m->props.headers, pool, 0);
            if (bad)
                return bad;
            m->props._flags |= AMQP_BASIC_HEADERS_FLAG;
        } else {
            size_t p;
            for (p = 0; p < mq_props_ntexts; p++)
                if (key_eq(&k, mq_props_texts[p].name))
                    break;
            if (p == mq_props_ntexts)
                return unknown_key(&k, where, pool);
            amqp_bytes_t *field = (amqp_bytes_t *)((char *)&m->props + mq_props_texts[p].off);
            int64_t ms;
            /* expiration is a string of milliseconds in AMQP; accept a number too. */
            if (mq_props_texts[p].flag == AMQP_BASIC_EXPIRATION_FLAG && tok_int(&v, &ms)) {
                if (ms < 0)
                    return "expiration must not be negative";
                char buf[24];
                int n = snprintf(buf, sizeof(buf), "%lld", (long long)ms);
                amqp_pool_alloc_bytes(pool, (size_t)n, field);
                memcpy(field->bytes, buf, (size_t)n);
            } else if (v.type != TOK_TEXT || !copy_bytes(&v, field, pool)) {
                return "message properties must be text (see docs/protocol.md)";
            }
            if (field->len > 255)
                return "message properties are at most 255 bytes";
            m->props._flags |= mq_props_texts[p].flag;
        }
    }
    if (!has_body)
        return "publish needs a body";
    return NULL;
}

/* ---- the ops' arguments ---- */

static bool arg_bool(struct args *a, const char *key, bool def)
{
    struct val v;
    if (!arg(a, key, &v))
        return def;
    if (v.t.type != TOK_BOOL) {
        a->bad = a->bad ? a->bad : "flags must be booleans";
        return def;
    }
    return v.t.u != 0;
}

static amqp_bytes_t arg_text(struct args *a, const char *key, bool required, const char *def)
{
    struct val v;
    amqp_bytes_t out = amqp_cstring_bytes(def ? def : "");
    if (!arg(a, key, &v)) {
        if (required && !a->bad)
            a->bad = "a required name is missing";
        return out;
    }
    if (v.t.type != TOK_TEXT || !copy_bytes(&v.t, &out, a->pool)) {
        a->bad = a->bad ? a->bad : "names must be text";
        return amqp_cstring_bytes(def ? def : "");
    }
    if (out.len > 255)
        a->bad = a->bad ? a->bad : "names are at most 255 bytes";
    return out;
}

/* Checks the queue arguments whose types RabbitMQ insists on, so a wrong
 * type is a clear 'bad_request' rather than a broker channel error. m is
 * a map. */
static const char *check_queue_args(const struct val *m)
{
    static const char *const ints[] = {"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
                                       "x-max-priority", "x-delivery-limit"};
    static const char *const texts[] = {"x-dead-letter-exchange", "x-dead-letter-routing-key", "x-overflow",
                                        "x-queue-mode"};
    struct val v;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
        if (find(&m->c, m->t.u, ints[i], &v) && v.t.type != TOK_UINT)
            return "x-message-ttl, x-expires, x-max-length(-bytes), x-max-priority and x-delivery-limit "
                   "must be non-negative integers";
    if (find(&m->c, m->t.u, "x-max-priority", &v) && (v.t.u < 1 || v.t.u > 255))
        return "x-max-priority must be 1..255";
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (find(&m->c, m->t.u, texts[i], &v) && v.t.type != TOK_TEXT)
            return "x-dead-letter-exchange, x-dead-letter-routing-key, x-overflow and x-queue-mode must be text";
    if (find(&m->c, m->t.u, "x-queue-type", &v)) {
        if (v.t.type != TOK_TEXT)
            return "x-queue-type must be text";
        if (!key_eq(&v.t, "classic") && !key_eq(&v.t, "quorum") && !key_eq(&v.t, "stream"))
            return "x-queue-type must be classic, quorum or stream";
    }
    return NULL;
}

static void arg_table(struct args *a, const char *key, amqp_table_t *out, bool queue_args)
{
    struct val v;
    *out = amqp_empty_table;
    if (!arg(a, key, &v) || a->bad)
        return;
    const char *bad = queue_args && v.t.type == TOK_MAP ? check_queue_args(&v) : NULL;
    if (!bad)
        bad = table_from(&v.c, &v.t, out, a->pool, 0);
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

static const char *parse_messages(struct mq_cmd *c, const struct val *list, bool found)
{
    if (!found || list->t.type != TOK_ARRAY || list->t.u == 0)
        return "messages must be a non-empty array of publish args";
    if (list->t.u > 10000)
        return "at most 10000 messages in one batch";
    size_t n = (size_t)list->t.u;
    c->msgs = amqp_pool_alloc(&c->pool, n * sizeof(struct mq_msg));
    c->nmsgs = n;
    struct cursor cur = list->c;
    for (size_t i = 0; i < n; i++) {
        struct tok e;
        if (cursor_next(&cur, &e) != 0)
            return MALFORMED;
        const char *bad = msg_from(&cur, &e, &c->msgs[i], &c->pool, "publish.batch message", SIZE_MAX);
        if (bad)
            return bad;
    }
    return NULL;
}

/* The keys each op's args map may hold (publish, rpc and publish.delayed:
 * the message keys, which msg_from checks). Any other key is
 * 'bad_request' naming it: a typo such as "durabel" would otherwise
 * declare a transient queue without a word. */
static const char *const op_keys[][8] = {
    [MQ_OP_EXCHANGE_DECLARE] = {"name", "type", "durable", "auto_delete", "internal", "passive", "arguments"},
    [MQ_OP_EXCHANGE_DELETE] = {"name", "if_unused"},
    [MQ_OP_QUEUE_DECLARE] = {"name", "durable", "exclusive", "auto_delete", "passive", "arguments"},
    [MQ_OP_QUEUE_BIND] = {"queue", "exchange", "routing_key", "arguments"},
    [MQ_OP_QUEUE_UNBIND] = {"queue", "exchange", "routing_key", "arguments"},
    [MQ_OP_QUEUE_PURGE] = {"queue"},
    [MQ_OP_QUEUE_DELETE] = {"queue", "if_unused", "if_empty"},
    [MQ_OP_PUBLISH_BATCH] = {"messages", "transactional"},
    [MQ_OP_CONSUME] = {"queue", "prefetch", "no_ack", "exclusive"},
    [MQ_OP_ACK] = {"sub", "delivery_tag", "multiple"},
    [MQ_OP_NACK] = {"sub", "delivery_tag", "multiple", "requeue"},
    [MQ_OP_REJECT] = {"sub", "delivery_tag", "requeue"},
    [MQ_OP_CANCEL] = {"sub"},
    [MQ_OP_GET] = {"queue"},
};

/* Returns NULL when every key of the map is one op takes, or what is
 * wrong (in pool). */
static const char *check_keys(enum mq_op op, const char *op_name, const struct args *a, amqp_pool_t *pool)
{
    if (op == MQ_OP_PUBLISH || op == MQ_OP_RPC || op == MQ_OP_PUBLISH_DELAYED)
        return NULL;
    struct cursor c = a->map;
    for (uint64_t i = 0; i < a->pairs; i++) {
        struct tok k, v;
        if (cursor_next(&c, &k) != 0)
            return MALFORMED;
        if (k.type != TOK_TEXT)
            return "args keys must be text";
        size_t n;
        for (n = 0; n < 8 && op_keys[op][n]; n++)
            if (key_eq(&k, op_keys[op][n]))
                break;
        if (n == 8 || !op_keys[op][n])
            return unknown_key(&k, op_name, pool);
        if (cursor_next(&c, &v) != 0 || cursor_skip_rest(&c, &v) != 0)
            return MALFORMED;
    }
    return NULL;
}

static const enum mq_cmd_kind kinds[] = {
    [MQ_OP_EXCHANGE_DECLARE] = MC_EXCHANGE_DECLARE, [MQ_OP_EXCHANGE_DELETE] = MC_EXCHANGE_DELETE,
    [MQ_OP_QUEUE_DECLARE] = MC_QUEUE_DECLARE,       [MQ_OP_QUEUE_BIND] = MC_QUEUE_BIND,
    [MQ_OP_QUEUE_UNBIND] = MC_QUEUE_UNBIND,         [MQ_OP_QUEUE_PURGE] = MC_QUEUE_PURGE,
    [MQ_OP_QUEUE_DELETE] = MC_QUEUE_DELETE,         [MQ_OP_PUBLISH] = MC_PUBLISH,
    [MQ_OP_PUBLISH_BATCH] = MC_PUBLISH,             [MQ_OP_PUBLISH_DELAYED] = MC_PUBLISH_DELAYED,
    [MQ_OP_CONSUME] = MC_CONSUME,                   [MQ_OP_ACK] = MC_ACK,
    [MQ_OP_NACK] = MC_NACK,                         [MQ_OP_REJECT] = MC_REJECT,
    [MQ_OP_CANCEL] = MC_CANCEL,                     [MQ_OP_GET] = MC_GET,
    [MQ_OP_RPC] = MC_RPC,
};

/* One message, from the whole args map. */
static const char *single_msg(struct mq_cmd *c, const struct args *a, const char *where, size_t skip_at)
{
    struct cursor cur = a->map;
    struct tok t = {.type = TOK_MAP, .u = a->pairs};
    c->msgs = amqp_pool_alloc(&c->pool, sizeof(struct mq_msg));
    c->nmsgs = 1;
    return msg_from(&cur, &t, &c->msgs[0], &c->pool, where, skip_at);
}

static void fill(enum mq_op op, struct mq_cmd *c, struct args *a, const struct mq_args_ctx *ctx)
{
    struct val v;
    switch (op) {
    case MQ_OP_EXCHANGE_DECLARE:
        c->name = arg_text(a, "name", true, NULL);
        c->type = arg_text(a, "type", false, "direct");
        if (!a->bad && !is_exchange_type(c->type))
            a->bad = "unknown exchange type: use direct, fanout, topic or headers";
        c->passive = arg_bool(a, "passive", false);
        c->durable = arg_bool(a, "durable", false);
        c->auto_delete = arg_bool(a, "auto_delete", false);
        c->internal = arg_bool(a, "internal", false);
        arg_table(a, "arguments", &c->arguments, false);
        if (!a->bad && c->name.len == 0)
            a->bad = "the default exchange cannot be declared";
        break;
    case MQ_OP_EXCHANGE_DELETE:
        c->name = arg_text(a, "name", true, NULL);
        c->if_unused = arg_bool(a, "if_unused", false);
        break;
    case MQ_OP_QUEUE_DECLARE:
        c->name = arg_text(a, "name", false, "");
        c->passive = arg_bool(a, "passive", false);
        c->durable = arg_bool(a, "durable", false);
        c->exclusive = arg_bool(a, "exclusive", false);
        c->auto_delete = arg_bool(a, "auto_delete", false);
        arg_table(a, "arguments", &c->arguments, true);
        break;
    case MQ_OP_QUEUE_BIND:
    case MQ_OP_QUEUE_UNBIND:
        c->name = arg_text(a, "queue", true, NULL);
        c->exchange = arg_text(a, "exchange", true, NULL);
        c->routing_key = arg_text(a, "routing_key", false, "");
        arg_table(a, "arguments", &c->arguments, false);
        break;
    case MQ_OP_QUEUE_PURGE:
    case MQ_OP_GET:
        c->name = arg_text(a, "queue", true, NULL);
        break;
    case MQ_OP_QUEUE_DELETE:
        c->name = arg_text(a, "queue", true, NULL);
        c->if_unused = arg_bool(a, "if_unused", false);
        c->if_empty = arg_bool(a, "if_empty", false);
        break;
    case MQ_OP_PUBLISH:
    case MQ_OP_RPC:
        a->bad = single_msg(c, a, ctx->op_name, SIZE_MAX);
        break;
    case MQ_OP_PUBLISH_DELAYED:
        /* The same args as publish, plus delay_ms, which is not a message
         * property. */
        if (!arg(a, "delay_ms", &v) || v.t.type != TOK_UINT || v.t.u < 1 || v.t.u > 86400000u * 7) {
            a->bad = "delay_ms must be a positive number of milliseconds (at most a week)";
            break;
        }
        c->delay_ms = v.t.u;
        a->bad = single_msg(c, a, ctx->op_name, v.at);
        if (!a->bad && c->msgs[0].mandatory)
            a->bad = "a delayed message cannot be mandatory";
        break;
    case MQ_OP_PUBLISH_BATCH: {
        c->batch = true;
        c->tx = arg_bool(a, "transactional", false);
        if (!a->bad) {
            bool found = arg(a, "messages", &v);
            a->bad = parse_messages(c, &v, found);
        }
        for (size_t i = 0; !a->bad && c->tx && i < c->nmsgs; i++)
            if (c->msgs[i].mandatory)
                a->bad = "mandatory messages cannot be published in a transaction: the broker commits a "
                         "transaction whose messages reached no queue, so all-or-nothing could not hold";
        break;
    }
    case MQ_OP_CONSUME: {
        c->name = arg_text(a, "queue", true, NULL);
        /* 0 would mean "no limit" to the broker: a consumer that does not
         * read would then take the whole queue into its output buffer. */
        bool pf = arg(a, "prefetch", &v);
        if (pf && (v.t.type != TOK_UINT || v.t.u < 1 || v.t.u > 65535))
            a->bad = a->bad ? a->bad : "prefetch must be 1..65535";
        c->prefetch = pf && !a->bad ? (uint16_t)v.t.u : ctx->default_prefetch;
        c->no_ack = arg_bool(a, "no_ack", false);
        c->exclusive = arg_bool(a, "exclusive", false);
        c->client_id = ctx->client_id;
        break;
    }
    case MQ_OP_ACK:
    case MQ_OP_NACK:
    case MQ_OP_REJECT:
    case MQ_OP_CANCEL:
        if (!arg(a, "sub", &v) || v.t.type != TOK_UINT) {
            a->bad = "sub (the id of the consume request) is required";
            break;
        }
        if (!ctx->find_sub || !ctx->find_sub(ctx->ctx, v.t.u, &c->consumer)) {
            a->bad = "no such subscription on this connection";
            break;
        }
        if (op == MQ_OP_CANCEL)
            break;
        if (!arg(a, "delivery_tag", &v) || v.t.type != TOK_UINT) {
            a->bad = "delivery_tag is required";
            break;
        }
        c->delivery_tag = v.t.u;
        c->multiple = op != MQ_OP_REJECT && arg_bool(a, "multiple", false);
        c->requeue = arg_bool(a, "requeue", op == MQ_OP_NACK);
        break;
    }
}

struct mq_cmd *mq_args_build(enum mq_op op, const uint8_t *args, size_t len, const struct mq_args_ctx *ctx,
                             int *code, char *msg, size_t msglen)
{
    *code = FE_BAD_REQUEST;
    struct cursor map = {.buf = args, .len = args ? len : 0, .pos = 0};
    struct tok t;
    if (!args || cursor_next(&map, &t) != 0 || t.type != TOK_MAP) {
        snprintf(msg, msglen, "args must be a map");
        return NULL;
    }
    struct mq_cmd *c = mq_cmd_new(kinds[op], 0, ctx->deadline);
    struct args a = {.map = map, .pairs = t.u, .bad = NULL, .pool = &c->pool};
    a.bad = check_keys(op, ctx->op_name, &a, &c->pool);
    if (!a.bad)
        fill(op, c, &a, ctx);
    if (a.bad) {
        snprintf(msg, msglen, "%s", a.bad);
        *code = strstr(a.bad, "broker's limit") ? FE_TOO_LARGE : FE_BAD_REQUEST;
        mq_cmd_free(c);
        return NULL;
    }
    return c;
}
