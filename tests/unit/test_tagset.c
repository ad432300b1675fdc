/* Unit tests: the open delivery tags of a consumer (mq_tagset.c), which decide
 * whether an ack may go to the broker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mq_tagset.h"

static void test_single_settle(void **st)
{
    (void)st;
    struct mq_tagset s = {0};
    assert_int_equal(mq_tagset_check(&s, 1, false), MQ_TAGSET_UNKNOWN);
    for (uint64_t t = 1; t <= 3; t++)
        assert_true(mq_tagset_add(&s, t, 10));
    assert_int_equal(mq_tagset_check(&s, 1, false), MQ_TAGSET_OPEN);
    assert_int_equal(mq_tagset_settle(&s, 1, false), 1);
    /* A second ack of the same tag: the broker would close the channel. */
    assert_int_equal(mq_tagset_check(&s, 1, false), MQ_TAGSET_SETTLED);
    assert_int_equal(mq_tagset_settle(&s, 1, false), 0);
    /* Never delivered: zero, or above the highest. */
    assert_int_equal(mq_tagset_check(&s, 0, false), MQ_TAGSET_UNKNOWN);
    assert_int_equal(mq_tagset_check(&s, 4, false), MQ_TAGSET_UNKNOWN);
    /* Out of order, from the middle. */
    assert_int_equal(mq_tagset_settle(&s, 3, false), 1);
    assert_int_equal(mq_tagset_check(&s, 3, false), MQ_TAGSET_SETTLED);
    assert_int_equal(mq_tagset_check(&s, 2, false), MQ_TAGSET_OPEN);
    assert_int_equal(mq_tagset_settle(&s, 2, false), 1);
    assert_int_equal(s.n, 0);
    mq_tagset_free(&s);
}

static void test_multiple(void **st)
{
    (void)st;
    struct mq_tagset s = {0};
    for (uint64_t t = 1; t <= 6; t++)
        mq_tagset_add(&s, t, 10);
    mq_tagset_settle(&s, 3, false); /* open: 1 2 4 5 6 */
    /* Up to 3 settles 1 and 2; 4 is open above, so the broker accepts it. */
    assert_int_equal(mq_tagset_check(&s, 3, true), MQ_TAGSET_OPEN);
    assert_int_equal(mq_tagset_settle(&s, 3, true), 2);
    /* Up to 3 again would settle nothing. */
    assert_int_equal(mq_tagset_check(&s, 2, true), MQ_TAGSET_SETTLED);
    assert_int_equal(mq_tagset_check(&s, 3, true), MQ_TAGSET_SETTLED);
    assert_int_equal(mq_tagset_check(&s, 5, true), MQ_TAGSET_OPEN);
    assert_int_equal(mq_tagset_settle(&s, 5, true), 2);
    mq_tagset_settle(&s, 6, false);
    mq_tagset_add(&s, 7, 10);
    mq_tagset_add(&s, 9, 10); /* open: 7 9 */
    mq_tagset_settle(&s, 9, false);
    /* 8 never reached this consumer's open set, and nothing open is at or
     * above it: the broker would refuse it (unknown delivery tag). */
    assert_int_equal(mq_tagset_check(&s, 8, true), MQ_TAGSET_STRANDED);
    assert_int_equal(mq_tagset_check(&s, 9, true), MQ_TAGSET_STRANDED);
    assert_int_equal(mq_tagset_check(&s, 7, true), MQ_TAGSET_OPEN);
    assert_int_equal(mq_tagset_check(&s, 10, true), MQ_TAGSET_UNKNOWN);
    mq_tagset_free(&s);
}

static void test_bounded_by_limit(void **st)
{
    (void)st;
    struct mq_tagset s = {0};
    /* Many deliveries, each settled in order: the array stays at the
     * limit however many pass through it. */
    for (uint64_t t = 1; t <= 100000; t++) {
        assert_true(mq_tagset_add(&s, t, 5));
        if (t > 4)
            assert_int_equal(mq_tagset_settle(&s, t - 4, false), 1);
    }
    assert_true(s.cap <= 5);
    assert_int_equal(s.n, 4);
    /* More open tags than the limit is reported (and still recorded). */
    assert_true(mq_tagset_add(&s, 100001, 5));
    assert_false(mq_tagset_add(&s, 100002, 5));
    assert_int_equal(mq_tagset_check(&s, 100002, false), MQ_TAGSET_OPEN);
    /* A new channel numbers from 1 again. */
    mq_tagset_reset(&s);
    assert_int_equal(mq_tagset_check(&s, 1, false), MQ_TAGSET_UNKNOWN);
    assert_true(mq_tagset_add(&s, 1, 5));
    assert_int_equal(mq_tagset_check(&s, 1, false), MQ_TAGSET_OPEN);
    mq_tagset_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_settle),
        cmocka_unit_test(test_multiple),
        cmocka_unit_test(test_bounded_by_limit),
    };
    return cmocka_run_group_tests_name("tagset", tests, NULL, NULL);
}
