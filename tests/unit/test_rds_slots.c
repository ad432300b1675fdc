/* Unit tests: Redis Cluster's slots, slot map and redirections (rds_slots.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rds_slots.h"

static void test_crc16(void **st)
{
    (void)st;
    assert_int_equal(rds_slots_crc16("123456789", 9), 0x31C3); /* the XMODEM check value */
    assert_int_equal(rds_slots_of("foo", 3), 12182);            /* CLUSTER KEYSLOT foo */
    assert_int_equal(rds_slots_of("somekey", 7), 11058);
    assert_int_equal(rds_slots_of("", 0), 0);
}

static void test_hash_tags(void **st)
{
    (void)st;
    int s = rds_slots_of("user1000", 8);
    assert_int_equal(rds_slots_of("{user1000}.following", 20), s);
    assert_int_equal(rds_slots_of("x{user1000}y{z}", 15), s);
    /* An empty tag hashes the whole key; an unclosed one too. */
    assert_int_equal(rds_slots_of("{}foo", 5), rds_slots_crc16("{}foo", 5) & 16383);
    assert_int_equal(rds_slots_of("{foo", 4), rds_slots_crc16("{foo", 4) & 16383);
    /* Only the first '{' counts. */
    assert_int_equal(rds_slots_of("{{bar}}", 7), rds_slots_of("{bar", 4));
}

static redisReply *str(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_STRING;
    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *num(long long v)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

static redisReply *arr(size_t n, ...)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof(*r->element));
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        r->element[i] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

static void test_parse(void **st)
{
    (void)st;
    redisReply *r = arr(2,
                        arr(4, num(0), num(5460), arr(4, str("127.0.0.1"), num(7001), str("aaa"), arr(0)),
                            arr(3, str(""), num(7004), str("ddd"))),
                        arr(3, num(5461), num(16383), arr(3, str("?"), num(7002), str("bbb"))));
    struct rds_slots_map m;
    char why[128];
    assert_int_equal(rds_slots_parse(r, "10.0.0.9", &m, why, sizeof(why)), 0);
    assert_int_equal(m.n, 2);
    assert_int_equal(m.range[0].start, 0);
    assert_int_equal(m.range[0].end, 5460);
    assert_string_equal(m.range[0].primary.host, "127.0.0.1");
    assert_int_equal(m.range[0].primary.port, 7001);
    assert_string_equal(m.range[0].primary.id, "aaa");
    assert_int_equal(m.range[0].nreplicas, 1);
    assert_string_equal(m.range[0].replica[0].host, "10.0.0.9");
    assert_string_equal(m.range[1].primary.host, "10.0.0.9");
    assert_int_equal(m.range[1].nreplicas, 0);
    rds_slots_free(&m);
    freeReplyObject(r);

    redisReply *bad = arr(1, arr(3, num(9), num(3), arr(2, str("h"), num(1))));
    assert_int_equal(rds_slots_parse(bad, "x", &m, why, sizeof(why)), -1);
    assert_int_equal(m.n, 0);
    freeReplyObject(bad);
    redisReply *empty = arr(0);
    assert_int_equal(rds_slots_parse(empty, "x", &m, why, sizeof(why)), -1);
    freeReplyObject(empty);
}

static void test_redirect(void **st)
{
    (void)st;
    int slot, port;
    char host[64];
    const char *m = "MOVED 3999 127.0.0.1:6381";
    assert_int_equal(rds_slots_redirect(m, strlen(m), &slot, host, sizeof(host), &port), RDS_REDIRECT_MOVED);
    assert_int_equal(slot, 3999);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6381);
    const char *a = "ASK 12 ::1:7000";
    assert_int_equal(rds_slots_redirect(a, strlen(a), &slot, host, sizeof(host), &port), RDS_REDIRECT_ASK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7000);
    const char *e = "MOVED 1 :6380";
    assert_int_equal(rds_slots_redirect(e, strlen(e), &slot, host, sizeof(host), &port), RDS_REDIRECT_MOVED);
    assert_string_equal(host, "");
    const char *no[] = {"ERR MOVED 1 a:1", "MOVED 99999 a:1", "MOVED x a:1", "MOVED 1 a", "MOVED 1 a:0",
                        "MOVED 1 a:99999", "ASK", "TRYAGAIN Multiple keys"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_int_equal(rds_slots_redirect(no[i], strlen(no[i]), &slot, host, sizeof(host), &port),
                         RDS_REDIRECT_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16),
        cmocka_unit_test(test_hash_tags),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_redirect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
