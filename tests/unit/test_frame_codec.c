/* Unit tests: framing (frame.c) and request decoding / response encoding
 * (codec.c). Pure code, driven with byte buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cbor.h>

#include "codec.h"
#include "errors.h"
#include "frame.h"

static const struct codec_limits LIM = {.max_depth = 32, .max_items = 1000};

/* Serialises a libcbor item for a test. */
static size_t ser(cbor_item_t *it, unsigned char **out)
{
    size_t cap = 0;
    size_t n = cbor_serialize_alloc(it, out, &cap);
    cbor_decref(&it);
    return n;
}

static cbor_item_t *request(int with_id, const char *op, cbor_item_t *args)
{
    cbor_item_t *m = cbor_new_definite_map(6);
    if (with_id)
        assert_true(cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("id")),
                                                       cbor_move(cbor_build_uint32(7))}));
    if (op)
        assert_true(cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("op")),
                                                       cbor_move(cbor_build_string(op))}));
    if (args)
        assert_true(cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("args")),
                                                       cbor_move(args)}));
    return m;
}

static void test_frame_needs_more(void **st)
{
    (void)st;
    uint8_t b[] = {0, 0, 0, 5, 1, 2};
    size_t body;
    assert_int_equal(frame_next(b, 0, 100, &body), 0);
    assert_int_equal(frame_next(b, 3, 100, &body), 0);
    assert_int_equal(frame_next(b, sizeof(b), 100, &body), 0);
}

static void test_frame_whole(void **st)
{
    (void)st;
    uint8_t b[] = {0, 0, 0, 2, 0xA0, 0xA0, 0, 0};
    size_t body = 0;
    assert_int_equal(frame_next(b, sizeof(b), 100, &body), 6);
    assert_int_equal(body, 2);
}

static void test_frame_too_large(void **st)
{
    (void)st;
    uint8_t b[] = {0x7F, 0, 0, 0};
    size_t body;
    assert_int_equal(frame_next(b, 4, 1 << 20, &body), FE_TOO_LARGE);
    uint8_t ok[] = {0, 0x10, 0, 0};
    assert_int_equal(frame_next(ok, 4, 1 << 20, &body), 0); /* exactly max: wait for it */
}

static void test_decode_full_request(void **st)
{
    (void)st;
    cbor_item_t *args = cbor_new_definite_array(2);
    assert_true(cbor_array_push(args, cbor_move(cbor_build_bytestring((cbor_data) "GET", 3))));
    assert_true(cbor_array_push(args, cbor_move(cbor_build_bytestring((cbor_data) "k", 1))));
    cbor_item_t *m = request(1, "redis", args);
    assert_true(cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("deadline")),
                                                   cbor_move(cbor_build_uint16(250))}));
    assert_true(cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("traceparent")),
                                                   cbor_move(cbor_build_string("00-abc-def-01"))}));
    assert_true(cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("future")),
                                                   cbor_move(cbor_build_bool(true))}));
    unsigned char *buf;
    size_t n = ser(m, &buf);
    struct req_view v;
    const char *why = NULL;
    assert_int_equal(codec_decode_request(buf, n, &LIM, &v, &why), 0);
    assert_true(v.has_id);
    assert_int_equal(v.id, 7);
    assert_int_equal(v.op_len, 5);
    assert_memory_equal(v.op, "redis", 5);
    assert_true(v.has_deadline);
    assert_int_equal(v.deadline_ms, 250);
    assert_int_equal(v.traceparent_len, 13);
    assert_non_null(v.args);
    /* The args span is exactly the array item. */
    struct cursor c = {.buf = v.args, .len = v.args_len, .pos = 0};
    struct tok t;
    assert_int_equal(cursor_next(&c, &t), 0);
    assert_int_equal(t.type, TOK_ARRAY);
    assert_int_equal(t.u, 2);
    assert_int_equal(cursor_next(&c, &t), 0);
    assert_int_equal(t.type, TOK_BYTES);
    assert_memory_equal(t.p, "GET", 3);
    assert_int_equal(cursor_next(&c, &t), 0);
    assert_int_equal(c.pos, v.args_len);
    free(buf);
}

static int decode_hex(const char *hex, uint8_t *out)
{
    int n = 0;
    for (; hex[0] && hex[1]; hex += 2)
        out[n++] = (uint8_t)strtol((char[]){hex[0], hex[1], 0}, NULL, 16);
    return n;
}

/* Decodes hex and returns the code, checking why is set on failure. */
static int decode(const char *hex, struct req_view *v)
{
    uint8_t b[256];
    int n = decode_hex(hex, b);
    const char *why = NULL;
    int rc = codec_decode_request(b, (size_t)n, &LIM, v, &why);
    if (rc)
        assert_non_null(why);
    return rc;
}

static void test_decode_rejects(void **st)
{
    (void)st;
    struct req_view v;
    assert_int_equal(decode("", &v), FE_BAD_REQUEST);                       /* empty */
    assert_int_equal(decode("83010203", &v), FE_BAD_REQUEST);               /* array, not map */
    assert_int_equal(decode("a2626964", &v), FE_BAD_REQUEST);               /* truncated */
    assert_int_equal(decode("a1626f706470696e67", &v), FE_BAD_REQUEST);     /* no id */
    assert_int_equal(decode("a162696401", &v), FE_BAD_REQUEST);             /* no op */
    /* id as text */
    assert_int_equal(decode("a26269646178626f706470696e67", &v), FE_BAD_REQUEST);
    /* op as integer: {"id":1,"op":5} */
    assert_int_equal(decode("a262696401626f7005", &v), FE_BAD_REQUEST);
    assert_true(v.has_id); /* the id is still known, so the error can carry it */
    /* deadline 0 */
    assert_int_equal(decode("a362696401626f706470696e6768646561646c696e6500", &v), FE_BAD_REQUEST);
    /* trailing bytes */
    assert_int_equal(decode("a262696401626f706470696e6700", &v), FE_BAD_REQUEST);
    /* indefinite map */
    assert_int_equal(decode("bf62696401626f706470696e67ff", &v), FE_BAD_REQUEST);
    /* a billion-element array header with nothing behind it */
    assert_int_equal(decode("a362696401626f706470696e6764617267739a3b9aca00", &v), FE_BAD_REQUEST);
}

/* The request rules docs/protocol.md states: the deadline's range, an
 * integer id, and a stray 0xff named as such. */
static void test_decode_stated_rules(void **st)
{
    (void)st;
    struct req_view v;
    uint8_t b[64];
    const char *why;
    int n;
    /* {"id":1,"op":"ping","deadline":4294967295} */
    assert_int_equal(decode("a362696401626f706470696e6768646561646c696e651affffffff", &v), 0);
    assert_true(v.has_deadline);
    assert_true(v.deadline_ms == 4294967295u);
    /* deadline 2^32 */
    n = decode_hex("a362696401626f706470696e6768646561646c696e651b0000000100000000", b);
    why = NULL;
    assert_int_equal(codec_decode_request(b, (size_t)n, &LIM, &v, &why), FE_BAD_REQUEST);
    assert_true(v.has_id);
    assert_non_null(strstr(why, "4294967295"));
    /* {"id":1.0,"op":"ping"}: no id can be read, and the message says why */
    n = decode_hex("a2626964f93c00626f706470696e67", b);
    why = NULL;
    assert_int_equal(codec_decode_request(b, (size_t)n, &LIM, &v, &why), FE_BAD_REQUEST);
    assert_false(v.has_id);
    assert_non_null(strstr(why, "not a float"));
    /* a lone break byte */
    n = decode_hex("ff", b);
    why = NULL;
    assert_int_equal(codec_decode_request(b, (size_t)n, &LIM, &v, &why), FE_BAD_REQUEST);
    assert_non_null(strstr(why, "0xff"));
}

static void test_decode_bad_utf8(void **st)
{
    (void)st;
    struct req_view v;
    /* op is the 2-byte text C3 28 (invalid) */
    assert_int_equal(decode("a262696401626f7062c328", &v), FE_BAD_REQUEST);
    /* an overlong '/' (C0 AF) inside args */
    assert_int_equal(decode("a362696401626f706470696e6764617267738162c0af", &v), FE_BAD_REQUEST);
    assert_true(utf8_valid((const uint8_t *)"h\xc3\xa9llo \xf0\x9f\x9a\xa2", 11));
    assert_false(utf8_valid((const uint8_t *)"\xed\xa0\x80", 3)); /* surrogate */
    assert_false(utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(utf8_valid((const uint8_t *)"\xe2\x82", 2)); /* truncated */
}

static void test_decode_depth_and_items(void **st)
{
    (void)st;
    /* {"id":1,"op":"ping","args": [[[[...]]]]} nested 40 deep */
    uint8_t b[128];
    int n = decode_hex("a362696401626f706470696e676461726773", b);
    for (int i = 0; i < 40; i++)
        b[n++] = 0x81;
    b[n++] = 0x01;
    const char *why;
    struct req_view v;
    assert_int_equal(codec_decode_request(b, (size_t)n, &LIM, &v, &why), FE_BAD_REQUEST);
    assert_string_equal(why, "nesting is too deep");

    /* 20 deep passes */
    n = decode_hex("a362696401626f706470696e676461726773", b);
    for (int i = 0; i < 20; i++)
        b[n++] = 0x81;
    b[n++] = 0x01;
    assert_int_equal(codec_decode_request(b, (size_t)n, &LIM, &v, &why), 0);

    /* more items than max_items */
    struct codec_limits small = {.max_depth = 32, .max_items = 10};
    n = decode_hex("a362696401626f706470696e676461726773", b);
    b[n++] = 0x90; /* array of 16 */
    for (int i = 0; i < 16; i++)
        b[n++] = 0x01;
    assert_int_equal(codec_decode_request(b, (size_t)n, &small, &v, &why), FE_TOO_LARGE);
}

static void test_encode_frames(void **st)
{
    (void)st;
    struct cbuf out;
    cbuf_init(&out);
    codec_error_frame(&out, true, 42, FE_TIMEOUT, "late");
    size_t body;
    assert_int_equal(frame_next(out.data, out.len, 1000, &body), (long)out.len);
    struct cbor_load_result r;
    cbor_item_t *it = cbor_load(out.data + 4, body, &r);
    assert_non_null(it);
    assert_true(cbor_isa_map(it));
    assert_int_equal(cbor_map_size(it), 2);
    struct cbor_pair *p = cbor_map_handle(it);
    assert_int_equal(cbor_get_int(p[0].value), 42);
    cbor_item_t *err = p[1].value;
    struct cbor_pair *e = cbor_map_handle(err);
    assert_memory_equal(cbor_string_handle(e[0].value), "timeout", 7);
    assert_memory_equal(cbor_string_handle(e[1].value), "late", 4);
    cbor_decref(&it);

    /* An error message that is not UTF-8 is replaced by the table's. */
    out.len = 0;
    codec_error_frame(&out, false, 0, FE_BACKEND_ERROR, "\xff\xfe");
    assert_int_equal(frame_next(out.data, out.len, 1000, &body), (long)out.len);
    it = cbor_load(out.data + 4, body, &r);
    assert_non_null(it);
    assert_int_equal(cbor_map_size(it), 1);
    cbor_decref(&it);

    out.len = 0;
    uint8_t data[] = {0x43, 'a', 'b', 'c'};
    codec_push_frame(&out, 9, "message", data, sizeof(data), NULL);
    it = cbor_load(out.data + 4, out.len - 4, &r);
    assert_non_null(it);
    assert_int_equal(cbor_map_size(it), 3);
    cbor_decref(&it);
    cbuf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_needs_more),
        cmocka_unit_test(test_frame_whole),
        cmocka_unit_test(test_frame_too_large),
        cmocka_unit_test(test_decode_full_request),
        cmocka_unit_test(test_decode_rejects),
        cmocka_unit_test(test_decode_stated_rules),
        cmocka_unit_test(test_decode_bad_utf8),
        cmocka_unit_test(test_decode_depth_and_items),
        cmocka_unit_test(test_encode_frames),
    };
    return cmocka_run_group_tests_name("frame_codec", tests, NULL, NULL);
}
