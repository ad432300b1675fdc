/* Unit tests: libferry's frame builders and decoder, checked against the
 * daemon's own codec (the two sides must agree byte for byte). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_frame_decodes_in_daemon),
        cmocka_unit_test(test_request_frame),
        cmocka_unit_test(test_decode_response_error_push),
    };
    return cmocka_run_group_tests_name("libferry", tests, NULL, NULL);
}
