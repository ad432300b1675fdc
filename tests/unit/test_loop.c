/* Loop tests: the deadline queue (deadline.c) and the coalescing writer
 * (outq.c) on a real libuv loop, each ending with every handle closed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "deadline.h"
#include "outq.h"

struct item {
    struct deadline d;
    int tag;
};

static int fired[16];
static int nfired;

static void on_expire(struct deadlines *d, struct deadline *e)
{
    (void)d;
    fired[nfired++] = container_of(e, struct item, d)->tag;
}

static void test_deadlines_fire_in_order(void **st)
{
    (void)st;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct deadlines q;
    deadlines_init(&q, &loop, on_expire);
    struct item it[5];
    uint64_t now = uv_now(&loop);
    uint64_t at[5] = {40, 10, 30, 10, 20};
    for (int i = 0; i < 5; i++) {
        it[i].tag = i;
        dlist_init(&it[i].d.node);
        deadline_add(&q, &it[i].d, now + at[i]);
    }
    deadline_remove(&q, &it[2].d); /* removed entries never fire */
    deadline_remove(&q, &it[2].d); /* and a second removal is harmless */
    nfired = 0;
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(nfired, 4);
    assert_int_equal(fired[0], 1); /* equal deadlines keep insertion order */
    assert_int_equal(fired[1], 3);
    assert_int_equal(fired[2], 4);
    assert_int_equal(fired[3], 0);
    deadlines_close(&q);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* every handle closed */
}

struct sink {
    uv_pipe_t pipe;
    char buf[1 << 16];
    size_t len;
    int reads;
};

static void sink_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    (void)s;
    struct sink *k = container_of((uv_pipe_t *)h, struct sink, pipe);
    b->base = k->buf + k->len;
    b->len = sizeof(k->buf) - k->len;
}

static void sink_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct sink *k = container_of((uv_pipe_t *)st, struct sink, pipe);
    if (n > 0) {
        k->len += (size_t)n;
        k->reads++;
    } else if (n < 0) {
        uv_close((uv_handle_t *)st, NULL);
    }
}

static int done_calls, done_status = 1;
static uv_pipe_t src;

static void on_done(struct outq *q, int status)
{
    (void)q;
    done_calls++;
    done_status = status;
    uv_close((uv_handle_t *)&src, NULL); /* EOF for the sink */
}

static void test_outq_coalesces(void **st)
{
    (void)st;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct flusher f;
    flusher_init(&f, &loop);
    uv_pipe_init(&loop, &src, 0);
    uv_pipe_open(&src, sv[0]);
    static struct sink k;
    uv_pipe_init(&loop, &k.pipe, 0);
    uv_pipe_open(&k.pipe, sv[1]);
    uv_read_start((uv_stream_t *)&k.pipe, sink_alloc, sink_read);

    struct outq q;
    outq_init(&q, &f, on_done);
    cbuf_put(&q.pending, "early", 5); /* queued before the stream is usable */
    outq_kick(&q);
    outq_enable(&q, (uv_stream_t *)&src);
    for (int i = 0; i < 100; i++) {
        char line[16];
        int n = snprintf(line, sizeof(line), "<%d>", i);
        cbuf_put(&q.pending, line, (size_t)n);
        outq_kick(&q);
    }
    assert_true(q.pending.len > 0); /* nothing written until the loop flushes */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(done_calls, 1);
    assert_int_equal(done_status, 0);
    assert_true(k.len > 5);
    assert_memory_equal(k.buf, "early<0><1><2>", 14);
    assert_memory_equal(k.buf + k.len - 4, "<99>", 4);
    assert_int_equal(k.reads, 1); /* one write carried all 101 appends */
    outq_free(&q);
    flusher_close(&f);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A flush larger than the socket takes: the first part goes at once
 * (uv_try_write), the rest through a write request, in order. */
static struct {
    uv_pipe_t pipe;
    size_t len;
    bool in_order;
    char buf[1 << 16];
} big;

static void big_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    (void)h;
    (void)s;
    b->base = big.buf;
    b->len = sizeof(big.buf);
}

static void big_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    for (ssize_t i = 0; i < n; i++)
        if ((unsigned char)b->base[i] != (unsigned char)((big.len + (size_t)i) % 251))
            big.in_order = false;
    if (n > 0)
        big.len += (size_t)n;
    else if (n < 0)
        uv_close((uv_handle_t *)st, NULL);
}

static void test_outq_writes_what_the_socket_does_not_take_at_once(void **st)
{
    (void)st;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct flusher f;
    flusher_init(&f, &loop);
    done_calls = 0;
    done_status = 1;
    uv_pipe_init(&loop, &src, 0);
    uv_pipe_open(&src, sv[0]);
    big.len = 0;
    big.in_order = true;
    uv_pipe_init(&loop, &big.pipe, 0);
    uv_pipe_open(&big.pipe, sv[1]);
    uv_read_start((uv_stream_t *)&big.pipe, big_alloc, big_read);

    struct outq q;
    outq_init(&q, &f, on_done);
    outq_enable(&q, (uv_stream_t *)&src);
    size_t n = 3u << 20;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(i % 251);
        cbuf_put(&q.pending, &c, 1);
    }
    outq_kick(&q);
    flusher_run(&f);
    assert_true(q.busy); /* the socket took part: a write request has the rest */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(done_calls, 1);
    assert_int_equal(done_status, 0);
    assert_int_equal(big.len, n);
    assert_true(big.in_order);
    outq_free(&q);
    flusher_close(&f);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadlines_fire_in_order),
        cmocka_unit_test(test_outq_coalesces),
        cmocka_unit_test(test_outq_writes_what_the_socket_does_not_take_at_once),
    };
    return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
