/* Unit tests: the patterns' argument maps (daemon/patterns/pargs.c): types,
 * required keys, unknown keys refused, arrays of strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cbuf.h"
#include "pargs.h"

enum { NAME, TTL, WAIT, FLAG, RATE, KEYS };

static void specs(struct parg *s)
{
    struct parg init[] = {
        {.name = "name", .type = PA_STR, .required = true},
        {.name = "ttl_ms", .type = PA_UINT, .required = true},
        {.name = "wait_ms", .type = PA_UINT},
        {.name = "flag", .type = PA_BOOL},
        {.name = "rate", .type = PA_NUM},
        {.name = "keys", .type = PA_ARRAY},
    };
    memcpy(s, init, sizeof(init));
}

static void all_kinds_are_read(void **state)
{
    (void)state;
    struct cbuf b;
    cbuf_init(&b);
    cbuf_map(&b, 5);
    cbuf_str(&b, "name");
    cbuf_bytes(&b, "lk", 2);
    cbuf_str(&b, "ttl_ms");
    cbuf_uint(&b, 5000);
    cbuf_str(&b, "flag");
    cbuf_bool(&b, true);
    cbuf_str(&b, "rate");
    cbuf_double(&b, 2.5);
    cbuf_str(&b, "keys");
    cbuf_array(&b, 2);
    cbuf_str(&b, "a");
    cbuf_str(&b, "bc");
    struct parg s[6];
    specs(s);
    char msg[128];
    assert_null(pargs_read(b.data, b.len, s, 6, msg, sizeof(msg)));
    assert_true(s[NAME].present);
    assert_int_equal(s[NAME].n, 2);
    assert_memory_equal(s[NAME].p, "lk", 2);
    assert_int_equal(s[TTL].u, 5000);
    assert_false(s[WAIT].present);
    assert_true(s[FLAG].b);
    assert_true(s[RATE].f > 2.49 && s[RATE].f < 2.51);
    assert_int_equal(s[KEYS].u, 2);
    const char *argv[4];
    size_t lens[4];
    assert_int_equal(pargs_strings(s[KEYS].p, s[KEYS].n, argv, lens, 4, msg, sizeof(msg)), 2);
    assert_int_equal(lens[1], 2);
    assert_memory_equal(argv[1], "bc", 2);
    assert_int_equal(pargs_strings(s[KEYS].p, s[KEYS].n, argv, lens, 1, msg, sizeof(msg)), -1);
    cbuf_free(&b);
}

static const char *read_one(void (*build)(struct cbuf *b), char *msg, size_t len)
{
    struct cbuf b;
    cbuf_init(&b);
    build(&b);
    struct parg s[6];
    specs(s);
    const char *why = pargs_read(b.data, b.len, s, 6, msg, len);
    cbuf_free(&b);
    return why;
}

static void missing_required(struct cbuf *b)
{
    cbuf_map(b, 1);
    cbuf_str(b, "name");
    cbuf_str(b, "x");
}

static void unknown_key(struct cbuf *b)
{
    cbuf_map(b, 3);
    cbuf_str(b, "name");
    cbuf_str(b, "x");
    cbuf_str(b, "ttl_ms");
    cbuf_uint(b, 1);
    cbuf_str(b, "ttl");
    cbuf_uint(b, 1);
}

static void wrong_type(struct cbuf *b)
{
    cbuf_map(b, 2);
    cbuf_str(b, "name");
    cbuf_str(b, "x");
    cbuf_str(b, "ttl_ms");
    cbuf_int(b, -5);
}

static void not_a_map(struct cbuf *b)
{
    cbuf_array(b, 0);
}

static void truncated(struct cbuf *b)
{
    cbuf_map(b, 2);
    cbuf_str(b, "name");
}

static void errors_name_the_key(void **state)
{
    (void)state;
    char msg[128];
    assert_non_null(read_one(missing_required, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "'ttl_ms' is required"));
    assert_non_null(read_one(unknown_key, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "unknown argument 'ttl'"));
    assert_non_null(read_one(wrong_type, msg, sizeof(msg)));
    assert_non_null(strstr(msg, "'ttl_ms' must be an unsigned integer"));
    assert_non_null(read_one(not_a_map, msg, sizeof(msg)));
    assert_non_null(read_one(truncated, msg, sizeof(msg)));
}

static void absent_args_only_fail_required(void **state)
{
    (void)state;
    struct parg s[1] = {{.name = "opt", .type = PA_UINT}};
    char msg[64];
    assert_null(pargs_read(NULL, 0, s, 1, msg, sizeof(msg)));
    assert_false(s[0].present);
    struct parg r[1] = {{.name = "need", .type = PA_UINT, .required = true}};
    assert_non_null(pargs_read(NULL, 0, r, 1, msg, sizeof(msg)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(all_kinds_are_read),
        cmocka_unit_test(errors_name_the_key),
        cmocka_unit_test(absent_args_only_fail_required),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
