/* Unit tests: the access policy's file and matching (base/policy.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy.h"

static int op_index(void *ctx, const char *name)
{
    (void)ctx;
    static const char *const ops[] = {"ping", "hello", "redis", "publish"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(ops[i], name))
            return i;
    return -1;
}

static const char *refusal(const char *text)
{
    static char err[300];
    struct policy_set set;
    err[0] = '\0';
    if (policy_parse(&set, "p.conf", text, op_index, NULL, err, sizeof(err)) == 0) {
        policy_free(&set);
        return NULL;
    }
    return err;
}

static void test_first_policy_covering_a_peer_wins(void **st)
{
    (void)st;
    struct policy_set set;
    char err[300];
    const char *text = "# comment\n"
                       "[a]\npeers = uid:1000, gid:50\nops = ping redis\nredis_keys = app:* [xy]?\n\n"
                       "[b]\npeers = uid:1001 gid:50\nops = *\n"
                       "[*]\nops = ping\n";
    assert_int_equal(policy_parse(&set, "p.conf", text, op_index, NULL, err, sizeof(err)), 0);
    assert_int_equal(set.n, 3);
    const struct policy *a = policy_find(&set, 1000, 1), *b = policy_find(&set, 1001, 50);
    assert_string_equal(a->name, "a");
    assert_string_equal(b->name, "a"); /* gid 50 is named by [a] first */
    assert_string_equal(policy_find(&set, 1001, 2)->name, "b");
    assert_string_equal(policy_find(&set, 7, 7)->name, "*");
    assert_true(policy_allows_op(a, 0) && policy_allows_op(a, 2) && !policy_allows_op(a, 3));
    assert_true(policy_allows_op(policy_find(&set, 1001, 2), 3));
    assert_true(policy_allows_name(a, PL_REDIS_KEYS, "app:1", 5));
    assert_true(policy_allows_name(a, PL_REDIS_KEYS, "xz", 2));
    assert_false(policy_allows_name(a, PL_REDIS_KEYS, "other", 5));
    /* Binary keys: a prefix or a plain name matches bytes; a NUL never
     * matches a glob with ? or [...] (fnmatch sees C strings). */
    assert_true(policy_allows_name(a, PL_REDIS_KEYS, "app:\0x", 6));
    assert_false(policy_allows_name(a, PL_REDIS_KEYS, "x\0", 2));
    assert_false(policy_allows_name(a, PL_AMQP_WRITE, "app.x", 5));   /* not given: nothing */
    policy_free(&set);
}

static void test_without_default_a_stranger_is_refused(void **st)
{
    (void)st;
    struct policy_set set;
    char err[300];
    assert_int_equal(policy_parse(&set, "p.conf", "[a]\npeers = uid:1\nops = ping\n", op_index, NULL, err,
                                  sizeof(err)), 0);
    assert_null(policy_find(&set, 2, 2));
    policy_free(&set);
}

static void test_refusals_name_the_line(void **st)
{
    (void)st;
    assert_string_equal(refusal("ops = ping\n"), "p.conf line 1: a key before the first [policy]");
    assert_string_equal(refusal("[a]\npeers = uid:1\n\nops = ping nosuch\n"),
                        "p.conf line 4: no op named 'nosuch' (hello lists them)");
    assert_string_equal(refusal("[a]\npeers = uid:x\n"),
                        "p.conf line 2: peer 'uid:x' is not uid:N, user:NAME, gid:N or group:NAME");
    assert_string_equal(refusal("[a]\npeers = user:no-such-user-here\n"),
                        "p.conf line 2: no user named 'no-such-user-here'");
    assert_string_equal(refusal("[a]\nops = ping\n"), "p.conf line 1: policy 'a' names no peers");
    assert_string_equal(refusal("[*]\npeers = uid:1\n"),
                        "p.conf line 1: the default policy [*] covers every other peer: no 'peers'");
    assert_string_equal(refusal("[a]\npeers = uid:1\npeers = uid:2\n"), "p.conf line 3: 'peers' given twice");
    assert_string_equal(refusal("[a]\npeers =\n"), "p.conf line 2: 'peers' names nobody");
    assert_string_equal(refusal("[a]\npeers = uid:1\n[a]\npeers = uid:2\n"), "p.conf line 3: policy 'a' is defined twice");
    assert_string_equal(refusal("[a]\npeers = uid:1\nredis_commands = +@read get\n"),
                        "p.conf line 3: Redis rule 'get' is not +@category, -@category, +command or -command");
    assert_string_equal(refusal("[a]\npeers = uid:1\nkeys = *\n"),
                        "p.conf line 3: unknown key 'keys' (peers, ops, redis_commands, redis_keys, amqp_configure, "
                        "amqp_write, amqp_read)");
    assert_string_equal(refusal("[a b]\n"), "p.conf line 1: a policy name is 1 to 63 characters without spaces or "
                                            "brackets");
}

static void test_counts_carry_across_a_reload_by_name(void **st)
{
    (void)st;
    struct policy_set a, b;
    char err[300];
    assert_int_equal(policy_parse(&a, "p", "[x]\npeers = uid:1\n[y]\npeers = uid:2\n", NULL, NULL, err, sizeof(err)),
                     0);
    a.p[1].denied = 5;
    a.p[1].requests = 9;
    a.refused_peers = 3;
    assert_int_equal(policy_parse(&b, "p", "[y]\npeers = uid:3\n", NULL, NULL, err, sizeof(err)), 0);
    policy_carry_counts(&b, &a);
    assert_int_equal(b.p[0].denied, 5);
    assert_int_equal(b.p[0].requests, 9);
    assert_int_equal(b.refused_peers, 3);
    policy_free(&a);
    policy_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_policy_covering_a_peer_wins),
        cmocka_unit_test(test_without_default_a_stranger_is_refused),
        cmocka_unit_test(test_refusals_name_the_line),
        cmocka_unit_test(test_counts_carry_across_a_reload_by_name),
    };
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
