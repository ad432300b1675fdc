/* outq.c: see outq.h. */
#include "outq.h"

/* Buffers keep up to this much memory when they empty; bigger ones are
 * returned to the allocator so an idle daemon stays small. */
#define KEEP_BYTES (64 * 1024)

static void flush_one(struct outq *q);

static bool has_work(const struct outq *q) { return q->pending.len > 0 || q->wake; }

static void on_prepare(uv_prepare_t *h) { flusher_run(container_of(h, struct flusher, prepare)); }
static void on_check(uv_check_t *h) { flusher_run(container_of(h, struct flusher, check)); }

void flusher_init(struct flusher *f, uv_loop_t *loop)
{
    dlist_init(&f->dirty);
    uv_prepare_init(loop, &f->prepare);
    uv_check_init(loop, &f->check);
    uv_prepare_start(&f->prepare, on_prepare);
    uv_check_start(&f->check, on_check);
    /* These handles must not keep the loop alive on their own. */
    uv_unref((uv_handle_t *)&f->prepare);
    uv_unref((uv_handle_t *)&f->check);
}

void flusher_close(struct flusher *f)
{
    uv_close((uv_handle_t *)&f->prepare, NULL);
    uv_close((uv_handle_t *)&f->check, NULL);
}

void flusher_run(struct flusher *f)
{
    while (!dlist_empty(&f->dirty)) {
        struct dlist *n = f->dirty.next;
        dlist_remove(n);
        flush_one(container_of(n, struct outq, node));
    }
}

void outq_init(struct outq *q, struct flusher *f, outq_done_cb done)
{
    q->stream = NULL;
    q->flusher = f;
    cbuf_init(&q->pending);
    cbuf_init(&q->writing);
    q->busy = false;
    q->enabled = false;
    dlist_init(&q->node);
    q->done = done;
    q->seal = NULL;
    q->wake = false;
}

void outq_enable(struct outq *q, uv_stream_t *stream)
{
    q->stream = stream;
    q->enabled = true;
    outq_kick(q);
}

void outq_kick(struct outq *q)
{
    if (q->enabled && !q->busy && has_work(q) && !dlist_linked(&q->node))
        dlist_push_tail(&q->flusher->dirty, &q->node);
}

void outq_wake(struct outq *q)
{
    q->wake = true;
    outq_kick(q);
}

/* The write of `writing` ended, at once or in a write request: the next
 * flush may go, or the owner hears the queue is empty or failed. */
static void write_ended(struct outq *q, int status)
{
    cbuf_reset(&q->writing, KEEP_BYTES);
    if (status < 0)
        q->done(q, status);
    else if (has_work(q))
        outq_kick(q);
    else
        q->done(q, 0);
}

static void on_write(uv_write_t *w, int status)
{
    struct outq *q = container_of(w, struct outq, wreq);
    q->busy = false;
    if (status == UV_ECANCELED)
        return; /* the owner is closing; it no longer cares */
    write_ended(q, status);
}

static void flush_one(struct outq *q)
{
    if (q->busy || !q->enabled || !has_work(q))
        return;
    if (q->seal) {
        q->wake = false;
        int rc = q->seal(q, &q->pending, &q->writing);
        if (rc < 0) {
            write_ended(q, rc);
            return;
        }
        if (q->pending.len == 0)
            cbuf_reset(&q->pending, KEEP_BYTES);
        /* Nothing to write yet: the plaintext waits for the TLS
         * handshake, whose end wakes the queue again. */
        if (q->writing.len == 0)
            return;
    } else {
        struct cbuf t = q->writing;
        q->writing = q->pending;
        q->pending = t;
        q->pending.len = 0;
    }
    uv_buf_t b = uv_buf_init((char *)q->writing.data, (unsigned)q->writing.len);
    /* Written at once, the common case, it needs no write request: libuv
     * 1.44 follows every completed uv_write with an epoll_ctl MOD of the
     * descriptor (its drain re-queues the watcher even when the events
     * did not change), a system call more per flush, and so per request
     * when a client sends one at a time (strace). */
    int n = uv_try_write(q->stream, &b, 1);
    if (n == (int)b.len || (n < 0 && n != UV_EAGAIN)) {
        write_ended(q, n < 0 ? n : 0);
        return;
    }
    if (n > 0) {
        b.base += n;
        b.len -= (size_t)n;
    }
    int rc = uv_write(&q->wreq, q->stream, &b, 1, on_write);
    if (rc < 0) {
        write_ended(q, rc);
        return;
    }
    q->busy = true;
}

void outq_reset(struct outq *q)
{
    dlist_remove(&q->node);
    q->enabled = false;
    q->wake = false;
    q->pending.len = 0;
}

void outq_free(struct outq *q)
{
    dlist_remove(&q->node);
    cbuf_free(&q->pending);
    cbuf_free(&q->writing);
}
