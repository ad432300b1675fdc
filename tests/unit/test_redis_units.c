/* Unit tests: Redis reply -> CBOR mapping (rds_reply.c), the deny-list
 * (rds_deny.c). Replies are produced by
 * hiredis's own reader from RESP bytes, as in the daemon. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cbor.h>
#include <hiredis/hiredis.h>

#include "rds_backend.h"
#include "rds_deny.h"
#include "rds_reply.h"

/* RESP bytes -> redisReply -> CBOR -> libcbor item. */
static cbor_item_t *map_resp(const char *resp, int *type)
{
    redisReader *r = redisReaderCreate();
    assert_int_equal(redisReaderFeed(r, resp, strlen(resp)), REDIS_OK);
    void *reply = NULL;
    assert_int_equal(redisReaderGetReply(r, &reply), REDIS_OK);
    assert_non_null(reply);
    *type = ((redisReply *)reply)->type;
    struct cbuf out;
    cbuf_init(&out);
    rds_reply_encode(reply, &out);
    freeReplyObject(reply);
    redisReaderFree(r);
    struct cbor_load_result lr;
    cbor_item_t *it = cbor_load(out.data, out.len, &lr);
    assert_non_null(it);
    assert_int_equal(lr.read, out.len);
    cbuf_free(&out);
    return it;
}

static void test_bulk_is_bytes(void **st)
{
    (void)st;
    int t;
    cbor_item_t *it = map_resp("$5\r\nh\xffllo\r\n", &t);
    assert_true(cbor_isa_bytestring(it));
    assert_int_equal(cbor_bytestring_length(it), 5);
    assert_memory_equal(cbor_bytestring_handle(it), "h\xffllo", 5);
    cbor_decref(&it);
    it = map_resp("$0\r\n\r\n", &t);
    assert_true(cbor_isa_bytestring(it));
    assert_int_equal(cbor_bytestring_length(it), 0);
    cbor_decref(&it);
}

static void test_status_is_text(void **st)
{
    (void)st;
    int t;
    cbor_item_t *it = map_resp("+OK\r\n", &t);
    assert_true(cbor_isa_string(it));
    assert_memory_equal(cbor_string_handle(it), "OK", 2);
    cbor_decref(&it);
}

static void test_integers(void **st)
{
    (void)st;
    int t;
    cbor_item_t *it = map_resp(":42\r\n", &t);
    assert_true(cbor_isa_uint(it));
    assert_int_equal(cbor_get_int(it), 42);
    cbor_decref(&it);
    it = map_resp(":-7\r\n", &t);
    assert_true(cbor_isa_negint(it));
    assert_int_equal(cbor_get_int(it), 6); /* -1 - 6 = -7 */
    cbor_decref(&it);
    it = map_resp(":-9223372036854775808\r\n", &t);
    assert_true(cbor_isa_negint(it));
    assert_true(cbor_get_int(it) == 9223372036854775807ull);
    cbor_decref(&it);
}

static void test_nil(void **st)
{
    (void)st;
    int t;
    cbor_item_t *it = map_resp("$-1\r\n", &t);
    assert_true(cbor_is_null(it));
    cbor_decref(&it);
    it = map_resp("*-1\r\n", &t);
    assert_true(cbor_is_null(it));
    cbor_decref(&it);
}

static void test_nested_arrays(void **st)
{
    (void)st;
    int t;
    cbor_item_t *it = map_resp("*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n*0\r\n", &t);
    assert_true(cbor_isa_array(it));
    assert_int_equal(cbor_array_size(it), 3);
    cbor_item_t **a = cbor_array_handle(it);
    assert_true(cbor_isa_bytestring(a[0]));
    assert_true(cbor_isa_array(a[1]));
    assert_int_equal(cbor_array_size(a[1]), 2);
    assert_true(cbor_is_null(cbor_array_handle(a[1])[1]));
    assert_int_equal(cbor_array_size(a[2]), 0);
    cbor_decref(&it);
}

static void test_error_type_reported(void **st)
{
    (void)st;
    int t;
    cbor_item_t *it = map_resp("-ERR wrong\r\n", &t);
    /* The backend turns this type into backend_error at the top; inside
     * an array (EXEC's results, a script's error_reply) the mapping gives
     * {"error": text}, which no other reply looks like. */
    assert_int_equal(t, REDIS_REPLY_ERROR);
    assert_true(cbor_isa_map(it));
    assert_int_equal(cbor_map_size(it), 1);
    struct cbor_pair *kv = cbor_map_handle(it);
    assert_memory_equal(cbor_string_handle(kv[0].key), "error", 5);
    assert_memory_equal(cbor_string_handle(kv[0].value), "ERR wrong", 9);
    cbor_decref(&it);
}

static int denied(const struct rds_deny *d, int argc, const char **argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return rds_deny_match(d, argc, argv, lens) != NULL;
}

static void test_deny(void **st)
{
    (void)st;
    struct rds_deny d;
    char err[256];
    assert_int_equal(rds_deny_parse("FLUSHALL, client kill ,XREAD [BLOCK] STREAMS,,"
                                      "XREADGROUP GROUP * * [block] streams, MIGRATE",
                                      &d, err, sizeof(err)),
                     0);
    assert_int_equal(d.n, 5);
    assert_true(denied(&d, 1, (const char *[]){"flushall"}));
    assert_true(denied(&d, 3, (const char *[]){"CLIENT", "KILL", "1.2.3.4:5"}));
    assert_false(denied(&d, 2, (const char *[]){"CLIENT", "LIST"}));
    /* A subcommand is matched in its place only. */
    assert_false(denied(&d, 3, (const char *[]){"CLIENT", "SETNAME", "KILL"}));
    assert_true(denied(&d, 6, (const char *[]){"XREAD", "COUNT", "1", "block", "0", "STREAMS"}));
    assert_true(denied(&d, 6, (const char *[]){"XREAD", "BLOCK", "0", "STREAMS", "s", "$"}));
    assert_false(denied(&d, 4, (const char *[]){"XREAD", "STREAMS", "s", "0"}));
    /* An option is matched where options stand: not a stream named block. */
    assert_false(denied(&d, 4, (const char *[]){"XREAD", "STREAMS", "block", "0"}));
    assert_false(denied(&d, 6, (const char *[]){"XREAD", "COUNT", "5", "STREAMS", "block", "0"}));
    assert_true(denied(&d, 9, (const char *[]){"XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "BLOCK", "0",
                                               "STREAMS"}));
    /* A group or consumer named block is not the option. */
    assert_false(denied(&d, 7, (const char *[]){"XREADGROUP", "GROUP", "block", "block", "STREAMS", "s", ">"}));
    assert_false(denied(&d, 2, (const char *[]){"GET", "FLUSHALL"}));
    assert_true(denied(&d, 6, (const char *[]){"MIGRATE", "h", "1", "k", "0", "5000"}));
    const char *argv[] = {"client", "kill", "x"};
    size_t lens[] = {6, 4, 1};
    assert_string_equal(rds_deny_match(&d, 3, argv, lens)->text, "CLIENT KILL");
    rds_deny_free(&d);
    assert_int_equal(rds_deny_parse("A B C", &d, err, sizeof(err)), 0);
    rds_deny_free(&d);
    const char *bad[] = {"A [B] C D", "A [B] [C]", "A [*]", "A []", "A [B", "A B]x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(rds_deny_parse(bad[i], &d, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "redis_deny"));
    }
    assert_int_equal(rds_deny_parse("", &d, err, sizeof(err)), 0);
    assert_int_equal(d.n, 0);
}


int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bulk_is_bytes),
        cmocka_unit_test(test_status_is_text),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_nil),
        cmocka_unit_test(test_nested_arrays),
        cmocka_unit_test(test_error_type_reported),
        cmocka_unit_test(test_deny),
    };
    return cmocka_run_group_tests_name("redis_units", tests, NULL, NULL);
}
