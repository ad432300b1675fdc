/* Unit tests: the RESP guard (resp_guard.c) in front of hiredis's reader,
 * driven as rds_conn.c drives it, over every way of cutting the input
 * into reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "resp_guard.h"

/* What the reader handed over: one letter per reply ('i' integer, 's'
 * string, 'a' array, 'n' nil, 'e' error, 'S' status) and 'R' per refused
 * reply, in order. */
struct outcome {
    char seq[64];
    size_t n;
    size_t fed;
    bool skipping_at_end;
};

static void drain(redisReader *r, struct outcome *o)
{
    for (;;) {
        void *reply = NULL;
        assert_int_equal(redisReaderGetReply(r, &reply), REDIS_OK);
        if (!reply)
            return;
        static const char code[] = {0, 's', 'a', 'i', 'n', 'S', 'e'};
        o->seq[o->n++] = code[((redisReply *)reply)->type];
        freeReplyObject(reply);
    }
}

static uint64_t unwanted = UINT64_MAX; /* the reply the next run drops */

static bool wanted(void *ctx, uint64_t nth)
{
    (void)ctx;
    return nth != unwanted;
}

/* Feeds input to the guard in reads of chunk bytes, as on_read does. */
static struct outcome run(const char *in, size_t len, size_t chunk, size_t max_bytes, size_t max_elems)
{
    struct outcome o = {.n = 0};
    struct resp_guard g;
    resp_guard_init(&g, max_bytes, max_elems);
    g.wanted = wanted;
    redisReader *r = redisReaderCreate();
    for (size_t at = 0; at < len; at += chunk) {
        size_t end = at + chunk < len ? at + chunk : len;
        for (size_t off = at; off < end;) {
            bool skipping = g.skipping;
            size_t k = resp_guard_scan(&g, in + off, end - off);
            if (!skipping && k) {
                assert_int_equal(redisReaderFeed(r, in + off, k), REDIS_OK);
                o.fed += k;
                drain(r, &o);
            }
            off += k;
            if (!skipping && g.skipping) {
                redisReaderFree(r);
                r = redisReaderCreate();
                o.seq[o.n++] = 'R';
            }
        }
    }
    o.skipping_at_end = g.skipping;
    redisReaderFree(r);
    o.seq[o.n] = '\0';
    return o;
}

static void expect_all_cuts(const char *in, size_t len, size_t max_bytes, size_t max_elems, const char *want)
{
    for (size_t chunk = 1; chunk <= len; chunk++) {
        struct outcome o = run(in, len, chunk, max_bytes, max_elems);
        if (strcmp(o.seq, want) != 0 || o.skipping_at_end)
            fail_msg("chunk %zu: got %s, want %s", chunk, o.seq, want);
    }
}

static void test_ordinary_replies_pass_whole(void **state)
{
    (void)state;
    const char *in = ":1\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n*0\r\n+OK\r\n-ERR no\r\n"
                     "*3\r\n$1\r\na\r\n*2\r\n:1\r\n:2\r\n$0\r\n\r\n";
    expect_all_cuts(in, strlen(in), 1 << 20, 1 << 16, "isnnaSea");
    struct outcome o = run(in, strlen(in), strlen(in), 1 << 20, 1 << 16);
    assert_int_equal(o.fed, strlen(in));
}

static char *nest(int levels, size_t *len)
{
    char *s = malloc((size_t)levels * 4 + 8);
    size_t n = 0;
    for (int i = 0; i < levels; i++)
        n += (size_t)sprintf(s + n, "*1\r\n");
    n += (size_t)sprintf(s + n, ":1\r\n");
    *len = n;
    return s;
}

static void test_too_deep_is_refused_alone(void **state)
{
    (void)state;
    char buf[512];
    size_t l8, l9, l30;
    char *d8 = nest(8, &l8), *d9 = nest(9, &l9), *d30 = nest(30, &l30);
    size_t n = (size_t)sprintf(buf, ":7\r\n%.*s%.*s+A\r\n%.*s$1\r\nz\r\n", (int)l9, d9, (int)l8, d8, (int)l30,
                               d30);
    /* The 8-deep reply is the deepest hiredis reads: it passes. */
    expect_all_cuts(buf, n, 1 << 20, 1 << 16, "iRaSRs");
    free(d8);
    free(d9);
    free(d30);
}

static void test_too_large_bulk_is_refused_before_its_payload(void **state)
{
    (void)state;
    const char *in = ":1\r\n$40\r\n0123456789012345678901234567890123456789\r\n$3\r\nabc\r\n";
    expect_all_cuts(in, strlen(in), 32, 1000, "iRs");
    /* Nothing of the refused payload reaches the reader. */
    struct outcome o = run(in, strlen(in), 1, 32, 1000);
    assert_true(o.fed < strlen(in) - 40);
    /* At the limit, it passes. */
    expect_all_cuts(in, strlen(in), 47, 1000, "iss");
}

static void test_limits_exact(void **state)
{
    (void)state;
    /* "$40\r\n" + 40 + "\r\n" is 47 bytes. */
    const char *in = "$40\r\n0123456789012345678901234567890123456789\r\n:5\r\n";
    expect_all_cuts(in, strlen(in), 47, 1000, "si");
    expect_all_cuts(in, strlen(in), 46, 1000, "Ri");
}

static void test_too_many_elements_refused_at_the_header(void **state)
{
    (void)state;
    /* Announced counts are refused before the reader allocates them. */
    const char *in = "*5\r\n:1\r\n:2\r\n:3\r\n:4\r\n:5\r\n*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n:3\r\n+OK\r\n";
    expect_all_cuts(in, strlen(in), 1 << 20, 4, "RRS");
    expect_all_cuts(in, strlen(in), 1 << 20, 5, "aaS");
    /* 3 bytes per element at least: a count too large for max_bytes. */
    const char *big = "*1000000\r\n";
    struct outcome o = run(big, strlen(big), 1, 1000, 1 << 30);
    assert_string_equal(o.seq, "R");
    assert_true(o.fed < strlen(big));
}

static void test_long_status_line_refused(void **state)
{
    (void)state;
    char in[300];
    size_t n = (size_t)sprintf(in, "+%0200d\r\n:1\r\n", 0);
    expect_all_cuts(in, n, 100, 10, "Ri");
}

static void test_unwanted_reply_is_dropped_unread(void **state)
{
    (void)state;
    const char *in = ":1\r\n*2\r\n$3\r\nabc\r\n*1\r\n:5\r\n:2\r\n";
    unwanted = 1;
    expect_all_cuts(in, strlen(in), 1 << 20, 1 << 16, "iRi");
    unwanted = 0;
    expect_all_cuts(in, strlen(in), 1 << 20, 1 << 16, "Rai");
    unwanted = UINT64_MAX;
}

/* Random replies: a generator writes RESP2 and says what the guard must do
 * with each (pass 'a'/'s'/... or refuse 'R'), from its own count of depth,
 * bytes and elements; the stream is fed in random cuts. Any disagreement
 * between the guard, hiredis and this model fails. */
struct gen {
    char *buf;
    size_t len, cap;
    uint32_t rng;
    size_t start;       /* where the reply being made began */
    unsigned maxdepth;  /* deepest aggregate nesting in the reply */
    size_t elements;
};

static uint32_t rnd(struct gen *g)
{
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 17;
    g->rng ^= g->rng << 5;
    return g->rng;
}

static void put(struct gen *g, const char *p, size_t n)
{
    if (g->len + n > g->cap) {
        g->cap = (g->len + n) * 2;
        g->buf = realloc(g->buf, g->cap);
    }
    memcpy(g->buf + g->len, p, n);
    g->len += n;
}

static void gen_item(struct gen *g, unsigned depth)
{
    char h[64];
    /* Aggregates only while the reply is small, so that it stays finite. */
    unsigned pick = rnd(g) % (depth < 11 && g->len - g->start < 6000 ? 8 : 5);
    switch (pick) {
    case 0: put(g, h, (size_t)sprintf(h, ":%d\r\n", (int)(rnd(g) % 100000) - 50000)); break;
    case 1: put(g, "+OK\r\n", 5); break;
    case 2: put(g, "$-1\r\n", 5); break;
    case 3: {
        size_t n = rnd(g) % 4 == 0 ? rnd(g) % 3000 : rnd(g) % 20;
        put(g, h, (size_t)sprintf(h, "$%zu\r\n", n));
        for (size_t i = 0; i < n; i++)
            put(g, (const char[]){(char)('a' + i % 26)}, 1);
        put(g, "\r\n", 2);
        break;
    }
    case 4: put(g, "-ERR x\r\n", 8); break;
    default: {
        unsigned n = rnd(g) % 4;
        if (rnd(g) % 8 == 0)
            n = rnd(g) % 300;
        if (depth + 1 > g->maxdepth)
            g->maxdepth = depth + 1;
        g->elements += n;
        put(g, h, (size_t)sprintf(h, "*%u\r\n", n));
        for (unsigned i = 0; i < n; i++)
            gen_item(g, depth + 1);
    }
    }
}

static void test_random_replies_agree_with_the_reader(void **state)
{
    (void)state;
    const size_t max_bytes = 4000, max_elems = 200;
    size_t refused = 0, passed_arrays = 0, deep = 0;
    for (uint32_t seed = 1; seed <= 300; seed++) {
        struct gen g = {.rng = seed * 2654435761u};
        char want[64];
        size_t nw = 0;
        for (int r = 0; r < 12; r++) {
            size_t start = g.len;
            g.start = start;
            g.maxdepth = 0;
            g.elements = 0;
            int type = (int)(rnd(&g) % 8);
            if (type < 4) {
                gen_item(&g, 11); /* a scalar */
            } else if (type == 7) {
                /* A chain around the reader's depth limit, with a
                 * random tree at its bottom. */
                unsigned d = 5 + rnd(&g) % 7;
                for (unsigned i = 0; i < d; i++)
                    put(&g, "*1\r\n", 4);
                g.elements = d;
                g.maxdepth = d;
                gen_item(&g, d); /* may nest deeper still */
            } else {
                gen_item(&g, 0);
            }
            size_t bytes = g.len - start;
            char kind = g.buf[start] == '*' ? (g.buf[start + 1] == '-' ? 'n' : 'a')
                        : g.buf[start] == ':' ? 'i' : g.buf[start] == '+' ? 'S'
                        : g.buf[start] == '-' ? 'e' : g.buf[start + 1] == '-' ? 'n' : 's';
            bool refuse = g.maxdepth > RESP_GUARD_MAX_NESTING || bytes > max_bytes || g.elements > max_elems;
            want[nw++] = refuse ? 'R' : kind;
            refused += refuse;
            passed_arrays += !refuse && kind == 'a';
            deep += g.maxdepth > RESP_GUARD_MAX_NESTING && bytes <= max_bytes && g.elements <= max_elems;
        }
        want[nw] = '\0';
        size_t chunk = 1 + rnd(&g) % 700;
        struct outcome o = run(g.buf, g.len, chunk, max_bytes, max_elems);
        if (strcmp(o.seq, want) != 0 || o.skipping_at_end)
            fail_msg("seed %u chunk %zu: got %s, want %s", seed, chunk, o.seq, want);
        free(g.buf);
    }
    /* The model met every case: refusals, deep ones alone, arrays passed. */
    print_message("refused %zu, deep %zu, arrays passed %zu\n", refused, deep, passed_arrays);
    assert_true(refused > 50 && deep > 5 && passed_arrays > 50);
}

/* A bare '\n' is part of a simple string, as hiredis's reader has it.
 * Ending the line there instead (as the guard once did) let a server
 * make the guard step over "*999999" as a bulk payload while the reader
 * read it as an array header, and allocate what it announced (found by
 * tests/fuzz/fuzz_resp: a 3.5 GB calloc). Whole and split at each byte. */
static void test_lines_end_where_the_reader_ends_them(void **state)
{
    (void)state;
    const char *in = "+a\n$7\r\n*999999\r\n";
    for (size_t cut = 1; cut <= strlen(in); cut++) {
        struct resp_guard g;
        resp_guard_init(&g, 1 << 20, 4096);
        size_t k = resp_guard_scan(&g, in, cut);
        if (k == cut && !g.skipping)
            k += resp_guard_scan(&g, in + cut, strlen(in) - cut);
        /* "+a\n$7" is one status reply; the array header that follows
         * is refused before the reader sees it. */
        assert_true(g.skipping);
        assert_int_equal(g.why, RESP_GUARD_TOO_LARGE);
        /* Cut after the status reply, and before the header's line ends. */
        assert_true(k >= strlen("+a\n$7\r\n") && k < strlen(in));
    }
}

static void test_not_resp2_is_left_to_the_reader(void **state)
{
    (void)state;
    struct resp_guard g;
    resp_guard_init(&g, 100, 10);
    const char *in = ":1\r\n%1\r\n";
    assert_int_equal(resp_guard_scan(&g, in, strlen(in)), strlen(in));
    assert_false(g.skipping);
    assert_int_equal(g.why, RESP_GUARD_PROTOCOL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordinary_replies_pass_whole),
        cmocka_unit_test(test_too_deep_is_refused_alone),
        cmocka_unit_test(test_too_large_bulk_is_refused_before_its_payload),
        cmocka_unit_test(test_limits_exact),
        cmocka_unit_test(test_too_many_elements_refused_at_the_header),
        cmocka_unit_test(test_long_status_line_refused),
        cmocka_unit_test(test_unwanted_reply_is_dropped_unread),
        cmocka_unit_test(test_random_replies_agree_with_the_reader),
        cmocka_unit_test(test_not_resp2_is_left_to_the_reader),
        cmocka_unit_test(test_lines_end_where_the_reader_ends_them),
    };
    return cmocka_run_group_tests_name("resp_guard", tests, NULL, NULL);
}
