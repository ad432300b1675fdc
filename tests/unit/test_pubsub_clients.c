/* Unit tests: each client's subscriptions, found by the client
 * (pubsub_clients.c), through growth and removals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "pubsub_clients.h"

static void test_add_find_remove(void **st)
{
    (void)st;
    struct pubsub_clients t = {0};
    enum { N = 3000 };
    static char *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(96);
        struct ps_client *e = pubsub_clients_add(&t, blocks[i]);
        assert_ptr_equal(e->client, blocks[i]);
        assert_true(dlist_empty(&e->subs));
        assert_ptr_equal(pubsub_clients_add(&t, blocks[i]), e);
    }
    assert_int_equal(t.n, N);
    for (int i = 0; i < N; i += 2)
        pubsub_clients_remove(&t, pubsub_clients_find(&t, blocks[i]));
    assert_int_equal(t.n, N / 2);
    for (int i = 0; i < N; i++) {
        struct ps_client *e = pubsub_clients_find(&t, blocks[i]);
        if (i % 2)
            assert_ptr_equal(e->client, blocks[i]);
        else
            assert_null(e);
    }
    pubsub_clients_free(&t);
    assert_null(pubsub_clients_find(&t, blocks[1]));
    for (int i = 0; i < N; i++)
        free(blocks[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_find_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
