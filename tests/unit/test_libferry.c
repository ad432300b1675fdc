/* Unit tests: libferry's frame builders and decoder, checked against the
 * daemon's own codec (the two sides must agree byte for byte). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <cbor.h>

#include "codec.h"
#include "errors.h"
#include "ferry.h"
#include "frame.h"

static const struct codec_limits LIM = {.max_depth = 32, .max_items = 1000};

static void test_redis_frame_decodes_in_daemon(void **st)
{
    (void)st;
    uint8_t buf[256];
    const char *argv[] = {"SET", "k", "v\0x"};
    size_t lens[] = {3, 1, 3};
    size_t n = ferry_frame_redis(buf, sizeof(buf), 77, 3, argv, lens, 1500);
    assert_true(n > 4);
    size_t body;
    assert_int_equal(frame_next(buf, n, 1 << 20, &body), (long)n);
    struct req_view v;
    const char *why;
    assert_int_equal(codec_decode_request(buf + 4, body, &LIM, &v, &why), 0);
    assert_int_equal(v.id, 77);
    assert_int_equal(v.op_len, 5);
    assert_memory_equal(v.op, "redis", 5);
    assert_true(v.has_deadline);
    assert_int_equal(v.deadline_ms, 1500);
    assert_non_null(v.args);
    /* Too small a buffer is refused, not overrun. */
    assert_int_equal(ferry_frame_redis(buf, 10, 77, 3, argv, lens, 0), 0);
}

static void test_request_frame(void **st)
{
    (void)st;
    uint8_t buf[64];
    size_t n = ferry_frame_request(buf, sizeof(buf), 1, "ping", NULL, 0, 0);
    static const uint8_t want[] = {0, 0, 0, 0x0d, 0xa2, 0x62, 'i', 'd', 0x01, 0x62, 'o', 'p',
                                   0x64, 'p', 'i', 'n', 'g'};
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
}

static void test_decode_response_error_push(void **st)
{
    (void)st;
    struct cbuf out;
    cbuf_init(&out);
    uint8_t result[] = {0x43, 'a', 'b', 'c'};
    codec_result_frame(&out, 5, result, sizeof(result));
    ferry_msg_t *m;
    assert_int_equal(ferry_msg_decode(out.data + 4, out.len - 4, &m), 0);
    assert_int_equal(m->kind, FERRY_RESPONSE);
    assert_true(m->has_id);
    assert_int_equal(m->id, 5);
    assert_null(m->err_code);
    assert_true(cbor_isa_bytestring(m->result));
    ferry_msg_free(m);

    out.len = 0;
    codec_error_frame(&out, false, 0, FE_OVERLOADED, "too many clients");
    assert_int_equal(ferry_msg_decode(out.data + 4, out.len - 4, &m), 0);
    assert_false(m->has_id);
    assert_string_equal(m->err_code, "overloaded");
    assert_string_equal(m->err_message, "too many clients");
    ferry_msg_free(m);

    out.len = 0;
    codec_push_frame(&out, 12, "message", result, sizeof(result), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_int_equal(ferry_msg_decode(out.data + 4, out.len - 4, &m), 0);
    assert_int_equal(m->kind, FERRY_PUSH);
    assert_int_equal(m->sub, 12);
    assert_string_equal(m->push_kind, "message");
    assert_string_equal(m->traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_true(cbor_isa_bytestring(m->data));
    ferry_msg_free(m);

    assert_int_equal(ferry_msg_decode((const uint8_t *)"\x83\x01\x02\x03", 4, &m), FERRY_EPROTO);
    assert_int_equal(ferry_msg_decode((const uint8_t *)"\xa1", 1, &m), FERRY_EPROTO);
    cbuf_free(&out);
}

/* ---- views: frames read in place ---- */

static const char TP[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/* A delivery's data as ferryd writes it (amqp_message_to_cbor's layout). */
static size_t delivery_data(uint8_t *b, uint64_t tag, const char *body)
{
    struct cbuf c;
    cbuf_init(&c);
    cbuf_map(&c, 6);
    cbuf_str(&c, "exchange");
    cbuf_str(&c, "");
    cbuf_str(&c, "routing_key");
    cbuf_str(&c, "q");
    cbuf_str(&c, "body");
    cbuf_bytes(&c, (const uint8_t *)body, strlen(body));
    cbuf_str(&c, "properties");
    cbuf_map(&c, 1);
    cbuf_str(&c, "delivery_mode");
    cbuf_uint(&c, 2);
    cbuf_str(&c, "delivery_tag");
    cbuf_uint(&c, tag);
    cbuf_str(&c, "redelivered");
    cbuf_bool(&c, false);
    size_t n = c.len;
    memcpy(b, c.data, n);
    cbuf_free(&c);
    return n;
}

static void test_view_push_response_error(void **st)
{
    (void)st;
    struct cbuf out;
    cbuf_init(&out);
    uint8_t data[256];
    size_t dn = delivery_data(data, (3ull << 40) | 77, "hello");
    codec_push_frame(&out, 12, "delivery", data, dn, TP);
    ferry_view_t v;
    memset(&v, 0xee, sizeof(v));
    assert_int_equal(ferry_view_decode(out.data + 4, out.len - 4, &v), 0);
    assert_int_equal(v.kind, FERRY_PUSH);
    assert_false(v.has_id);
    assert_int_equal(v.sub, 12);
    assert_int_equal(v.push_kind_len, 8);
    assert_memory_equal(v.push_kind, "delivery", 8);
    assert_int_equal(v.traceparent_len, strlen(TP));
    assert_memory_equal(v.traceparent, TP, strlen(TP));
    assert_int_equal(v.data_len, dn);
    assert_memory_equal(v.data, data, dn);
    assert_ptr_equal(v.body, out.data + 4);
    assert_int_equal(v.body_len, out.len - 4);
    assert_null(v.result);
    assert_null(v.error);
    assert_null(v.reserved[0]);
    assert_null(v.reserved[3]);
    /* The fields a consumer reads, in place. */
    const uint8_t *p, *body;
    size_t pn, bn;
    uint64_t tag;
    int b;
    assert_int_equal(ferry_cbor_map_get(v.data, v.data_len, "body", &p, &pn), 0);
    assert_int_equal(ferry_cbor_bytes(p, pn, &body, &bn), 0);
    assert_int_equal(bn, 5);
    assert_memory_equal(body, "hello", 5);
    assert_int_equal(ferry_cbor_map_get(v.data, v.data_len, "delivery_tag", &p, &pn), 0);
    assert_int_equal(ferry_cbor_uint(p, pn, &tag), 0);
    assert_true(tag == ((3ull << 40) | 77));
    assert_int_equal(ferry_cbor_map_get(v.data, v.data_len, "redelivered", &p, &pn), 0);
    assert_int_equal(ferry_cbor_bool(p, pn, &b), 0);
    assert_false(b);
    assert_int_equal(ferry_cbor_map_get(v.data, v.data_len, "properties", &p, &pn), 0);
    const uint8_t *dm;
    size_t dmn;
    assert_int_equal(ferry_cbor_map_get(p, pn, "delivery_mode", &dm, &dmn), 0);
    assert_int_equal(ferry_cbor_uint(dm, dmn, &tag), 0);
    assert_int_equal(tag, 2);
    assert_int_equal(ferry_cbor_map_get(v.data, v.data_len, "priority", &p, &pn), FERRY_ENOENT);
    assert_string_equal(ferry_strerror(FERRY_ENOENT), "no such key");
    /* Wrong types are refused, not misread. */
    assert_int_equal(ferry_cbor_map_get(v.data, v.data_len, "body", &p, &pn), 0);
    assert_int_equal(ferry_cbor_uint(p, pn, &tag), FERRY_EPROTO);
    const char *s;
    assert_int_equal(ferry_cbor_text(p, pn, &s, &bn), FERRY_EPROTO);
    assert_int_equal(ferry_cbor_bool(p, pn, &b), FERRY_EPROTO);
    assert_int_equal(ferry_cbor_map_get(p, pn, "x", &p, &pn), FERRY_EPROTO);

    /* A response: the result's bytes. */
    out.len = 0;
    uint8_t result[] = {0x43, 'a', 'b', 'c'};
    codec_result_frame(&out, 5, result, sizeof(result));
    assert_int_equal(ferry_view_decode(out.data + 4, out.len - 4, &v), 0);
    assert_int_equal(v.kind, FERRY_RESPONSE);
    assert_true(v.has_id);
    assert_int_equal(v.id, 5);
    assert_int_equal(v.result_len, sizeof(result));
    assert_memory_equal(v.result, result, sizeof(result));
    assert_null(v.error);
    assert_null(v.err_code);
    assert_null(v.data);

    /* A connection-level error: no id, code and message in place. */
    out.len = 0;
    codec_error_frame(&out, false, 0, FE_OVERLOADED, "too many clients");
    assert_int_equal(ferry_view_decode(out.data + 4, out.len - 4, &v), 0);
    assert_int_equal(v.kind, FERRY_RESPONSE);
    assert_false(v.has_id);
    assert_null(v.result);
    assert_non_null(v.error);
    assert_int_equal(v.err_code_len, 10);
    assert_memory_equal(v.err_code, "overloaded", 10);
    assert_int_equal(v.err_message_len, 16);
    assert_memory_equal(v.err_message, "too many clients", 16);
    cbuf_free(&out);
}

/* Each frame must be refused with FERRY_EPROTO by both decoders. */
static void test_view_malformed(void **st)
{
    (void)st;
    static const struct {
        const char *b;
        size_t n;
    } bad[] = {
        {"", 0},
        {"\x83\x01\x02\x03", 4},                   /* an array */
        {"\xa1", 1},                               /* a map without its pair */
        {"\xa1\x63sub", 5},                        /* a key without its value */
        {"\xa1\x63sub\x01\x00", 7},                /* a byte after the map */
        {"\xbf\x63sub\x01\x62id\x01\xff", 11},     /* an indefinite-length frame map */
        {"\xa1\x62id\x01", 5},                     /* a response without result or error */
        {"\xa2\x62id\x01\x66result\x5a\xff\xff\xff\xff", 17}, /* a length past the end */
        {"\xa2\x62id\x01\x66result\x1c", 13},      /* a reserved head (28) */
        {"\xa2\x62id\x01\x66result\xff", 13},      /* a "break" outside an indefinite item */
        {"\xa2\x62id\x01\x66result\x9b\xff\xff\xff\xff\xff\xff\xff\xff\x00", 22}, /* a count past the end */
        {"\xa2\x62id\x01\x66result\xbb\x80\x00\x00\x00\x00\x00\x00\x00\x00", 22}, /* a pair count that would overflow */
        {"\xa2\x62id\x01\x66result\x5f\x41x\x61y\xff", 17}, /* a text chunk in a byte string */
        {"\xa2\x62id\x01\x66result\x5f\x41x", 15},  /* an indefinite string without its break */
        {"\xa2\x62id\x01\x66result\xbf\x01\xff", 15}, /* an indefinite map: a key without its value */
        {"\xa2\x62id\x01\x66result\x19\x01", 14},  /* a truncated integer */
        {"\xa2\x62id\x01\x66result\xc1", 13},      /* a tag without its item */
    };
    ferry_view_t v;
    ferry_msg_t *m;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ferry_view_decode((const uint8_t *)bad[i].b, bad[i].n, &v) != FERRY_EPROTO)
            fail_msg("view case %zu accepted", i);
        if (i > 0 && ferry_msg_decode((const uint8_t *)bad[i].b, bad[i].n, &m) == 0) {
            ferry_msg_free(m);
            fail_msg("tree case %zu accepted", i);
        }
    }
    /* Every cut of a good push frame is refused. */
    struct cbuf out;
    cbuf_init(&out);
    uint8_t data[256];
    size_t dn = delivery_data(data, 9, "x");
    codec_push_frame(&out, 1, "delivery", data, dn, NULL);
    for (size_t n = 0; n < out.len - 4; n++)
        if (ferry_view_decode(out.data + 4, n, &v) != FERRY_EPROTO)
            fail_msg("a push cut to %zu bytes accepted", n);
    assert_int_equal(ferry_view_decode(out.data + 4, out.len - 4, &v), 0);
    cbuf_free(&out);

    /* Indefinite items nest at most 64 deep; definite ones any depth. */
    uint8_t deep[300] = {0xa2, 0x62, 'i', 'd', 0x01, 0x66, 'r', 'e', 's', 'u', 'l', 't'};
    size_t k = 12;
    for (int i = 0; i < 100; i++)
        deep[k++] = 0x9f;
    for (int i = 0; i < 100; i++)
        deep[k++] = 0xff;
    assert_int_equal(ferry_view_decode(deep, k, &v), FERRY_EPROTO);
    k = 12;
    for (int i = 0; i < 60; i++)
        deep[k++] = 0x9f;
    for (int i = 0; i < 60; i++)
        deep[k++] = 0xff;
    assert_int_equal(ferry_view_decode(deep, k, &v), 0);
    k = 12;
    for (int i = 0; i < 200; i++)
        deep[k++] = 0x81;
    deep[k++] = 0x00;
    assert_int_equal(ferry_view_decode(deep, k, &v), 0);
    assert_int_equal(v.result_len, 201);
    /* Unknown keys, and keys that are not text, are passed over. */
    static const uint8_t extra[] = {0xa4, 0x01, 0x02, 0x65, 'l', 'a', 't', 'e', 'r', 0xf6,
                                    0x62, 'i', 'd', 0x07, 0x66, 'r', 'e', 's', 'u', 'l', 't', 0xf5};
    assert_int_equal(ferry_view_decode(extra, sizeof(extra), &v), 0);
    assert_int_equal(v.id, 7);
    assert_int_equal(v.result_len, 1);
    /* Bad arguments. */
    assert_int_equal(ferry_view_decode(NULL, 0, &v), FERRY_EINVAL);
    assert_int_equal(ferry_view_decode(extra, sizeof(extra), NULL), FERRY_EINVAL);
}

/* Mutated frames (bytes changed, cut short): each is either refused or
 * located within its bytes, and the readers stay within them too (this
 * test runs under AddressSanitizer in `make check-asan`). */
static void test_view_mutations(void **st)
{
    (void)st;
    struct cbuf out;
    cbuf_init(&out);
    uint8_t data[256];
    size_t dn = delivery_data(data, 123456789, "a message body");
    codec_push_frame(&out, 3, "delivery", data, dn, TP);
    size_t n = out.len - 4;
    uint32_t seed = 12345;
    int accepted = 0;
    for (int round = 0; round < 20000; round++) {
        uint8_t *b = malloc(n);
        memcpy(b, out.data + 4, n);
        int flips = 1 + round % 3;
        for (int k = 0; k < flips; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % n;
            seed = seed * 1103515245u + 12345u;
            b[at] = (uint8_t)(seed >> 16);
        }
        seed = seed * 1103515245u + 12345u;
        size_t len = round % 5 == 0 ? (seed >> 8) % (n + 1) : n;
        ferry_view_t v;
        if (ferry_view_decode(b, len, &v) == 0) {
            accepted++;
            assert_true(v.body == b && v.body_len == len);
            if (v.data) {
                assert_true(v.data >= b && v.data + v.data_len <= b + len);
                const uint8_t *p;
                size_t pn, sn;
                const uint8_t *s;
                uint64_t u;
                if (ferry_cbor_map_get(v.data, v.data_len, "body", &p, &pn) == 0) {
                    assert_true(p >= v.data && p + pn <= v.data + v.data_len);
                    if (ferry_cbor_bytes(p, pn, &s, &sn) == 0)
                        assert_true(s + sn <= p + pn);
                }
                if (ferry_cbor_map_get(v.data, v.data_len, "delivery_tag", &p, &pn) == 0)
                    (void)ferry_cbor_uint(p, pn, &u);
            }
            if (v.push_kind)
                assert_true(v.push_kind_len == 0 || ((const uint8_t *)v.push_kind >= b &&
                                                     (const uint8_t *)v.push_kind + v.push_kind_len <= b + len));
        }
        free(b);
    }
    assert_true(accepted > 0);
    cbuf_free(&out);
}

static void test_cbor_readers(void **st)
{
    (void)st;
    uint64_t u;
    size_t n;
    static const struct {
        const char *b;
        size_t n;
        uint64_t v;
    } uints[] = {
        {"\x17", 1, 23},
        {"\x18\x18", 2, 24},
        {"\x19\x01\x00", 3, 256},
        {"\x1a\x00\x01\x00\x00", 5, 65536},
        {"\x1b\x00\x00\x00\x01\x00\x00\x00\x00", 9, 1ull << 32},
        {"\x1b\xff\xff\xff\xff\xff\xff\xff\xff", 9, UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof(uints) / sizeof(uints[0]); i++) {
        assert_int_equal(ferry_cbor_uint((const uint8_t *)uints[i].b, uints[i].n, &u), 0);
        assert_true(u == uints[i].v);
        assert_int_equal(ferry_cbor_skip((const uint8_t *)uints[i].b, uints[i].n, &n), 0);
        assert_int_equal(n, uints[i].n);
        assert_int_equal(ferry_cbor_uint((const uint8_t *)uints[i].b, uints[i].n - 1, &u), FERRY_EPROTO);
    }
    assert_int_equal(ferry_cbor_uint((const uint8_t *)"\x20", 1, &u), FERRY_EPROTO); /* -1 */
    assert_int_equal(ferry_cbor_uint(NULL, 0, &u), FERRY_EPROTO);
    /* Strings, definite only for the readers; skip takes chunks too. */
    const char *s;
    const uint8_t *bs;
    assert_int_equal(ferry_cbor_text((const uint8_t *)"\x63" "abcdef", 7, &s, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "abc", 3);
    assert_int_equal(ferry_cbor_text((const uint8_t *)"\x63" "ab", 3, &s, &n), FERRY_EPROTO);
    assert_int_equal(ferry_cbor_bytes((const uint8_t *)"\x40", 1, &bs, &n), 0);
    assert_int_equal(n, 0);
    static const uint8_t chunks[] = {0x7f, 0x61, 'a', 0x62, 'b', 'c', 0xff, 0x00};
    assert_int_equal(ferry_cbor_text(chunks, sizeof(chunks), &s, &n), FERRY_EPROTO);
    assert_int_equal(ferry_cbor_skip(chunks, sizeof(chunks), &n), 0);
    assert_int_equal(n, 7);
    static const uint8_t imap[] = {0xbf, 0x61, 'k', 0x9f, 0x01, 0xff, 0x61, 'j', 0xc2, 0x41, 0x05, 0xff};
    assert_int_equal(ferry_cbor_skip(imap, sizeof(imap), &n), 0);
    assert_int_equal(n, sizeof(imap));
    const uint8_t *val;
    assert_int_equal(ferry_cbor_map_get(imap, sizeof(imap), "j", &val, &n), 0);
    assert_int_equal(n, 3); /* the tag and its byte string */
    assert_int_equal(ferry_cbor_map_get(imap, sizeof(imap), "z", &val, &n), FERRY_ENOENT);
    /* The first of repeated keys counts; a long key is compared in full. */
    static const uint8_t rep[] = {0xa3, 0x61, 'k', 0x01, 0x61, 'k', 0x02, 0x78, 0x18,
                                  'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l',
                                  'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 0x03};
    assert_int_equal(ferry_cbor_map_get(rep, sizeof(rep), "k", &val, &n), 0);
    assert_int_equal(val[0], 0x01);
    assert_int_equal(ferry_cbor_map_get(rep, sizeof(rep), "abcdefghijklmnopqrstuvwx", &val, &n), 0);
    assert_int_equal(val[0], 0x03);
    /* Floats, simple values, negative integers are skipped whole. */
    static const uint8_t misc[] = {0x86, 0xf9, 0x3c, 0x00, 0xfa, 0, 0, 0, 0, 0xfb, 0, 0, 0, 0, 0, 0, 0, 0,
                                   0xf8, 0x20, 0x38, 0x63, 0xf6};
    assert_int_equal(ferry_cbor_skip(misc, sizeof(misc), &n), 0);
    assert_int_equal(n, sizeof(misc));
    assert_int_equal(ferry_cbor_skip(misc, sizeof(misc) - 1, &n), FERRY_EPROTO);
    int b;
    assert_int_equal(ferry_cbor_bool((const uint8_t *)"\xf5", 1, &b), 0);
    assert_true(b);
    assert_int_equal(ferry_cbor_bool((const uint8_t *)"\xf6", 1, &b), FERRY_EPROTO);
    assert_int_equal(ferry_cbor_skip(NULL, 0, &n), FERRY_EINVAL);
}

/* ---- views over a socket: a fake ferryd on the other end ---- */

struct pair {
    char dir[64], path[100];
    int lfd, srv;
    ferry_t *f;
};

static void pair_open(struct pair *p)
{
    snprintf(p->dir, sizeof(p->dir), "/tmp/libferry-unit-XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->path, sizeof(p->path), "%s/s", p->dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->path);
    p->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(p->lfd >= 0);
    assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(p->lfd, 1), 0);
    int err;
    p->f = ferry_connect(p->path, &err);
    assert_non_null(p->f);
    p->srv = accept(p->lfd, NULL, NULL);
    assert_true(p->srv >= 0);
}

static void pair_close(struct pair *p)
{
    ferry_close(p->f);
    if (p->srv >= 0)
        close(p->srv);
    close(p->lfd);
    unlink(p->path);
    rmdir(p->dir);
}

static void put(struct pair *p, const void *b, size_t n)
{
    assert_int_equal(write(p->srv, b, n), (ssize_t)n);
}

static void test_recv_view_socket(void **st)
{
    (void)st;
    struct pair p;
    pair_open(&p);
    ferry_view_t v;
    assert_int_equal(ferry_recv_view(p.f, &v, 20), FERRY_ETIMEDOUT);

    /* 1000 pushes in one write: each comes out in order, in place. */
    struct cbuf out;
    cbuf_init(&out);
    uint8_t data[256];
    for (uint64_t i = 1; i <= 1000; i++) {
        size_t dn = delivery_data(data, i, "body");
        codec_push_frame(&out, 4, "delivery", data, dn, NULL);
    }
    put(&p, out.data, out.len);
    for (uint64_t i = 1; i <= 1000; i++) {
        assert_int_equal(ferry_recv_view(p.f, &v, 1000), 0);
        assert_int_equal(v.kind, FERRY_PUSH);
        assert_null(v.traceparent);
        const uint8_t *t;
        size_t tn;
        uint64_t tag;
        assert_int_equal(ferry_cbor_map_get(v.data, v.data_len, "delivery_tag", &t, &tn), 0);
        assert_int_equal(ferry_cbor_uint(t, tn, &tag), 0);
        assert_int_equal(tag, i);
    }
    assert_int_equal(ferry_recv_view(p.f, &v, 0), FERRY_ETIMEDOUT);

    /* A frame split across writes, and one larger than a read (200 KiB). */
    out.len = 0;
    uint8_t *big = malloc(200 * 1024);
    memset(big, 'b', 200 * 1024);
    big[0] = 0x5a, big[1] = 0x00, big[2] = 0x03, big[3] = 0x1f, big[4] = 0xfb; /* bytes(200 KiB - 5) */
    codec_result_frame(&out, 9, big, 200 * 1024);
    put(&p, out.data, 3);
    assert_int_equal(ferry_recv_view(p.f, &v, 20), FERRY_ETIMEDOUT);
    put(&p, out.data + 3, 70000);
    assert_int_equal(ferry_recv_view(p.f, &v, 20), FERRY_ETIMEDOUT);
    put(&p, out.data + 70003, out.len - 70003);
    assert_int_equal(ferry_recv_view(p.f, &v, 1000), 0);
    assert_int_equal(v.id, 9);
    assert_int_equal(v.result_len, 200 * 1024);
    assert_memory_equal(v.result, big, 200 * 1024);
    free(big);

    /* A malformed frame is refused and skipped; the next one still comes. */
    static const uint8_t junk[] = {0, 0, 0, 2, 0x83, 0x01, 0, 0, 0, 13,
                                   0xa2, 0x62, 'i', 'd', 0x03, 0x66, 'r', 'e', 's', 'u', 'l', 't', 0xf6};
    put(&p, junk, 5);
    assert_int_equal(ferry_recv_view(p.f, &v, 20), FERRY_ETIMEDOUT);
    put(&p, junk + 5, sizeof(junk) - 5);
    assert_int_equal(ferry_recv_view(p.f, &v, 1000), FERRY_EPROTO);
    assert_int_equal(ferry_recv_view(p.f, &v, 1000), 0);
    assert_int_equal(v.id, 3);
    assert_int_equal(v.result_len, 1);
    /* The daemon going away is ECLOSED. */
    close(p.srv);
    p.srv = -1;
    assert_int_equal(ferry_recv_view(p.f, &v, 1000), FERRY_ECLOSED);
    cbuf_free(&out);
    pair_close(&p);
}

static int pushes_seen;
static void count_push(const ferry_view_t *v, void *arg)
{
    assert_int_equal(v->kind, FERRY_PUSH);
    assert_int_equal(v->sub, (uintptr_t)arg);
    pushes_seen++;
}

static void test_recv_view_parking_and_sending(void **st)
{
    (void)st;
    struct pair p;
    pair_open(&p);
    /* ferry_send_cbor writes the same frame as ferry_frame_request. */
    static const uint8_t args[] = {0xa1, 0x63, 's', 'u', 'b', 0x04};
    uint64_t id;
    assert_int_equal(ferry_send_cbor(p.f, "ack", args, sizeof(args), 0, &id), 0);
    assert_int_equal(id, 1);
    uint8_t want[64], got[64];
    size_t wn = ferry_frame_request(want, sizeof(want), 1, "ack", args, sizeof(args), 0);
    assert_int_equal(read(p.srv, got, sizeof(got)), (ssize_t)wn);
    assert_memory_equal(got, want, wn);
    assert_int_equal(ferry_send_cbor(p.f, "ping", NULL, 0, 0, &id), 0);
    wn = ferry_frame_request(want, sizeof(want), 2, "ping", NULL, 0, 0);
    assert_int_equal(read(p.srv, got, sizeof(got)), (ssize_t)wn);
    assert_memory_equal(got, want, wn);
    assert_int_equal(ferry_send_cbor(p.f, "ping", args, 0, 0, &id), FERRY_EINVAL);

    /* ferry_call() parks what comes before its answer; views and trees
     * then take the parked frames in order. */
    struct cbuf out;
    cbuf_init(&out);
    uint8_t data[256];
    size_t dn = delivery_data(data, 1, "first");
    codec_push_frame(&out, 4, "delivery", data, dn, NULL);
    uint8_t r[] = {0x41, 'x'};
    codec_result_frame(&out, 4, r, sizeof(r)); /* answers id 4, sent below */
    dn = delivery_data(data, 2, "second");
    codec_push_frame(&out, 4, "delivery", data, dn, NULL);
    codec_result_frame(&out, 3, r, sizeof(r)); /* answers the call */
    put(&p, out.data, out.len);
    uint64_t id4;
    assert_int_equal(ferry_send_cbor(p.f, "x", NULL, 0, 0, &id), 0); /* id 3 */
    assert_int_equal(ferry_send_cbor(p.f, "y", NULL, 0, 0, &id4), 0); /* id 4 */
    assert_int_equal(id4, 4);
    ferry_msg_t *m;
    /* The call (id 5) gets no answer: it parks all four frames. */
    assert_int_equal(ferry_call(p.f, "ping", NULL, 0, &m, 50), FERRY_ETIMEDOUT);
    ferry_view_t v;
    assert_int_equal(ferry_recv_view(p.f, &v, 0), 0);
    assert_int_equal(v.kind, FERRY_PUSH);
    assert_int_equal(ferry_recv(p.f, &m, 0), 0);
    assert_int_equal(m->kind, FERRY_RESPONSE);
    assert_int_equal(m->id, 4);
    ferry_msg_free(m);
    assert_int_equal(ferry_recv_view(p.f, &v, 0), 0);
    const uint8_t *t;
    size_t tn;
    const uint8_t *body;
    size_t bn;
    assert_int_equal(ferry_cbor_map_get(v.data, v.data_len, "body", &t, &tn), 0);
    assert_int_equal(ferry_cbor_bytes(t, tn, &body, &bn), 0);
    assert_int_equal(bn, 6);
    assert_memory_equal(body, "second", 6);
    assert_int_equal(ferry_recv_view(p.f, &v, 0), 0);
    assert_int_equal(v.id, 3);
    assert_int_equal(ferry_recv_view(p.f, &v, 0), FERRY_ETIMEDOUT);

    /* A view handler takes pushes, also while ferry_call() waits. */
    ferry_set_push_view_handler(p.f, count_push, (void *)(uintptr_t)4);
    out.len = 0;
    codec_push_frame(&out, 4, "delivery", data, dn, NULL);
    codec_push_frame(&out, 4, "delivery", data, dn, NULL);
    codec_result_frame(&out, 6, r, sizeof(r));
    codec_push_frame(&out, 4, "delivery", data, dn, NULL);
    codec_result_frame(&out, 7, r, sizeof(r));
    put(&p, out.data, out.len);
    assert_int_equal(ferry_call(p.f, "ping", NULL, 0, &m, 1000), 0); /* id 6 */
    assert_int_equal(m->id, 6);
    ferry_msg_free(m);
    assert_int_equal(pushes_seen, 2);
    assert_int_equal(ferry_recv_view(p.f, &v, 1000), 0);
    assert_int_equal(v.id, 7);
    assert_int_equal(pushes_seen, 3);
    cbuf_free(&out);
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_frame_decodes_in_daemon),
        cmocka_unit_test(test_request_frame),
        cmocka_unit_test(test_decode_response_error_push),
        cmocka_unit_test(test_view_push_response_error),
        cmocka_unit_test(test_view_malformed),
        cmocka_unit_test(test_view_mutations),
        cmocka_unit_test(test_cbor_readers),
        cmocka_unit_test(test_recv_view_socket),
        cmocka_unit_test(test_recv_view_parking_and_sending),
    };
    return cmocka_run_group_tests_name("libferry", tests, NULL, NULL);
}
