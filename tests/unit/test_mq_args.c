/* Unit tests: the AMQP ops' arguments, from CBOR to a command (mq_args.c),
 * and AMQP field tables both ways (mq_args.c in, mq_props.c out). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cbuf.h"
#include "errors.h"
#include "mq_args.h"
#include "mq_props.h"

/* The client has one subscription, 5, which is consumer 99. */
static bool find_sub(void *ctx, uint64_t sub, uint64_t *consumer)
{
    (void)ctx;
    if (sub != 5)
        return false;
    *consumer = 99;
    return true;
}

static struct mq_cmd *build(enum mq_op op, const char *name, struct cbuf *b, int *code, char *msg, size_t len)
{
    struct mq_args_ctx ctx = {.op_name = name, .deadline = 12345, .default_prefetch = 7, .client_id = 42,
                              .find_sub = find_sub, .ctx = NULL};
    struct mq_cmd *c = mq_args_build(op, b ? b->data : NULL, b ? b->len : 0, &ctx, code, msg, len);
    if (b)
        cbuf_free(b);
    return c;
}

/* Builds op's command from b (taking it) and expects it to be accepted. */
static struct mq_cmd *ok(enum mq_op op, const char *name, struct cbuf *b)
{
    int code = 0;
    char msg[256] = "";
    struct mq_cmd *c = build(op, name, b, &code, msg, sizeof(msg));
    if (!c)
        fail_msg("%s refused: %s", name, msg);
    assert_int_equal(c->deadline, 12345);
    return c;
}

/* Expects op's args in b (taken) to be refused with code and message. */
static void refused(enum mq_op op, const char *name, struct cbuf *b, int want_code, const char *want)
{
    int code = 0;
    char msg[256] = "";
    struct mq_cmd *c = build(op, name, b, &code, msg, sizeof(msg));
    assert_null(c);
    assert_int_equal(code, want_code);
    assert_string_equal(msg, want);
}

static void bad(enum mq_op op, const char *name, struct cbuf *b, const char *want)
{
    refused(op, name, b, FE_BAD_REQUEST, want);
}

static bool bytes_are(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

/* A fresh buffer holding a map header of n pairs. */
static struct cbuf *map(struct cbuf *b, size_t n)
{
    cbuf_init(b);
    cbuf_map(b, n);
    return b;
}

static struct cbuf *one(struct cbuf *b, const char *k, const char *v)
{
    map(b, 1);
    cbuf_str(b, k);
    cbuf_str(b, v);
    return b;
}

/* ---- every op, accepted ---- */

static void test_exchange_ops(void **st)
{
    (void)st;
    struct cbuf b;
    map(&b, 4);
    cbuf_str(&b, "name");
    cbuf_str(&b, "ex");
    cbuf_str(&b, "type");
    cbuf_str(&b, "topic");
    cbuf_str(&b, "durable");
    cbuf_bool(&b, true);
    cbuf_str(&b, "arguments");
    cbuf_map(&b, 1);
    cbuf_str(&b, "alternate-exchange");
    cbuf_str(&b, "ae");
    struct mq_cmd *c = ok(MQ_OP_EXCHANGE_DECLARE, "exchange.declare", &b);
    assert_int_equal(c->kind, MC_EXCHANGE_DECLARE);
    assert_true(bytes_are(c->name, "ex"));
    assert_true(bytes_are(c->type, "topic"));
    assert_true(c->durable);
    assert_false(c->auto_delete || c->internal || c->passive);
    assert_int_equal(c->arguments.num_entries, 1);
    assert_true(bytes_are(c->arguments.entries[0].key, "alternate-exchange"));
    assert_int_equal(c->arguments.entries[0].value.kind, AMQP_FIELD_KIND_UTF8);
    assert_true(bytes_are(c->arguments.entries[0].value.value.bytes, "ae"));
    mq_cmd_free(c);

    c = ok(MQ_OP_EXCHANGE_DECLARE, "exchange.declare", one(&b, "name", "ex"));
    assert_true(bytes_are(c->type, "direct"));
    mq_cmd_free(c);

    map(&b, 2);
    cbuf_str(&b, "name");
    cbuf_str(&b, "ex");
    cbuf_str(&b, "if_unused");
    cbuf_bool(&b, true);
    c = ok(MQ_OP_EXCHANGE_DELETE, "exchange.delete", &b);
    assert_int_equal(c->kind, MC_EXCHANGE_DELETE);
    assert_true(c->if_unused);
    mq_cmd_free(c);
}

static void test_queue_ops(void **st)
{
    (void)st;
    struct cbuf b;
    map(&b, 3);
    cbuf_str(&b, "name");
    cbuf_str(&b, "q");
    cbuf_str(&b, "exclusive");
    cbuf_bool(&b, true);
    cbuf_str(&b, "arguments");
    cbuf_map(&b, 3);
    cbuf_str(&b, "x-message-ttl");
    cbuf_uint(&b, 1000);
    cbuf_str(&b, "x-queue-type");
    cbuf_str(&b, "quorum");
    cbuf_str(&b, "x-max-priority");
    cbuf_uint(&b, 10);
    struct mq_cmd *c = ok(MQ_OP_QUEUE_DECLARE, "queue.declare", &b);
    assert_int_equal(c->kind, MC_QUEUE_DECLARE);
    assert_true(bytes_are(c->name, "q"));
    assert_true(c->exclusive);
    assert_int_equal(c->arguments.num_entries, 3);
    assert_int_equal(c->arguments.entries[0].value.kind, AMQP_FIELD_KIND_I64);
    assert_int_equal(c->arguments.entries[0].value.value.i64, 1000);
    mq_cmd_free(c);

    /* A server-named queue. */
    c = ok(MQ_OP_QUEUE_DECLARE, "queue.declare", map(&b, 0));
    assert_int_equal(c->name.len, 0);
    mq_cmd_free(c);

    for (int op = MQ_OP_QUEUE_BIND; op <= MQ_OP_QUEUE_UNBIND; op++) {
        map(&b, 3);
        cbuf_str(&b, "queue");
        cbuf_str(&b, "q");
        cbuf_str(&b, "exchange");
        cbuf_str(&b, "ex");
        cbuf_str(&b, "routing_key");
        cbuf_str(&b, "rk");
        c = ok(op, "queue.bind", &b);
        assert_int_equal(c->kind, op == MQ_OP_QUEUE_BIND ? MC_QUEUE_BIND : MC_QUEUE_UNBIND);
        assert_true(bytes_are(c->name, "q") && bytes_are(c->exchange, "ex") && bytes_are(c->routing_key, "rk"));
        mq_cmd_free(c);
    }
    c = ok(MQ_OP_QUEUE_PURGE, "queue.purge", one(&b, "queue", "q"));
    assert_int_equal(c->kind, MC_QUEUE_PURGE);
    mq_cmd_free(c);
    c = ok(MQ_OP_GET, "get", one(&b, "queue", "q"));
    assert_int_equal(c->kind, MC_GET);
    assert_true(bytes_are(c->name, "q"));
    mq_cmd_free(c);
    map(&b, 3);
    cbuf_str(&b, "queue");
    cbuf_str(&b, "q");
    cbuf_str(&b, "if_unused");
    cbuf_bool(&b, true);
    cbuf_str(&b, "if_empty");
    cbuf_bool(&b, true);
    c = ok(MQ_OP_QUEUE_DELETE, "queue.delete", &b);
    assert_true(c->if_unused && c->if_empty);
    mq_cmd_free(c);
}

/* A publish's args: every message key. */
static void put_message(struct cbuf *b)
{
    cbuf_map(b, 9);
    cbuf_str(b, "exchange");
    cbuf_str(b, "ex");
    cbuf_str(b, "routing_key");
    cbuf_str(b, "rk");
    cbuf_str(b, "body");
    cbuf_bytes(b, "hi", 2);
    cbuf_str(b, "persistent");
    cbuf_bool(b, true);
    cbuf_str(b, "priority");
    cbuf_uint(b, 3);
    cbuf_str(b, "expiration");
    cbuf_uint(b, 5000);
    cbuf_str(b, "message_id");
    cbuf_str(b, "m1");
    cbuf_str(b, "timestamp");
    cbuf_uint(b, 1700000000);
    cbuf_str(b, "headers");
    cbuf_map(b, 1);
    cbuf_str(b, "h");
    cbuf_int(b, -2);
}

static void check_message(const struct mq_msg *m)
{
    assert_true(bytes_are(m->exchange, "ex"));
    assert_true(bytes_are(m->routing_key, "rk"));
    assert_true(bytes_are(m->body, "hi"));
    assert_false(m->mandatory);
    assert_int_equal(m->props.delivery_mode, 2);
    assert_int_equal(m->props.priority, 3);
    assert_true(bytes_are(m->props.expiration, "5000"));
    assert_true(bytes_are(m->props.message_id, "m1"));
    assert_int_equal(m->props.timestamp, 1700000000);
    assert_int_equal(m->props.headers.num_entries, 1);
    assert_int_equal(m->props.headers.entries[0].value.value.i64, -2);
    amqp_flags_t want = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_EXPIRATION_FLAG |
                        AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_HEADERS_FLAG;
    assert_int_equal(m->props._flags, want);
}

static void test_publish_ops(void **st)
{
    (void)st;
    struct cbuf b;
    cbuf_init(&b);
    put_message(&b);
    struct mq_cmd *c = ok(MQ_OP_PUBLISH, "publish", &b);
    assert_int_equal(c->kind, MC_PUBLISH);
    assert_int_equal(c->nmsgs, 1);
    assert_false(c->batch);
    check_message(&c->msgs[0]);
    mq_cmd_free(c);

    cbuf_init(&b);
    put_message(&b);
    c = ok(MQ_OP_RPC, "rpc", &b);
    assert_int_equal(c->kind, MC_RPC);
    check_message(&c->msgs[0]);
    mq_cmd_free(c);

    map(&b, 2);
    cbuf_str(&b, "messages");
    cbuf_array(&b, 2);
    put_message(&b);
    put_message(&b);
    cbuf_str(&b, "transactional");
    cbuf_bool(&b, true);
    c = ok(MQ_OP_PUBLISH_BATCH, "publish.batch", &b);
    assert_int_equal(c->kind, MC_PUBLISH);
    assert_true(c->batch && c->tx);
    assert_int_equal(c->nmsgs, 2);
    check_message(&c->msgs[0]);
    check_message(&c->msgs[1]);
    mq_cmd_free(c);

    /* delay_ms is taken out, wherever it is, and is no message key. */
    map(&b, 3);
    cbuf_str(&b, "body");
    cbuf_str(&b, "x");
    cbuf_str(&b, "delay_ms");
    cbuf_uint(&b, 1500);
    cbuf_str(&b, "routing_key");
    cbuf_str(&b, "rk");
    c = ok(MQ_OP_PUBLISH_DELAYED, "publish.delayed", &b);
    assert_int_equal(c->kind, MC_PUBLISH_DELAYED);
    assert_int_equal(c->delay_ms, 1500);
    assert_true(bytes_are(c->msgs[0].body, "x"));
    assert_true(bytes_are(c->msgs[0].routing_key, "rk"));
    mq_cmd_free(c);
}

static void test_consume_ops(void **st)
{
    (void)st;
    struct cbuf b;
    map(&b, 4);
    cbuf_str(&b, "queue");
    cbuf_str(&b, "q");
    cbuf_str(&b, "prefetch");
    cbuf_uint(&b, 10);
    cbuf_str(&b, "no_ack");
    cbuf_bool(&b, true);
    cbuf_str(&b, "exclusive");
    cbuf_bool(&b, false);
    struct mq_cmd *c = ok(MQ_OP_CONSUME, "consume", &b);
    assert_int_equal(c->kind, MC_CONSUME);
    assert_int_equal(c->prefetch, 10);
    assert_true(c->no_ack);
    assert_int_equal(c->client_id, 42);
    mq_cmd_free(c);
    c = ok(MQ_OP_CONSUME, "consume", one(&b, "queue", "q"));
    assert_int_equal(c->prefetch, 7);
    mq_cmd_free(c);

    static const struct {
        enum mq_op op;
        const char *name;
        enum mq_cmd_kind kind;
        bool requeue;
    } settle[] = {{MQ_OP_ACK, "ack", MC_ACK, false},
                  {MQ_OP_NACK, "nack", MC_NACK, true},
                  {MQ_OP_REJECT, "reject", MC_REJECT, false}};
    for (size_t i = 0; i < 3; i++) {
        map(&b, 2);
        cbuf_str(&b, "sub");
        cbuf_uint(&b, 5);
        cbuf_str(&b, "delivery_tag");
        cbuf_uint(&b, (2ull << MQ_TAG_BITS) | 7);
        c = ok(settle[i].op, settle[i].name, &b);
        assert_int_equal(c->kind, settle[i].kind);
        assert_int_equal(c->consumer, 99);
        assert_int_equal(c->delivery_tag, (2ull << MQ_TAG_BITS) | 7);
        assert_false(c->multiple);
        assert_int_equal(c->requeue, settle[i].requeue);
        mq_cmd_free(c);
    }
    map(&b, 4);
    cbuf_str(&b, "sub");
    cbuf_uint(&b, 5);
    cbuf_str(&b, "delivery_tag");
    cbuf_uint(&b, 1);
    cbuf_str(&b, "multiple");
    cbuf_bool(&b, true);
    cbuf_str(&b, "requeue");
    cbuf_bool(&b, false);
    c = ok(MQ_OP_NACK, "nack", &b);
    assert_true(c->multiple);
    assert_false(c->requeue);
    mq_cmd_free(c);

    map(&b, 1);
    cbuf_str(&b, "sub");
    cbuf_uint(&b, 5);
    c = ok(MQ_OP_CANCEL, "cancel", &b);
    assert_int_equal(c->kind, MC_CANCEL);
    assert_int_equal(c->consumer, 99);
    mq_cmd_free(c);
}

/* ---- refusals ---- */

static void test_refusals_common(void **st)
{
    (void)st;
    struct cbuf b;
    bad(MQ_OP_QUEUE_PURGE, "queue.purge", NULL, "args must be a map");
    cbuf_init(&b);
    cbuf_array(&b, 0);
    bad(MQ_OP_QUEUE_PURGE, "queue.purge", &b, "args must be a map");
    cbuf_init(&b);
    cbuf_str(&b, "q");
    bad(MQ_OP_PUBLISH, "publish", &b, "args must be a map");
    bad(MQ_OP_QUEUE_DECLARE, "queue.declare", one(&b, "durabel", "x"), "unknown key 'durabel' in queue.declare args");
    map(&b, 1);
    cbuf_uint(&b, 1);
    cbuf_str(&b, "q");
    bad(MQ_OP_QUEUE_PURGE, "queue.purge", &b, "args keys must be text");
    /* A long unknown key is cut to 64 bytes, at a character boundary. */
    char key[80];
    memset(key, 'k', sizeof(key));
    memcpy(key + 63, "\xc3\xa9", 2);
    map(&b, 1);
    cbuf_text(&b, key, sizeof(key));
    cbuf_null(&b);
    bad(MQ_OP_GET, "get", &b,
        "unknown key '"
        "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk' in get args");
    bad(MQ_OP_GET, "get", map(&b, 0), "a required name is missing");
    map(&b, 1);
    cbuf_str(&b, "queue");
    cbuf_uint(&b, 1);
    bad(MQ_OP_GET, "get", &b, "names must be text");
    map(&b, 1);
    cbuf_str(&b, "queue");
    cbuf_bytes(&b, "q", 1);
    bad(MQ_OP_GET, "get", &b, "names must be text");
    char longname[256];
    memset(longname, 'n', sizeof(longname));
    map(&b, 1);
    cbuf_str(&b, "queue");
    cbuf_text(&b, longname, sizeof(longname));
    bad(MQ_OP_GET, "get", &b, "names are at most 255 bytes");
    map(&b, 2);
    cbuf_str(&b, "queue");
    cbuf_str(&b, "q");
    cbuf_str(&b, "if_empty");
    cbuf_uint(&b, 1);
    bad(MQ_OP_QUEUE_DELETE, "queue.delete", &b, "flags must be booleans");
    map(&b, 2);
    cbuf_str(&b, "queue");
    cbuf_str(&b, "q");
    cbuf_str(&b, "if_empty");
    cbuf_double(&b, 1.5);
    bad(MQ_OP_QUEUE_DELETE, "queue.delete", &b, "flags must be booleans");
}

static void test_refusals_topology(void **st)
{
    (void)st;
    struct cbuf b;
    map(&b, 2);
    cbuf_str(&b, "name");
    cbuf_str(&b, "ex");
    cbuf_str(&b, "type");
    cbuf_str(&b, "bogus");
    bad(MQ_OP_EXCHANGE_DECLARE, "exchange.declare", &b, "unknown exchange type: use direct, fanout, topic or headers");
    bad(MQ_OP_EXCHANGE_DECLARE, "exchange.declare", one(&b, "name", ""), "the default exchange cannot be declared");
    bad(MQ_OP_EXCHANGE_DELETE, "exchange.delete", map(&b, 0), "a required name is missing");
    map(&b, 1);
    cbuf_str(&b, "queue");
    cbuf_str(&b, "q");
    bad(MQ_OP_QUEUE_BIND, "queue.bind", &b, "a required name is missing");

    static const struct {
        const char *key;
        int type; /* 0: text "10", 1: uint 0, 2: uint 5, 3: text "foo", 4: uint 300 */
        const char *want;
    } qa[] = {
        {"x-message-ttl", 0, "x-message-ttl, x-expires, x-max-length(-bytes), x-max-priority and x-delivery-limit "
                             "must be non-negative integers"},
        {"x-delivery-limit", 0, "x-message-ttl, x-expires, x-max-length(-bytes), x-max-priority and "
                                "x-delivery-limit must be non-negative integers"},
        {"x-max-priority", 1, "x-max-priority must be 1..255"},
        {"x-max-priority", 4, "x-max-priority must be 1..255"},
        {"x-dead-letter-exchange", 2, "x-dead-letter-exchange, x-dead-letter-routing-key, x-overflow and "
                                      "x-queue-mode must be text"},
        {"x-queue-mode", 2, "x-dead-letter-exchange, x-dead-letter-routing-key, x-overflow and x-queue-mode "
                            "must be text"},
        {"x-queue-type", 2, "x-queue-type must be text"},
        {"x-queue-type", 3, "x-queue-type must be classic, quorum or stream"},
    };
    for (size_t i = 0; i < sizeof(qa) / sizeof(qa[0]); i++) {
        map(&b, 1);
        cbuf_str(&b, "arguments");
        cbuf_map(&b, 1);
        cbuf_str(&b, qa[i].key);
        switch (qa[i].type) {
        case 0: cbuf_str(&b, "10"); break;
        case 1: cbuf_uint(&b, 0); break;
        case 2: cbuf_uint(&b, 5); break;
        case 3: cbuf_str(&b, "foo"); break;
        default: cbuf_uint(&b, 300); break;
        }
        bad(MQ_OP_QUEUE_DECLARE, "queue.declare", &b, qa[i].want);
    }
    /* The same keys are not checked outside queue.declare. */
    map(&b, 2);
    cbuf_str(&b, "name");
    cbuf_str(&b, "ex");
    cbuf_str(&b, "arguments");
    cbuf_map(&b, 1);
    cbuf_str(&b, "x-max-priority");
    cbuf_uint(&b, 0);
    mq_cmd_free(ok(MQ_OP_EXCHANGE_DECLARE, "exchange.declare", &b));
}

static void test_refusals_tables(void **st)
{
    (void)st;
    struct cbuf b;
    map(&b, 2);
    cbuf_str(&b, "name");
    cbuf_str(&b, "ex");
    cbuf_str(&b, "arguments");
    cbuf_uint(&b, 5);
    bad(MQ_OP_EXCHANGE_DECLARE, "exchange.declare", &b, "a table must be a map");

    map(&b, 1);
    cbuf_str(&b, "arguments");
    cbuf_map(&b, 1);
    cbuf_uint(&b, 1);
    cbuf_str(&b, "v");
    bad(MQ_OP_QUEUE_DECLARE, "queue.declare", &b, "table keys must be text");

    char key[129];
    memset(key, 'k', sizeof(key));
    map(&b, 1);
    cbuf_str(&b, "arguments");
    cbuf_map(&b, 1);
    cbuf_text(&b, key, sizeof(key));
    cbuf_str(&b, "v");
    bad(MQ_OP_QUEUE_DECLARE, "queue.declare", &b, "table keys are at most 128 bytes");

    /* A tag, and an integer beyond int64_t. */
    const char *unsupported = "unsupported value type in a table (tags, or integers beyond 64 bits)";
    map(&b, 1);
    cbuf_str(&b, "arguments");
    cbuf_map(&b, 1);
    cbuf_str(&b, "t");
    static const uint8_t tag1[] = {0xc1, 0x01};
    cbuf_put(&b, tag1, sizeof(tag1));
    bad(MQ_OP_QUEUE_DECLARE, "queue.declare", &b, unsupported);
    map(&b, 1);
    cbuf_str(&b, "arguments");
    cbuf_map(&b, 1);
    cbuf_str(&b, "big");
    cbuf_uint(&b, UINT64_MAX);
    bad(MQ_OP_QUEUE_DECLARE, "queue.declare", &b, unsupported);

    /* Nesting beyond 16 tables. */
    map(&b, 3);
    cbuf_str(&b, "body");
    cbuf_str(&b, "x");
    cbuf_str(&b, "mandatory");
    cbuf_bool(&b, false);
    cbuf_str(&b, "headers");
    for (int i = 0; i < 10; i++) {
        cbuf_map(&b, 1);
        cbuf_str(&b, "n");
    }
    cbuf_null(&b);
    bad(MQ_OP_PUBLISH, "publish", &b, "table nesting is too deep");
}

static void test_refusals_publish(void **st)
{
    (void)st;
    struct cbuf b;
    static const struct {
        const char *key;
        int type; /* 0 uint 5, 1 text, 2 uint 256, 3 uint 3, 4 negint -1, 5 bytes */
        const char *want;
    } cases[] = {
        {"exchange", 0, "exchange must be text"},
        {"exchange", 5, "exchange must be text"},
        {"routing_key", 0, "routing_key must be text"},
        {"body", 0, "body must be a byte string (or text)"},
        {"mandatory", 0, "mandatory must be a boolean"},
        {"persistent", 1, "persistent must be a boolean"},
        {"delivery_mode", 3, "delivery_mode must be 1 (transient) or 2 (persistent)"},
        {"priority", 2, "priority must be an integer 0..255"},
        {"priority", 4, "priority must be an integer 0..255"},
        {"timestamp", 4, "timestamp must be a non-negative integer (seconds since the epoch)"},
        {"expiration", 4, "expiration must not be negative"},
        {"content_type", 0, "message properties must be text (see docs/protocol.md)"},
        {"headers", 1, "a table must be a map"},
        {"colour", 1, "unknown key 'colour' in publish args"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        map(&b, 2);
        if (strcmp(cases[i].key, "body") != 0) {
            cbuf_str(&b, "body");
            cbuf_str(&b, "x");
        } else {
            cbuf_str(&b, "exchange");
            cbuf_str(&b, "");
        }
        cbuf_str(&b, cases[i].key);
        switch (cases[i].type) {
        case 0: cbuf_uint(&b, 5); break;
        case 1: cbuf_str(&b, "t"); break;
        case 2: cbuf_uint(&b, 256); break;
        case 3: cbuf_uint(&b, 3); break;
        case 4: cbuf_int(&b, -1); break;
        default: cbuf_bytes(&b, "b", 1); break;
        }
        bad(MQ_OP_PUBLISH, "publish", &b, cases[i].want);
    }
    bad(MQ_OP_PUBLISH, "publish", one(&b, "exchange", "ex"), "publish needs a body");
    map(&b, 1);
    cbuf_uint(&b, 1);
    cbuf_str(&b, "x");
    bad(MQ_OP_PUBLISH, "publish", &b, "publish args keys must be text");

    char longkey[256];
    memset(longkey, 'r', sizeof(longkey));
    map(&b, 2);
    cbuf_str(&b, "body");
    cbuf_str(&b, "x");
    cbuf_str(&b, "routing_key");
    cbuf_text(&b, longkey, sizeof(longkey));
    bad(MQ_OP_PUBLISH, "publish", &b, "routing keys are at most 255 bytes");
    map(&b, 2);
    cbuf_str(&b, "body");
    cbuf_str(&b, "x");
    cbuf_str(&b, "app_id");
    cbuf_text(&b, longkey, sizeof(longkey));
    bad(MQ_OP_PUBLISH, "publish", &b, "message properties are at most 255 bytes");

    /* Larger than the limit: too_large, not bad_request. */
    static uint8_t big[MQ_ARGS_MAX_BODY + 1];
    map(&b, 1);
    cbuf_str(&b, "body");
    cbuf_bytes(&b, big, sizeof(big));
    refused(MQ_OP_PUBLISH, "publish", &b, FE_TOO_LARGE, "body is larger than the broker's limit");
}

static void test_refusals_batch_delayed(void **st)
{
    (void)st;
    struct cbuf b;
    const char *nonempty = "messages must be a non-empty array of publish args";
    bad(MQ_OP_PUBLISH_BATCH, "publish.batch", map(&b, 0), nonempty);
    map(&b, 1);
    cbuf_str(&b, "messages");
    cbuf_array(&b, 0);
    bad(MQ_OP_PUBLISH_BATCH, "publish.batch", &b, nonempty);
    bad(MQ_OP_PUBLISH_BATCH, "publish.batch", one(&b, "messages", "m"), nonempty);
    map(&b, 1);
    cbuf_str(&b, "messages");
    cbuf_array(&b, 10001);
    for (int i = 0; i < 10001; i++)
        cbuf_null(&b);
    bad(MQ_OP_PUBLISH_BATCH, "publish.batch", &b, "at most 10000 messages in one batch");
    map(&b, 1);
    cbuf_str(&b, "messages");
    cbuf_array(&b, 1);
    cbuf_null(&b);
    bad(MQ_OP_PUBLISH_BATCH, "publish.batch", &b, "publish args must be a map");
    map(&b, 1);
    cbuf_str(&b, "messages");
    cbuf_array(&b, 1);
    cbuf_map(&b, 1);
    cbuf_str(&b, "colour");
    cbuf_str(&b, "red");
    bad(MQ_OP_PUBLISH_BATCH, "publish.batch", &b, "unknown key 'colour' in publish.batch message args");
    map(&b, 2);
    cbuf_str(&b, "transactional");
    cbuf_bool(&b, true);
    cbuf_str(&b, "messages");
    cbuf_array(&b, 1);
    cbuf_map(&b, 2);
    cbuf_str(&b, "body");
    cbuf_str(&b, "x");
    cbuf_str(&b, "mandatory");
    cbuf_bool(&b, true);
    bad(MQ_OP_PUBLISH_BATCH, "publish.batch", &b,
        "mandatory messages cannot be published in a transaction: the broker commits a transaction whose "
        "messages reached no queue, so all-or-nothing could not hold");

    const char *delay = "delay_ms must be a positive number of milliseconds (at most a week)";
    bad(MQ_OP_PUBLISH_DELAYED, "publish.delayed", one(&b, "body", "x"), delay);
    uint64_t delays[] = {0, 86400000ull * 7 + 1};
    for (size_t i = 0; i < 2; i++) {
        map(&b, 2);
        cbuf_str(&b, "body");
        cbuf_str(&b, "x");
        cbuf_str(&b, "delay_ms");
        cbuf_uint(&b, delays[i]);
        bad(MQ_OP_PUBLISH_DELAYED, "publish.delayed", &b, delay);
    }
    map(&b, 3);
    cbuf_str(&b, "body");
    cbuf_str(&b, "x");
    cbuf_str(&b, "delay_ms");
    cbuf_uint(&b, 10);
    cbuf_str(&b, "mandatory");
    cbuf_bool(&b, true);
    bad(MQ_OP_PUBLISH_DELAYED, "publish.delayed", &b, "a delayed message cannot be mandatory");
}

static void test_refusals_consume(void **st)
{
    (void)st;
    struct cbuf b;
    uint64_t prefetch[] = {0, 65536};
    for (size_t i = 0; i < 2; i++) {
        map(&b, 2);
        cbuf_str(&b, "queue");
        cbuf_str(&b, "q");
        cbuf_str(&b, "prefetch");
        cbuf_uint(&b, prefetch[i]);
        bad(MQ_OP_CONSUME, "consume", &b, "prefetch must be 1..65535");
    }
    bad(MQ_OP_ACK, "ack", map(&b, 0), "sub (the id of the consume request) is required");
    bad(MQ_OP_ACK, "ack", one(&b, "sub", "5"), "sub (the id of the consume request) is required");
    map(&b, 2);
    cbuf_str(&b, "sub");
    cbuf_uint(&b, 6);
    cbuf_str(&b, "delivery_tag");
    cbuf_uint(&b, 1);
    bad(MQ_OP_ACK, "ack", &b, "no such subscription on this connection");
    map(&b, 1);
    cbuf_str(&b, "sub");
    cbuf_uint(&b, 5);
    bad(MQ_OP_NACK, "nack", &b, "delivery_tag is required");
    map(&b, 3);
    cbuf_str(&b, "sub");
    cbuf_uint(&b, 5);
    cbuf_str(&b, "delivery_tag");
    cbuf_uint(&b, 1);
    cbuf_str(&b, "multiple");
    cbuf_bool(&b, true);
    bad(MQ_OP_REJECT, "reject", &b, "unknown key 'multiple' in reject args");
    map(&b, 1);
    cbuf_str(&b, "sub");
    cbuf_uint(&b, 6);
    bad(MQ_OP_CANCEL, "cancel", &b, "no such subscription on this connection");
}

/* ---- field tables both ways ---- */

/* Every CBOR type a table takes comes back out as it went in. */
static void test_table_round_trip(void **st)
{
    (void)st;
    struct cbuf in, out;
    cbuf_init(&in);
    cbuf_map(&in, 9);
    cbuf_str(&in, "text");
    cbuf_str(&in, "héllo");
    cbuf_str(&in, "bytes");
    cbuf_bytes(&in, "\x00\xff", 2);
    cbuf_str(&in, "uint");
    cbuf_uint(&in, 1u << 20);
    cbuf_str(&in, "negint");
    cbuf_int(&in, -300);
    cbuf_str(&in, "bool");
    cbuf_bool(&in, true);
    cbuf_str(&in, "null");
    cbuf_null(&in);
    cbuf_str(&in, "float");
    cbuf_double(&in, 2.5);
    cbuf_str(&in, "array");
    cbuf_array(&in, 2);
    cbuf_uint(&in, 1);
    cbuf_str(&in, "two");
    cbuf_str(&in, "table");
    cbuf_map(&in, 1);
    cbuf_str(&in, "inner");
    cbuf_bool(&in, false);

    amqp_pool_t pool;
    init_amqp_pool(&pool, 1024);
    amqp_table_t t;
    struct cursor c = {.buf = in.data, .len = in.len, .pos = 0};
    assert_null(mq_args_table(&c, &t, &pool));
    assert_int_equal(c.pos, in.len);
    assert_int_equal(t.num_entries, 9);
    static const uint8_t kinds[] = {AMQP_FIELD_KIND_UTF8, AMQP_FIELD_KIND_BYTES, AMQP_FIELD_KIND_I64,
                                    AMQP_FIELD_KIND_I64, AMQP_FIELD_KIND_BOOLEAN, AMQP_FIELD_KIND_VOID,
                                    AMQP_FIELD_KIND_F64, AMQP_FIELD_KIND_ARRAY, AMQP_FIELD_KIND_TABLE};
    for (int i = 0; i < 9; i++)
        assert_int_equal(t.entries[i].value.kind, kinds[i]);
    assert_int_equal(t.entries[3].value.value.i64, -300);
    assert_true(t.entries[6].value.value.f64 == 2.5);

    cbuf_init(&out);
    mq_props_table(&out, &t);
    assert_int_equal(out.len, in.len);
    assert_memory_equal(out.data, in.data, in.len);
    cbuf_free(&out);
    cbuf_free(&in);
    empty_amqp_pool(&pool);
}

/* What only AMQP has: narrow integers, timestamps, decimals, 32-bit
 * floats, and text that is not UTF-8. */
static void test_table_from_amqp(void **st)
{
    (void)st;
    amqp_table_entry_t e[6];
    e[0].key = amqp_cstring_bytes("i8");
    e[0].value.kind = AMQP_FIELD_KIND_I8;
    e[0].value.value.i8 = -5;
    e[1].key = amqp_cstring_bytes("u16");
    e[1].value.kind = AMQP_FIELD_KIND_U16;
    e[1].value.value.u16 = 60000;
    e[2].key = amqp_cstring_bytes("ts");
    e[2].value.kind = AMQP_FIELD_KIND_TIMESTAMP;
    e[2].value.value.u64 = 1700000000;
    e[3].key = amqp_cstring_bytes("dec");
    e[3].value.kind = AMQP_FIELD_KIND_DECIMAL;
    e[3].value.value.decimal.decimals = 2;
    e[3].value.value.decimal.value = 125;
    e[4].key = amqp_cstring_bytes("f32");
    e[4].value.kind = AMQP_FIELD_KIND_F32;
    e[4].value.value.f32 = 0.5f;
    e[5].key = amqp_cstring_bytes("latin1");
    e[5].value.kind = AMQP_FIELD_KIND_UTF8;
    e[5].value.value.bytes = amqp_cstring_bytes("caf\xe9");
    amqp_table_t t = {.num_entries = 6, .entries = e};

    struct cbuf want, out;
    cbuf_init(&want);
    cbuf_map(&want, 6);
    cbuf_str(&want, "i8");
    cbuf_int(&want, -5);
    cbuf_str(&want, "u16");
    cbuf_uint(&want, 60000);
    cbuf_str(&want, "ts");
    cbuf_uint(&want, 1700000000);
    cbuf_str(&want, "dec");
    cbuf_double(&want, 1.25);
    cbuf_str(&want, "f32");
    cbuf_double(&want, 0.5);
    cbuf_str(&want, "latin1");
    cbuf_bytes(&want, "caf\xe9", 4);
    cbuf_init(&out);
    mq_props_table(&out, &t);
    assert_int_equal(out.len, want.len);
    assert_memory_equal(out.data, want.data, want.len);
    cbuf_free(&out);
    cbuf_free(&want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exchange_ops),
        cmocka_unit_test(test_queue_ops),
        cmocka_unit_test(test_publish_ops),
        cmocka_unit_test(test_consume_ops),
        cmocka_unit_test(test_refusals_common),
        cmocka_unit_test(test_refusals_topology),
        cmocka_unit_test(test_refusals_tables),
        cmocka_unit_test(test_refusals_publish),
        cmocka_unit_test(test_refusals_batch_delayed),
        cmocka_unit_test(test_refusals_consume),
        cmocka_unit_test(test_table_round_trip),
        cmocka_unit_test(test_table_from_amqp),
    };
    return cmocka_run_group_tests_name("mq_args", tests, NULL, NULL);
}
