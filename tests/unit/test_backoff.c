/* Unit tests: the reconnect backoff (backoff.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backoff.h"

static void test_backoff(void **st)
{
    (void)st;
    uint32_t rng = 12345;
    uint64_t prev_max = 0;
    for (unsigned f = 1; f < 20; f++) {
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < 200; i++) {
            uint64_t d = backoff_ms(&rng, f, 100, 5000);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        uint64_t cap = 100;
        for (unsigned k = 1; k < f && cap < 5000; k++)
            cap *= 2;
        if (cap > 5000)
            cap = 5000;
        assert_true(hi <= cap);
        assert_true(lo >= cap / 2);
        assert_true(hi > lo); /* jitter spreads the delays */
        assert_true(hi >= prev_max / 2);
        prev_max = hi;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}
