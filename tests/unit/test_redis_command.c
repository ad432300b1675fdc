/* Unit tests: RESP command formatting (rds_command.c), checked against
 * hiredis's own formatter byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "rds_command.h"

static void check(int argc, const char **argv, const size_t *lens)
{
    char *want;
    int n = redisFormatCommandArgv(&want, argc, argv, lens);
    assert_true(n > 0);
    struct cbuf out;
    cbuf_init(&out);
    cbuf_put(&out, "prefix", 6); /* appends, never overwrites */
    rds_command_format(&out, argc, argv, lens);
    assert_int_equal(out.len, 6 + (size_t)n);
    assert_memory_equal(out.data, "prefix", 6);
    assert_memory_equal(out.data + 6, want, (size_t)n);
    redisFreeCommand(want);
    cbuf_free(&out);
}

static void test_simple(void **st)
{
    (void)st;
    const char *argv[] = {"SET", "key", "value"};
    size_t lens[] = {3, 3, 5};
    check(3, argv, lens);
}

static void test_binary_and_empty(void **st)
{
    (void)st;
    const char *argv[] = {"SET", "k\0\r\n", ""};
    size_t lens[] = {3, 4, 0};
    check(3, argv, lens);
}

static void test_many_and_long(void **st)
{
    (void)st;
    static char big[123457];
    memset(big, 'x', sizeof(big));
    const char *argv[1200];
    size_t lens[1200];
    argv[0] = "RPUSH";
    lens[0] = 5;
    for (int i = 1; i < 1200; i++) {
        argv[i] = big;
        lens[i] = (size_t)(i * 97 % 1000);
    }
    lens[1] = sizeof(big);
    check(1200, argv, lens);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_binary_and_empty),
        cmocka_unit_test(test_many_and_long),
    };
    return cmocka_run_group_tests_name("rds_command", tests, NULL, NULL);
}
