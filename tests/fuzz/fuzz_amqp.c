/* Fuzz target: the AMQP backend's two converters, both ways.
 *
 * The first byte picks the direction. Its top bit clear: a client's args
 * for one AMQP op (the low bits pick which), framed as a request and
 * decoded by the codec exactly as the request path does, then converted
 * by mq_args.c; an accepted command's tables and properties are written
 * back as CBOR (mq_props.c), and its tables go through rabbitmq-c's
 * encoder and decoder and must come back the same. Top bit set: what a
 * broker sends, decoded by rabbitmq-c's own decoders (basic properties, or
 * a field table when bit 6 is set too) and written as CBOR by mq_props.c.
 *
 * Properties: no crash, overread or leak (ASan, LSan), and every CBOR
 * written is exactly one well-formed item (libcbor's cbor_load). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <cbor.h>

#include "cbuf.h"
#include "codec.h"
#include "mq_args.h"
#include "mq_cmd.h"
#include "mq_props.h"

static const char *const op_names[] = {
    NULL, "exchange.declare", "exchange.delete", "queue.declare", "queue.bind", "queue.unbind",
    "queue.purge", "queue.delete", "publish", "publish.batch", "publish.delayed", "consume", "ack",
    "nack", "reject", "cancel", "get", "rpc",
};
#define NOPS (sizeof(op_names) / sizeof(op_names[0]) - 1)

/* The client's subscriptions are 1..7, consumers 101..107. */
static bool find_sub(void *ctx, uint64_t sub, uint64_t *consumer)
{
    (void)ctx;
    if (sub < 1 || sub > 7)
        return false;
    *consumer = 100 + sub;
    return true;
}

/* b holds exactly one well-formed CBOR item. */
static void check_cbor(const struct cbuf *b)
{
    struct cbor_load_result r;
    cbor_item_t *item = cbor_load(b->data, b->len, &r);
    assert(item != NULL && r.error.code == CBOR_ERR_NONE && r.read == b->len);
    cbor_decref(&item);
}

/* A table made by mq_args.c as CBOR, then through rabbitmq-c's wire form
 * and back: the broker must be sent what the client wrote. */
static void check_table(const amqp_table_t *t)
{
    struct cbuf a, b;
    cbuf_init(&a);
    cbuf_init(&b);
    mq_props_table(&a, t);
    check_cbor(&a);

    size_t cap = 1 << 20;
    void *wire = malloc(cap);
    size_t len = 0;
    if (amqp_encode_table((amqp_bytes_t){.len = cap, .bytes = wire}, (amqp_table_t *)t, &len) == AMQP_STATUS_OK) {
        amqp_pool_t pool;
        init_amqp_pool(&pool, 4096);
        amqp_table_t back;
        size_t off = 0;
        int rc = amqp_decode_table((amqp_bytes_t){.len = len, .bytes = wire}, &pool, &back, &off);
        assert(rc == AMQP_STATUS_OK && off == len);
        mq_props_table(&b, &back);
        assert(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
        empty_amqp_pool(&pool);
    }
    free(wire);
    cbuf_free(&a);
    cbuf_free(&b);
}

static void check_cmd(const struct mq_cmd *c)
{
    check_table(&c->arguments);
    struct cbuf out;
    cbuf_init(&out);
    for (size_t i = 0; i < c->nmsgs; i++) {
        const struct mq_msg *m = &c->msgs[i];
        if (m->props._flags & AMQP_BASIC_HEADERS_FLAG)
            check_table(&m->props.headers);
        amqp_message_t msg = {.properties = m->props, .body = m->body};
        out.len = 0;
        mq_props_message(&out, &m->exchange, &m->routing_key, &msg, 0, NULL, 0);
        check_cbor(&out);
    }
    cbuf_free(&out);
}

/* The client's side: args as one request's "args", through the codec. */
static void client_args(uint8_t sel, const uint8_t *args, size_t n)
{
    enum mq_op op = (enum mq_op)(1 + sel % NOPS);
    struct cbuf req;
    cbuf_init(&req);
    cbuf_map(&req, 3);
    cbuf_str(&req, "id");
    cbuf_uint(&req, 1);
    cbuf_str(&req, "op");
    cbuf_str(&req, op_names[op]);
    cbuf_str(&req, "args");
    cbuf_put(&req, args, n);
    /* The codec's limits at their defaults (base/config.c). */
    struct codec_limits lim = {.max_depth = 32, .max_items = 262144};
    struct req_view v;
    const char *why = NULL;
    if (codec_decode_request(req.data, req.len, &lim, &v, &why) == 0 && v.args) {
        struct mq_args_ctx ctx = {.op_name = op_names[op], .deadline = 1, .default_prefetch = 100,
                                  .client_id = 9, .find_sub = find_sub, .ctx = NULL};
        int code = 0;
        char msg[256];
        struct mq_cmd *c = mq_args_build(op, v.args, v.args_len, &ctx, &code, msg, sizeof(msg));
        if (c) {
            check_cmd(c);
            mq_cmd_free(c);
        } else {
            assert(code != 0 && msg[0] != '\0');
            /* The message goes out as CBOR text. */
            assert(utf8_valid((const uint8_t *)msg, strlen(msg)));
        }
    }
    cbuf_free(&req);
}

/* The broker's side: bytes as rabbitmq-c decodes them off the wire. */
static void broker_bytes(uint8_t sel, const uint8_t *p, size_t n)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    struct cbuf out;
    cbuf_init(&out);
    amqp_bytes_t in = {.len = n, .bytes = (void *)p};
    if (sel & 0x40) {
        amqp_table_t t;
        size_t off = 0;
        if (amqp_decode_table(in, &pool, &t, &off) == AMQP_STATUS_OK) {
            mq_props_table(&out, &t);
            check_cbor(&out);
        }
    } else {
        void *decoded = NULL;
        if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, in, &decoded) == AMQP_STATUS_OK) {
            amqp_message_t m = {.properties = *(amqp_basic_properties_t *)decoded,
                                .body = {.len = n / 2, .bytes = (void *)p}};
            /* Names as the broker may send them: any bytes, UTF-8 or not. */
            amqp_bytes_t ex = {.len = n % 7, .bytes = (void *)p};
            amqp_bytes_t rk = {.len = n % 5, .bytes = (void *)(p + n - n % 5)};
            struct cbuf extra;
            cbuf_init(&extra);
            cbuf_str(&extra, "delivery_tag");
            cbuf_uint(&extra, n);
            mq_props_message(&out, &ex, &rk, &m, 1, extra.data, extra.len);
            check_cbor(&out);
            cbuf_free(&extra);
        }
    }
    cbuf_free(&out);
    empty_amqp_pool(&pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* A private copy, so that ASan sees any read past the end. */
    uint8_t *buf = malloc(size - 1 ? size - 1 : 1);
    memcpy(buf, data + 1, size - 1);
    if (data[0] & 0x80)
        broker_bytes(data[0], buf, size - 1);
    else
        client_args(data[0], buf, size - 1);
    free(buf);
    return 0;
}
