/* Unit tests: the configuration table (config.c) and URL parsing (url.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend.h"
#include "config.h"
#include "mq_settings.h"
#include "rds_config.h"
#include "url.h"

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/ferry-unit-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_defaults_validate(void **st)
{
    (void)st;
    struct config c;
    char err[256];
    config_defaults(&c);
    assert_string_equal(c.socket, FERRY_DEFAULT_SOCKET);
    assert_int_equal(c.socket_mode, 0660);
    assert_int_equal(rds_config_of(&c)->pool, 1);
    assert_int_equal(mq_settings_of(&c)->prefetch, 100);
    assert_int_equal(c.default_deadline_ms, 5000);
    assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
    config_free(&c);
}

static void test_file_values_and_comments(void **st)
{
    (void)st;
    struct config c;
    char err[256];
    config_defaults(&c);
    char *p = write_tmp("# comment\n\nsocket = /tmp/x.sock\nmax_clients=7\n"
                        "socket_mode = 0600\nlog_level = debug\nredis_deny = \" FLUSHALL , KEYS \"\n");
    assert_int_equal(config_load_file(&c, p, true, err, sizeof(err)), 0);
    assert_string_equal(c.socket, "/tmp/x.sock");
    assert_int_equal(c.max_clients, 7);
    assert_int_equal(c.socket_mode, 0600);
    assert_int_equal(c.log_level, 3);
    assert_string_equal(rds_config_of(&c)->deny, " FLUSHALL , KEYS ");
    unlink(p);
    config_free(&c);
}

static void test_file_errors_name_key_and_line(void **st)
{
    (void)st;
    struct config c;
    char err[256];
    config_defaults(&c);
    char *p = write_tmp("socket = /tmp/a\n\nmax_clients = lots\n");
    assert_int_equal(config_load_file(&c, p, true, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "line 3"));
    assert_non_null(strstr(err, "max_clients"));
    unlink(p);

    p = write_tmp("no_such_key = 1\n");
    assert_int_equal(config_load_file(&c, p, true, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "unknown key 'no_such_key'"));
    assert_non_null(strstr(err, "line 1"));
    unlink(p);

    p = write_tmp("just words\n");
    assert_int_equal(config_load_file(&c, p, true, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "key = value"));
    unlink(p);

    assert_int_equal(config_load_file(&c, "/nonexistent/ferry.conf", true, err, sizeof(err)), -1);
    assert_int_equal(config_load_file(&c, "/nonexistent/ferry.conf", false, err, sizeof(err)), 0);
    config_free(&c);
}

static void test_bounds_and_types(void **st)
{
    (void)st;
    struct config c;
    char err[256];
    config_defaults(&c);
    assert_int_equal(config_set(&c, "redis_pool", "0", "flag", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "outside"));
    assert_int_equal(config_set(&c, "socket_mode", "0999", "flag", err, sizeof(err)), -1);
    assert_int_equal(config_set(&c, "log_level", "loud", "flag", err, sizeof(err)), -1);
    assert_int_equal(config_set(&c, "socket", "", "flag", err, sizeof(err)), -1);
    assert_int_equal(config_set(&c, "max_clients", "12x", "flag", err, sizeof(err)), -1);
    assert_int_equal(config_set(&c, "redis_backoff_min_ms", "900", "flag", err, sizeof(err)), 0);
    assert_int_equal(config_set(&c, "redis_backoff_max_ms", "800", "flag", err, sizeof(err)), 0);
    assert_int_equal(config_validate(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "redis_backoff_max_ms"));
    config_free(&c);
}

/* Values the start would refuse are refused where they are set, naming
 * where they came from, and leave the old value in place. */
static void test_value_checks_name_where(void **st)
{
    (void)st;
    struct config c;
    char err[512];
    config_defaults(&c);
    assert_int_equal(config_set(&c, "redis_url", "http://x", "f.conf line 3", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "f.conf line 3: key 'redis_url': "));
    assert_string_equal(rds_config_of(&c)->url, "redis://127.0.0.1:6379/0");
    assert_int_equal(config_set(&c, "amqp_url", "amqp://a/, ftp://b", "environment FERRY_AMQP_URL", err,
                                sizeof(err)), -1);
    assert_non_null(strstr(err, "environment FERRY_AMQP_URL: key 'amqp_url': "));
    assert_int_equal(config_set(&c, "duration_buckets", "a,b", "flag", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "key 'duration_buckets'"));
    assert_int_equal(config_set(&c, "duration_buckets", "0.5,0.1", "flag", err, sizeof(err)), -1);
    assert_int_equal(config_set(&c, "duration_buckets", "0.1, 0.5,2", "flag", err, sizeof(err)), 0);
    assert_int_equal(config_set(&c, "socket_owner", "nosuchuser-xyz", "flag", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no user named 'nosuchuser-xyz'"));
    assert_int_equal(config_set(&c, "socket_owner", ":nosuchgroup-xyz", "flag", err, sizeof(err)), -1);
    assert_int_equal(config_set(&c, "socket_owner", "root:root", "flag", err, sizeof(err)), 0);
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    assert_int_equal(config_set(&c, "socket", longpath, "flag", err, sizeof(err)), -1);
    assert_int_equal(config_set(&c, "redis_deny", "A [B] [C]", "flag", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "flag: key 'redis_deny': bad entry"));   /* the key named once */
    assert_int_equal(config_set(&c, "redis_query_text", "all", "flag", err, sizeof(err)), -1);
    config_free(&c);
}

static void test_env_overrides_file(void **st)
{
    (void)st;
    struct config c;
    char err[256];
    config_defaults(&c);
    char *p = write_tmp("redis_url = redis://file:1/0\nmax_clients = 5\n");
    assert_int_equal(config_load_file(&c, p, true, err, sizeof(err)), 0);
    setenv("FERRY_REDIS_URL", "redis://env:2/0", 1);
    assert_int_equal(config_load_env(&c, err, sizeof(err)), 0);
    assert_string_equal(rds_config_of(&c)->url, "redis://env:2/0");
    assert_int_equal(c.max_clients, 5);
    setenv("FERRY_MAX_CLIENTS", "zero", 1);
    assert_int_equal(config_load_env(&c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "FERRY_MAX_CLIENTS"));
    unsetenv("FERRY_REDIS_URL");
    unsetenv("FERRY_MAX_CLIENTS");
    unlink(p);
    config_free(&c);
}

static void test_example_file_parses_to_defaults(void **st)
{
    (void)st;
    char path[] = "/tmp/ferry-unit-ex-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    config_write_example(f);
    fclose(f);
    struct config a, b;
    char err[256];
    config_defaults(&a);
    config_defaults(&b);
    assert_int_equal(config_set(&b, "max_clients", "3", "t", err, sizeof(err)), 0);
    assert_int_equal(config_load_file(&b, path, true, err, sizeof(err)), 0);
    for (size_t i = 0; i < config_nkeys(); i++) {
        char x[1024], y[1024];
        config_format(&a, config_key(i), x, sizeof(x));
        config_format(&b, config_key(i), y, sizeof(y));
        assert_string_equal(x, y);
    }
    unlink(path);
    config_free(&a);
    config_free(&b);
}

static void test_redis_urls(void **st)
{
    (void)st;
    struct url_redis a;
    char err[128];
    assert_int_equal(url_parse_redis("redis://localhost", &a, err, sizeof(err)), 0);
    assert_string_equal(a.host, "localhost");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_null(a.password);
    assert_false(a.tls);
    url_redis_free(&a);

    assert_int_equal(url_parse_redis("rediss://u:pw@cache.example:6380/1", &a, err, sizeof(err)), 0);
    assert_true(a.tls);
    assert_string_equal(a.host, "cache.example");
    assert_string_equal(a.password, "pw");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 1);
    url_redis_free(&a);

    assert_int_equal(url_parse_redis("redis://bob:s%40cret@10.0.0.1:6380/3", &a, err, sizeof(err)), 0);
    assert_string_equal(a.user, "bob");
    assert_string_equal(a.password, "s@cret");
    assert_string_equal(a.host, "10.0.0.1");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 3);
    url_redis_free(&a);

    assert_int_equal(url_parse_redis("redis://:pw@[::1]:7000", &a, err, sizeof(err)), 0);
    assert_null(a.user);
    assert_string_equal(a.password, "pw");
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 7000);
    url_redis_free(&a);

    assert_int_equal(url_parse_redis("unix:///run/redis.sock?db=2", &a, err, sizeof(err)), 0);
    assert_true(a.is_unix);
    assert_string_equal(a.path, "/run/redis.sock");
    assert_int_equal(a.db, 2);
    url_redis_free(&a);

    const char *bad[] = {"http://x", "redis://", "redis://h:0", "redis://h:70000", "redis://h:p",
                         "redis://h/x", "unix://rel.sock", "unix:///s?db=x", "redis://[::1",
                         "redis://u:%zz@h", "rediss://", "redisss://h", "rediss:/h", NULL};
    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        assert_int_equal(url_parse_redis(bad[i], &a, err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
    }
}

static void test_redact(void **st)
{
    (void)st;
    char out[128];
    url_redact("redis://bob:secret@h:1/0", out, sizeof(out));
    assert_string_equal(out, "redis://bob:***@h:1/0");
    assert_null(strstr(out, "secret"));
    url_redact("redis://:secret@h", out, sizeof(out));
    assert_string_equal(out, "redis://:***@h");
    url_redact("rediss://:secret@h", out, sizeof(out));
    assert_string_equal(out, "rediss://:***@h");
    url_redact("unix:///x.sock", out, sizeof(out));
    assert_string_equal(out, "unix:///x.sock");
}

static void test_amqp_urls(void **st)
{
    (void)st;
    struct url_amqp a;
    char err[256];
    assert_int_equal(url_parse_amqp("amqp://u:pw@mq.example/v", &a, err, sizeof(err)), 0);
    assert_false(a.tls);
    assert_int_equal(a.port, 5672);
    assert_string_equal(a.vhost, "v");
    url_amqp_free(&a);

    assert_int_equal(url_parse_amqp("amqps://u:pw@mq.example/", &a, err, sizeof(err)), 0);
    assert_true(a.tls);
    assert_string_equal(a.host, "mq.example");
    assert_int_equal(a.port, 5671);
    assert_string_equal(a.vhost, "/");
    assert_string_equal(a.redacted, "amqps://u:***@mq.example/");
    url_amqp_free(&a);

    assert_int_equal(url_parse_amqp("amqps://127.0.0.1:5999?heartbeat=0", &a, err, sizeof(err)), 0);
    assert_true(a.tls);
    assert_int_equal(a.port, 5999);
    assert_int_equal(a.heartbeat, 0);
    url_amqp_free(&a);

    const char *bad[] = {"amqpx://h/", "amqps:/h", "http://h", "amqps://h:0/", "amqps://h/?x=1", NULL};
    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        assert_int_equal(url_parse_amqp(bad[i], &a, err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
    }
}

/* The backends' keys, registered as main.c does. */
static int register_sections(void **st)
{
    (void)st;
    const struct cfg_section *secs[8];
    for (size_t i = 0; i < backend_nkinds; i++)
        secs[i] = backend_kinds[i]->config;
    config_register(secs, backend_nkinds);
    return 0;
}

/* A section's values survive a copy and a reload-style replacement in
 * place, and its strings are owned by each copy. */
static void test_sections_copy(void **st)
{
    (void)st;
    struct config a, b;
    char err[256];
    config_defaults(&a);
    assert_int_equal(config_set(&a, "redis_url", "redis://h:7/2", "t", err, sizeof(err)), 0);
    assert_int_equal(config_set(&a, "amqp_prefetch", "7", "t", err, sizeof(err)), 0);
    config_copy(&b, &a);
    config_free(&a);
    assert_string_equal(rds_config_of(&b)->url, "redis://h:7/2");
    assert_int_equal(mq_settings_of(&b)->prefetch, 7);
    assert_int_equal(config_set(&b, "amqp_backoff_min_ms", "9000", "t", err, sizeof(err)), 0);
    assert_int_equal(config_validate(&b, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "amqp_backoff_max_ms"));
    config_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_validate),
        cmocka_unit_test(test_file_values_and_comments),
        cmocka_unit_test(test_file_errors_name_key_and_line),
        cmocka_unit_test(test_bounds_and_types),
        cmocka_unit_test(test_value_checks_name_where),
        cmocka_unit_test(test_env_overrides_file),
        cmocka_unit_test(test_example_file_parses_to_defaults),
        cmocka_unit_test(test_redis_urls),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_amqp_urls),
        cmocka_unit_test(test_sections_copy),
    };
    return cmocka_run_group_tests_name("config_url", tests, register_sections, NULL);
}
