/* Unit tests: the timeout argument of blocking commands, and its cap at
 * the time a request has left (blocking_timeout.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "blocking_timeout.h"

/* Splits a space-separated command into argv (at most 16 words). */
static int split(char *s, const char **argv, size_t *lens)
{
    int n = 0;
    for (char *w = strtok(s, " "); w && n < 16; w = strtok(NULL, " ")) {
        argv[n] = w;
        lens[n++] = strlen(w);
    }
    return n;
}

/* The command's timeout argument after capping at cap_ms, or "" when it
 * stays; NULL when the command is refused. */
static const char *capped(const char *cmd, uint64_t cap_ms, int *index)
{
    static char line[256], out[32];
    const char *argv[16];
    size_t lens[16];
    snprintf(line, sizeof(line), "%s", cmd);
    int argc = split(line, argv, lens);
    struct blocking_timeout t;
    if (blocking_timeout_find(argc, argv, lens, &t))
        return NULL;
    if (index)
        *index = t.index;
    size_t n = blocking_timeout_cap(&t, cap_ms, out, sizeof(out));
    if (n == 0)
        return "";
    assert_int_equal(n, strlen(out));
    return out;
}

static void test_seconds_last(void **st)
{
    (void)st;
    int i;
    assert_string_equal(capped("BLPOP a b 0", 500, &i), "0.500");
    assert_int_equal(i, 3);
    assert_string_equal(capped("brpop a 10", 2500, &i), "2.500");
    assert_string_equal(capped("BRPOP a 1.5", 2500, &i), ""); /* shorter already */
    assert_string_equal(capped("BRPOPLPUSH a b 0", 61000, &i), "61.000");
    assert_string_equal(capped("BLMOVE a b LEFT RIGHT 30", 1000, &i), "1.000");
    assert_int_equal(i, 5);
    assert_string_equal(capped("BZPOPMIN z 0", 1, &i), "0.001");
    assert_string_equal(capped("BZPOPMAX z 0.25", 100, &i), "0.100");
}

static void test_seconds_second(void **st)
{
    (void)st;
    int i;
    assert_string_equal(capped("BLMPOP 0 2 a b LEFT COUNT 3", 700, &i), "0.700");
    assert_int_equal(i, 1);
    assert_string_equal(capped("BZMPOP 5 1 z MIN", 9000, &i), "");
    assert_int_equal(i, 1);
}

static void test_millis(void **st)
{
    (void)st;
    int i;
    assert_string_equal(capped("XREAD COUNT 2 BLOCK 0 STREAMS s $", 450, &i), "450");
    assert_int_equal(i, 4);
    assert_string_equal(capped("XREAD BLOCK 100 STREAMS s $", 450, &i), "");
    assert_string_equal(capped("XREADGROUP GROUP g c COUNT 1 BLOCK 5000 NOACK STREAMS s >", 300, &i), "300");
    assert_int_equal(i, 7);
    assert_string_equal(capped("WAIT 1 0", 250, &i), "250");
    assert_int_equal(i, 2);
    assert_string_equal(capped("wait 1 10", 250, &i), "");
}

static void test_never_zero(void **st)
{
    (void)st;
    /* 0 is "forever" to Redis: a deadline already passed caps at 1 ms. */
    assert_string_equal(capped("BLPOP a 0", 0, NULL), "0.001");
    assert_string_equal(capped("WAIT 1 0", 0, NULL), "1");
}

static void test_refused(void **st)
{
    (void)st;
    assert_null(capped("GET a", 100, NULL));
    assert_null(capped("XREAD STREAMS s $", 100, NULL));             /* no BLOCK: not blocking */
    assert_null(capped("XREAD BLOCK", 100, NULL));
    assert_null(capped("XREAD BLOCK 10 FOO STREAMS s $", 100, NULL));
    assert_null(capped("XREADGROUP COUNT 1 BLOCK 5 STREAMS s >", 100, NULL));
    assert_null(capped("BLPOP a", 100, NULL));
    assert_null(capped("BLPOP a -1", 100, NULL));
    assert_null(capped("BLPOP a soon", 100, NULL));
    assert_null(capped("BLPOP a nan", 100, NULL));
    assert_null(capped("XREAD BLOCK 1.5 STREAMS s $", 100, NULL));
    assert_null(capped("WAIT 1", 100, NULL));
    assert_null(capped("BLMPOP 0 1 a", 100, NULL));
}

static void test_is_blocking(void **st)
{
    (void)st;
    assert_true(blocking_timeout_is_blocking("blpop", 5));
    assert_true(blocking_timeout_is_blocking("XREAD", 5));
    assert_true(blocking_timeout_is_blocking("WAITAOF", 7));
    assert_false(blocking_timeout_is_blocking("LPOP", 4));
    assert_false(blocking_timeout_is_blocking("BLPOPX", 6));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seconds_last), cmocka_unit_test(test_seconds_second),
        cmocka_unit_test(test_millis),       cmocka_unit_test(test_never_zero),
        cmocka_unit_test(test_refused),      cmocka_unit_test(test_is_blocking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
