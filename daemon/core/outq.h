/* outq.h: a coalescing writer for one libuv stream.
 *
 * Producers append whole frames to `pending`. Once per loop iteration (in
 * the prepare and check phases) the flusher hands everything pending to the
 * kernel in one write, so a burst of responses, or of Redis commands from
 * many clients, costs one syscall rather than one each. What the socket
 * does not take at once goes in a uv_write; while that is in flight new
 * bytes collect in `pending`; two buffers swap roles.
 *
 *   producer --append--> pending --swap at flush--> writing --uv_try_write, uv_write--> fd
 *
 * A stream under TLS gives the queue a seal hook: at each flush, instead
 * of the swap, the hook encrypts everything pending in one go into
 * `writing`, so a flush stays one TLS write and one system call.
 *
 *   producer --append--> pending --seal at flush--> writing (records) --> fd
 */
#ifndef FERRY_OUTQ_H
#define FERRY_OUTQ_H

#include <stdbool.h>
#include <uv.h>

#include "cbuf.h"
#include "list.h"

struct outq;
/* status is 0 when everything queued has been written, or a libuv error. */
typedef void (*outq_done_cb)(struct outq *q, int status);
/* Moves what it can of plain (the pending bytes) into wire (empty on entry)
 * as the bytes to write, and empties plain of what it took; bytes of its
 * own (a TLS handshake message, an alert) may go into wire too. Returns 0,
 * or a negative libuv-style code that fails the write. */
typedef int (*outq_seal_cb)(struct outq *q, struct cbuf *plain, struct cbuf *wire);

struct flusher {
    uv_prepare_t prepare;  /* flushes what timers produced, before polling */
    uv_check_t check;      /* flushes what I/O callbacks produced */
    struct dlist dirty;    /* outqs with pending bytes and no write in flight */
};

struct outq {
    uv_stream_t *stream;     /* refers: the owner's stream */
    struct flusher *flusher; /* refers */
    struct cbuf pending;     /* owns: appended, not yet handed to libuv */
    struct cbuf writing;     /* owns: the bytes of the write in flight */
    uv_write_t wreq;
    bool busy;               /* a uv_write is in flight */
    bool enabled;            /* the stream is connected and may be written */
    struct dlist node;       /* in flusher->dirty */
    outq_done_cb done;       /* called when a write fails or the queue empties */
    outq_seal_cb seal;       /* NULL: pending is written as it is */
    bool wake;               /* the seal hook has bytes of its own to write */
};

void flusher_init(struct flusher *f, uv_loop_t *loop);
void flusher_close(struct flusher *f);
/* Flushes every dirty queue now. */
void flusher_run(struct flusher *f);

void outq_init(struct outq *q, struct flusher *f, outq_done_cb done);
/* Binds q to a connected stream and lets it write. */
void outq_enable(struct outq *q, uv_stream_t *stream);
/* Marks q as having new bytes in pending. */
void outq_kick(struct outq *q);
/* Marks q as having bytes for its seal hook to write, with or without
 * pending ones (a TLS handshake's messages). */
void outq_wake(struct outq *q);
/* Drops everything queued and detaches from the flusher; the owner is
 * closing its stream, which cancels a write in flight. */
void outq_reset(struct outq *q);
void outq_free(struct outq *q);
static inline size_t outq_size(const struct outq *q) { return q->pending.len + q->writing.len; }
static inline bool outq_idle(const struct outq *q) { return !q->busy && q->pending.len == 0 && !q->wake; }

#endif
