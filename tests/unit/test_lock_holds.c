/* Unit tests: which client holds which lock (lock_holds.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lock_holds.h"

struct seen {
    int n;
    char keys[8][32];
};

static void collect(void *arg, const struct lock_hold *e)
{
    struct seen *s = arg;
    snprintf(s->keys[s->n++], 32, "%.*s", (int)e->keylen, e->key);
}

static void token(char out[33], unsigned i)
{
    snprintf(out, 33, "%08x%024x", i * 2654435761u, i);
}

static void test_add_forget_drop(void **st)
{
    (void)st;
    static struct lock_holds h;
    struct client *a = (struct client *)0x1000, *b = (struct client *)0x2000;
    char t1[33], t2[33], t3[33];
    token(t1, 1);
    token(t2, 2);
    token(t3, 3);
    lock_holds_add(&h, a, t1, "lock:{x}", 8, 100, 0);
    lock_holds_add(&h, a, t2, "lock:{y}", 8, 100, 0);
    lock_holds_add(&h, b, t3, "lock:{z}", 8, 100, 0);
    assert_int_equal(h.n, 3);
    /* A release by token, from any client, forgets it. */
    lock_holds_forget(&h, t2);
    lock_holds_forget(&h, t2);
    assert_int_equal(h.n, 2);
    struct seen s = {0};
    lock_holds_drop_client(&h, a, collect, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.keys[0], "lock:{x}");
    assert_int_equal(h.n, 1);
    /* Dropping again finds nothing. */
    s.n = 0;
    lock_holds_drop_client(&h, a, collect, &s);
    assert_int_equal(s.n, 0);
    lock_holds_drop_client(&h, b, collect, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(h.n, 0);
    lock_holds_free(&h);
}

static void test_expired_entries_are_swept(void **st)
{
    (void)st;
    static struct lock_holds h;
    struct client *a = (struct client *)0x1000;
    char t[33];
    /* Many locks that expire unreleased on one connection. */
    for (unsigned i = 0; i < 5000; i++) {
        token(t, i);
        lock_holds_add(&h, a, t, "lock:{k}", 8, i, i);
    }
    assert_true(h.n < 2100);
    lock_holds_free(&h);
    assert_int_equal(h.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_forget_drop),
        cmocka_unit_test(test_expired_entries_are_swept),
    };
    return cmocka_run_group_tests_name("lock_holds", tests, NULL, NULL);
}
