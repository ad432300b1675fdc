/* Unit tests: the table of subscribed channels and patterns
 * (pubsub_names.c): a channel and a pattern of the same text are two
 * names, binary names work, and the table grows and shrinks intact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pubsub_names.h"

static void test_kinds_are_apart(void **st)
{
    (void)st;
    struct pubsub_names t = {0};
    assert_null(pubsub_names_find(&t, false, "a", 1));
    struct ps_name *c = pubsub_names_add(&t, false, "news.*", 6);
    struct ps_name *p = pubsub_names_add(&t, true, "news.*", 6);
    assert_ptr_not_equal(c, p);
    assert_true(p->pattern);
    assert_false(c->pattern);
    assert_ptr_equal(pubsub_names_add(&t, false, "news.*", 6), c);
    assert_ptr_equal(pubsub_names_find(&t, true, "news.*", 6), p);
    assert_int_equal(c->refs, 0);
    assert_false(c->want);
    assert_true(dlist_empty(&c->members));
    pubsub_names_remove(&t, c);
    assert_null(pubsub_names_find(&t, false, "news.*", 6));
    assert_ptr_equal(pubsub_names_find(&t, true, "news.*", 6), p);
    pubsub_names_free(&t);
}

static void test_binary_names(void **st)
{
    (void)st;
    struct pubsub_names t = {0};
    const char a[3] = {'x', 0, 'y'}, b[3] = {'x', 0, 'z'};
    struct ps_name *ea = pubsub_names_add(&t, false, a, 3);
    assert_ptr_not_equal(pubsub_names_add(&t, false, b, 3), ea);
    assert_null(pubsub_names_find(&t, false, a, 1));
    assert_ptr_equal(pubsub_names_find(&t, false, a, 3), ea);
    assert_int_equal(t.n, 2);
    pubsub_names_free(&t);
}

static void count(struct ps_name *e, void *arg)
{
    (void)e;
    (*(size_t *)arg)++;
}

static void drop_odd(struct ps_name *e, void *arg)
{
    struct pubsub_names *t = arg;
    if ((e->text[e->len - 1] - '0') % 2)
        pubsub_names_remove(t, e);
}

static void test_grow_and_remove_while_walking(void **st)
{
    (void)st;
    struct pubsub_names t = {0};
    char name[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(name, sizeof(name), "ch.%d", i);
        pubsub_names_add(&t, i % 3 == 0, name, (size_t)n);
    }
    assert_int_equal(t.n, 5000);
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(name, sizeof(name), "ch.%d", i);
        struct ps_name *e = pubsub_names_find(&t, i % 3 == 0, name, (size_t)n);
        assert_non_null(e);
        assert_memory_equal(e->text, name, (size_t)n);
        assert_null(pubsub_names_find(&t, i % 3 != 0, name, (size_t)n));
    }
    pubsub_names_each(&t, drop_odd, &t);
    size_t left = 0;
    pubsub_names_each(&t, count, &left);
    assert_int_equal(left, 2500);
    assert_int_equal(t.n, 2500);
    pubsub_names_free(&t);
    assert_int_equal(t.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds_are_apart),
        cmocka_unit_test(test_binary_names),
        cmocka_unit_test(test_grow_and_remove_while_walking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
