/* Unit tests: stream entries between CBOR and Redis (stream_entry.c):
 * xadd's fields in, an `entry` push's data out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cbuf.h"
#include "codec.h"
#include "stream_entry.h"

static void fields_from_map(void **state)
{
    (void)state;
    struct cbuf b;
    cbuf_init(&b);
    cbuf_map(&b, 2);
    cbuf_str(&b, "a");
    cbuf_str(&b, "1");
    cbuf_str(&b, "b");
    cbuf_bytes(&b, "\x00\xff", 2);
    char msg[200];
    assert_int_equal(stream_entry_count(b.data, b.len, msg, sizeof(msg)), 2);
    const char *argv[4];
    size_t lens[4];
    stream_entry_fields(b.data, b.len, argv, lens);
    assert_int_equal(lens[0], 1);
    assert_memory_equal(argv[0], "a", 1);
    assert_memory_equal(argv[1], "1", 1);
    assert_memory_equal(argv[2], "b", 1);
    assert_int_equal(lens[3], 2);
    assert_memory_equal(argv[3], "\x00\xff", 2);
    cbuf_free(&b);
}

static void fields_from_pairs(void **state)
{
    (void)state;
    struct cbuf b;
    cbuf_init(&b);
    cbuf_array(&b, 2);
    cbuf_array(&b, 2);
    cbuf_str(&b, "k");
    cbuf_str(&b, "v1");
    cbuf_array(&b, 2);
    cbuf_str(&b, "k");
    cbuf_str(&b, "v2");
    char msg[200];
    assert_int_equal(stream_entry_count(b.data, b.len, msg, sizeof(msg)), 2);
    const char *argv[4];
    size_t lens[4];
    stream_entry_fields(b.data, b.len, argv, lens);
    assert_memory_equal(argv[3], "v2", 2);
    cbuf_free(&b);
}

/* Each bad shape is refused with a message, never read past its end. */
static void fields_refused(void **state)
{
    (void)state;
    char msg[200];
    struct cbuf b;
    cbuf_init(&b);
    cbuf_map(&b, 0);
    assert_int_equal(stream_entry_count(b.data, b.len, msg, sizeof(msg)), -1);
    assert_non_null(strstr(msg, "at least one"));
    cbuf_reset(&b, 0);
    cbuf_map(&b, 1);
    cbuf_str(&b, "a");
    cbuf_uint(&b, 1);
    assert_int_equal(stream_entry_count(b.data, b.len, msg, sizeof(msg)), -1);
    cbuf_reset(&b, 0);
    cbuf_array(&b, 1);
    cbuf_array(&b, 3);
    cbuf_str(&b, "a");
    cbuf_str(&b, "b");
    cbuf_str(&b, "c");
    assert_int_equal(stream_entry_count(b.data, b.len, msg, sizeof(msg)), -1);
    cbuf_reset(&b, 0);
    cbuf_map(&b, 2); /* truncated */
    cbuf_str(&b, "a");
    cbuf_str(&b, "b");
    assert_int_equal(stream_entry_count(b.data, b.len, msg, sizeof(msg)), -1);
    cbuf_reset(&b, 0);
    cbuf_str(&b, "not a map");
    assert_int_equal(stream_entry_count(b.data, b.len, msg, sizeof(msg)), -1);
    cbuf_free(&b);
}

static redisReply *str(const char *s)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_STRING;
    r->str = (char *)s;
    r->len = strlen(s);
    return r;
}

static redisReply *arr(size_t n)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n, sizeof(*r->element));
    return r;
}

static void release(redisReply *r)
{
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        release(r->element[i]);
    free(r->element);
    free(r);
}

/* The push's data, decoded back: its "fields" item's type and size. */
static void check_fields(const struct cbuf *o, enum tok_type want, uint64_t n)
{
    struct cursor c = {o->data, o->len, 0};
    struct tok t;
    assert_int_equal(cursor_next(&c, &t), 0);
    assert_int_equal(t.type, TOK_MAP);
    assert_int_equal(t.u, 4);
    for (int i = 0; i < 4; i++) {
        struct tok k, v;
        assert_int_equal(cursor_next(&c, &k), 0);
        assert_int_equal(cursor_next(&c, &v), 0);
        if (k.n == 6 && !memcmp(k.p, "fields", 6)) {
            assert_int_equal(v.type, want);
            assert_int_equal(v.u, n);
            return;
        }
        if (v.type == TOK_ARRAY || v.type == TOK_MAP)
            fail();
    }
    fail();
}

static void encode_entry(void **state)
{
    (void)state;
    redisReply *e = arr(2);
    e->element[0] = str("1-0");
    e->element[1] = arr(4);
    e->element[1]->element[0] = str("a");
    e->element[1]->element[1] = str("x");
    e->element[1]->element[2] = str("b");
    e->element[1]->element[3] = str("y");
    struct cbuf o;
    cbuf_init(&o);
    assert_int_equal(stream_entry_encode(&o, "s", 1, e, 3), 0);
    check_fields(&o, TOK_MAP, 2);
    /* A repeated name: pairs, since a CBOR map may not repeat a key. */
    e->element[1]->element[2]->str = "a";
    cbuf_reset(&o, 0);
    assert_int_equal(stream_entry_encode(&o, "s", 1, e, 1), 0);
    check_fields(&o, TOK_ARRAY, 2);
    /* A deleted entry (nil fields) is no entry. */
    release(e->element[1]);
    e->element[1] = calloc(1, sizeof(redisReply));
    e->element[1]->type = REDIS_REPLY_NIL;
    cbuf_reset(&o, 0);
    assert_int_equal(stream_entry_encode(&o, "s", 1, e, 1), -1);
    assert_int_equal(o.len, 0);
    release(e);
    cbuf_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fields_from_map),
        cmocka_unit_test(fields_from_pairs),
        cmocka_unit_test(fields_refused),
        cmocka_unit_test(encode_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
