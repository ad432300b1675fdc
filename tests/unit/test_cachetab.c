/* Unit tests: the cache's key table (cachetab.c) and its lease keys,
 * which must hash to their key's Redis Cluster slot (cachelease.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cachelease.h"
#include "cachetab.h"

struct entry {
    struct cachetab_node node;
    char key[32];
};

static void test_table(void **st)
{
    (void)st;
    struct cachetab t;
    cachetab_init(&t);
    assert_null(cachetab_find(&t, "x", 1));
    enum { N = 1000 };
    struct entry *e = calloc(N, sizeof(*e));
    for (int i = 0; i < N; i++) {
        int n = snprintf(e[i].key, sizeof(e[i].key), "key:%d", i);
        e[i].node.key = e[i].key;
        e[i].node.keylen = (size_t)n;
        cachetab_add(&t, &e[i].node);
    }
    assert_int_equal(t.n, N);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(cachetab_find(&t, e[i].key, strlen(e[i].key)), &e[i].node);
    assert_null(cachetab_find(&t, "key:1000", 8));
    assert_null(cachetab_find(&t, "key:1", 4)); /* a prefix is another key */
    for (int i = 0; i < N; i += 2)
        cachetab_remove(&t, &e[i].node);
    assert_int_equal(t.n, N / 2);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(cachetab_find(&t, e[i].key, strlen(e[i].key)), i % 2 ? &e[i].node : NULL);
    /* Binary keys: a NUL inside is part of the key. */
    struct entry b = {.key = {'a', 0, 'b'}};
    b.node.key = b.key;
    b.node.keylen = 3;
    cachetab_add(&t, &b.node);
    assert_ptr_equal(cachetab_find(&t, "a\0b", 3), &b.node);
    assert_null(cachetab_find(&t, "a", 1));
    cachetab_free(&t);
    free(e);
}

/* Redis Cluster's CRC16 (XMODEM) and key slot, as the cluster spec gives them. */
static uint16_t crc16(const char *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)((unsigned char)p[i] << 8);
        for (int k = 0; k < 8; k++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static unsigned slot(const char *k, size_t n)
{
    size_t s, e;
    for (s = 0; s < n; s++)
        if (k[s] == '{')
            break;
    if (s == n)
        return crc16(k, n) & 16383;
    for (e = s + 1; e < n; e++)
        if (k[e] == '}')
            break;
    if (e == n || e == s + 1)
        return crc16(k, n) & 16383;
    return crc16(k + s + 1, e - s - 1) & 16383;
}

static void test_lease_key_slot(void **st)
{
    (void)st;
    assert_int_equal(crc16("123456789", 9), 0x31C3); /* the spec's check value */
    const char *keys[] = {"user:1", "{user:1}:profile", "a{b", "{", "x{y}z{w}", "{{a}}", "a{b}", "k",
                          "{user1}.following", "foo{}{bar}x"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *k = keys[i];
        if (!cachelease_key_ok(k, strlen(k)))
            continue;
        size_t n;
        char *lk = cachelease_key(k, strlen(k), &n);
        assert_int_equal(n, strlen(lk));
        assert_true(strstr(lk, ":ferry-lease") != NULL);
        assert_int_equal(slot(lk, n), slot(k, strlen(k)));
        free(lk);
    }
    size_t n;
    char *lk = cachelease_key("user:1", 6, &n);
    assert_string_equal(lk, "{user:1}:ferry-lease");
    free(lk);
    lk = cachelease_key("{u}:p", 5, &n);
    assert_string_equal(lk, "{u}:p:ferry-lease");
    free(lk);
    /* A '}' without a tag: no lease key could share the slot. */
    assert_false(cachelease_key_ok("a}b", 3));
    assert_false(cachelease_key_ok("{}x", 3));
    assert_false(cachelease_key_ok("foo{}{bar}x", 11));
    assert_true(cachelease_key_ok("a{b", 3));
    assert_true(cachelease_has_tag("x{y}z", 5));
    assert_false(cachelease_has_tag("x{}z", 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_lease_key_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
