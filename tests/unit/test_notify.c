/* Unit tests: reading NOTIFY_SOCKET (notify.c), the one part of the
 * service manager's protocol that has rules of its own. Sending is tested
 * against real sockets in tests/integration/test_systemd.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "notify.h"

static void test_path(void **st)
{
    (void)st;
    struct sockaddr_un a;
    socklen_t len;
    assert_int_equal(notify_parse_address("/run/systemd/notify", &a, &len), 0);
    assert_int_equal(a.sun_family, AF_UNIX);
    assert_string_equal(a.sun_path, "/run/systemd/notify");
    /* A path's length counts its terminating NUL, as the kernel expects. */
    assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + strlen("/run/systemd/notify") + 1);
}

static void test_abstract(void **st)
{
    (void)st;
    struct sockaddr_un a;
    socklen_t len;
    assert_int_equal(notify_parse_address("@ferry/notify", &a, &len), 0);
    /* '@' becomes the leading NUL, and the length is exact: an abstract
     * name has no terminator, and a trailing NUL would name another socket. */
    assert_int_equal(a.sun_path[0], '\0');
    assert_memory_equal(a.sun_path + 1, "ferry/notify", 12);
    assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 13);
}

static void test_refused(void **st)
{
    (void)st;
    struct sockaddr_un a;
    socklen_t len;
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    const char *bad[] = {"", "@", "/", "relative/notify", "vsock:2:1234", longpath, NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(notify_parse_address(bad[i], &a, &len), -1);
    assert_int_equal(notify_parse_address(NULL, &a, &len), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_abstract),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests_name("notify", tests, NULL, NULL);
}
