/* client.c: reading frames from an application and writing its responses.
 *
 * Backpressure, in two directions:
 * - a client with client_max_inflight requests in flight is not read from
 *   until half of them have finished; the kernel's socket buffer then pushes
 *   back on the application, and no request is refused;
 * - a client whose queued responses pass client_max_output is not reading
 *   them, and is disconnected: its memory would otherwise grow without bound.
 *
 * A client that shuts down its sending side (EOF) still gets the responses
 * to what it sent; it is closed once they are written. A client that closes
 * its socket is closed at once, and its requests are abandoned. */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "codec.h"
#include "errors.h"
#include "frame.h"
#include "log.h"
#include "backend.h"
#include "request.h"
#include "server.h"

#define READ_CHUNK (64 * 1024)
#define KEEP_IN (64 * 1024)

static void on_close(uv_handle_t *h)
{
    struct client *c = container_of((uv_pipe_t *)h, struct client, pipe);
    struct server *s = c->srv;
    outq_free(&c->out);
    cbuf_free(&c->in);
    free(c);
    server_check_drained(s);
}

void client_close(struct client *c, const char *reason)
{
    if (c->closing)
        return;
    c->closing = true;
    struct server *s = c->srv;
    if (c->ninflight)
        log_info("client %llu closed: %s (%zu requests in flight abandoned)",
                 (unsigned long long)c->id, reason, c->ninflight);
    else
        log_debug("client %llu closed: %s", (unsigned long long)c->id, reason);
    while (!dlist_empty(&c->inflight))
        request_abandon(container_of(c->inflight.next, struct request, client_node));
    for (size_t i = 0; i < s->nbackends; i++)
        if (s->backends[i]->ops->client_closed)
            s->backends[i]->ops->client_closed(s->backends[i], c);
    dlist_remove(&c->node);
    dlist_remove(&c->resume_node);
    s->nclients--;
    outq_reset(&c->out);
    uv_close((uv_handle_t *)&c->pipe, on_close);
}

/* Closes c if it has nothing left to do and was asked to finish. */
static void maybe_finish(struct client *c)
{
    if (c->closing)
        return;
    if ((c->eof || c->close_when_flushed || c->srv->draining) && c->ninflight == 0 &&
        outq_idle(&c->out))
        client_close(c, c->eof ? "client finished sending" : "finished");
}

void client_finish(struct client *c)
{
    c->close_when_flushed = true;
    maybe_finish(c);
}

static void on_out_done(struct outq *q, int status)
{
    struct client *c = container_of(q, struct client, out);
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "write failed: %s", uv_strerror(status));
        client_close(c, why);
        return;
    }
    maybe_finish(c);
}

void client_sent(struct client *c)
{
    if (c->closing) {
        c->out.pending.len = 0;
        return;
    }
    size_t queued = outq_size(&c->out);
    if (queued > (size_t)c->srv->cfg.client_max_output) {
        c->srv->counters.clients_dropped_slow++;
        char why[128];
        snprintf(why, sizeof(why), "not reading its responses (%zu bytes queued, limit %ld)",
                 queued, c->srv->cfg.client_max_output);
        log_warn("client %llu disconnected: %s", (unsigned long long)c->id, why);
        client_close(c, why);
        return;
    }
    outq_kick(&c->out);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct client *c = container_of((uv_pipe_t *)h, struct client, pipe);
    cbuf_reserve(&c->in, READ_CHUNK);
    buf->base = (char *)c->in.data + c->in.len;
    buf->len = c->in.cap - c->in.len;
}

/* Handles every whole frame in c->in, until the client is paused or closed. */
static void process_input(struct client *c)
{
    struct server *s = c->srv;
    size_t off = 0;
    while (!c->closing && !c->paused) {
        size_t body;
        long n = frame_next(c->in.data + off, c->in.len - off, (size_t)s->cfg.max_frame, &body);
        if (n == 0)
            break;
        if (n < 0) {
            char why[128];
            snprintf(why, sizeof(why), "frame larger than max_frame (%ld bytes)", s->cfg.max_frame);
            s->counters.clients_dropped_framing++;
            codec_error_frame(&c->out.pending, false, 0, FE_TOO_LARGE, why);
            outq_kick(&c->out);
            /* Framing is lost: read no more, write the error, then close. */
            c->close_when_flushed = true;
            uv_read_stop((uv_stream_t *)&c->pipe);
            c->in.len = 0;
            log_info("client %llu: %s; closing", (unsigned long long)c->id, why);
            maybe_finish(c);
            return;
        }
        request_handle(c, c->in.data + off + FRAME_HDR, body);
        off += (size_t)n;
        if (c->ninflight >= (size_t)s->cfg.client_max_inflight && !c->closing) {
            c->paused = true;
            uv_read_stop((uv_stream_t *)&c->pipe);
        }
    }
    if (c->closing)
        return;
    cbuf_consume(&c->in, off);
    if (c->in.len == 0 && c->in.cap > KEEP_IN)
        cbuf_reset(&c->in, KEEP_IN);
}

/* Tells a client that closed its socket from one that only shut down its
 * sending side and still waits for responses: on a Unix stream socket the
 * first raises POLLHUP, the second only ends our reading. poll() with a
 * zero timeout does not block. */
static bool peer_gone(struct client *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
        return true;
    struct pollfd p = {.fd = fd, .events = 0};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct client *c = container_of((uv_pipe_t *)st, struct client, pipe);
    if (nread > 0) {
        c->in.len += (size_t)nread;
        c->srv->counters.bytes_in += (uint64_t)nread;
        process_input(c);
        return;
    }
    if (nread == 0)
        return;
    uv_read_stop(st);
    if (nread == UV_EOF && peer_gone(c)) {
        client_close(c, "client disconnected");
        return;
    }
    if (nread == UV_EOF) {
        c->eof = true;
        if (c->in.len > 0)
            log_debug("client %llu: EOF inside a frame (%zu bytes dropped)",
                      (unsigned long long)c->id, c->in.len);
        c->in.len = 0;
        maybe_finish(c);
        return;
    }
    char why[96];
    snprintf(why, sizeof(why), "read failed: %s", uv_strerror((int)nread));
    client_close(c, why);
}

static void on_resume(uv_idle_t *h)
{
    struct server *s = container_of(h, struct server, resume_idle);
    uv_idle_stop(h);
    client_resume_all(s);
}

void client_request_done(struct client *c)
{
    struct server *s = c->srv;
    if (c->closing)
        return;
    if (c->paused && c->ninflight <= (size_t)s->cfg.client_max_inflight / 2 &&
        !dlist_linked(&c->resume_node)) {
        /* Resuming from here could re-enter request_handle() from inside a
         * completion; defer it to the idle callback. */
        dlist_push_tail(&s->resume, &c->resume_node);
        uv_idle_start(&s->resume_idle, on_resume);
    }
    maybe_finish(c);
    if (s->draining)
        server_check_drained(s);
}

void client_resume_all(struct server *s)
{
    while (!dlist_empty(&s->resume)) {
        struct client *c = container_of(s->resume.next, struct client, resume_node);
        dlist_remove(&c->resume_node);
        if (c->closing || !c->paused)
            continue;
        c->paused = false;
        process_input(c);
        if (!c->paused && !c->closing && !c->eof && !c->close_when_flushed)
            uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, on_read);
    }
}

void client_accept(struct server *s)
{
    struct client *c = xcalloc(1, sizeof(*c));
    c->srv = s;
    c->id = ++s->next_client_id;
    dlist_init(&c->inflight);
    dlist_init(&c->resume_node);
    cbuf_init(&c->in);
    outq_init(&c->out, &s->flusher, on_out_done);
    uv_pipe_init(s->loop, &c->pipe, 0);
    int rc = uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->pipe);
    dlist_push_tail(&s->clients, &c->node);
    s->nclients++;
    if (rc < 0) {
        log_warn("accept failed: %s", uv_strerror(rc));
        client_close(c, "accept failed");
        return;
    }
    outq_enable(&c->out, (uv_stream_t *)&c->pipe);
    if (s->nclients > (size_t)s->cfg.max_clients || s->draining) {
        int code = s->draining ? FE_SHUTTING_DOWN : FE_OVERLOADED;
        char why[96];
        snprintf(why, sizeof(why), "too many clients (max_clients %ld)", s->cfg.max_clients);
        if (!s->draining) {
            s->counters.clients_rejected++;
            log_warn("client %llu refused: %s", (unsigned long long)c->id, why);
        }
        codec_error_frame(&c->out.pending, false, 0, code, s->draining ? NULL : why);
        outq_kick(&c->out);
        c->close_when_flushed = true;
        return;
    }
    s->counters.clients_accepted++;
    log_debug("client %llu connected", (unsigned long long)c->id);
    uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, on_read);
}
