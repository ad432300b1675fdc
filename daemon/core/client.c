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
 * its socket is closed at once, and its requests are abandoned.
 *
 * Memory, across clients: the bytes buffered for every client together
 * (input not yet handled, responses not yet written) are counted, and past
 * max_buffered the client holding the most is cut off, so that forty
 * clients that each half-send a large frame, or never read large responses,
 * cannot take the daemon's memory between them. A frame started and not
 * finished within frame_timeout_ms ends its client too. */
#define _GNU_SOURCE /* struct ucred */
#include <poll.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "codec.h"
#include "errors.h"
#include "frame.h"
#include "log.h"
#include "config.h"
#include "counters.h"
#include "policy.h"
#include "request.h"

#define READ_CHUNK (64 * 1024)
#define KEEP_IN (64 * 1024)

/* Brings the daemon-wide counts up to date with c's buffers. */
static void account(struct client *c)
{
    struct client_set *s = c->set;
    size_t in = c->closing ? 0 : c->in.len, out = c->closing ? 0 : outq_size(&c->out);
    s->buffered_in = s->buffered_in - c->acct_in + in;
    s->buffered_out = s->buffered_out - c->acct_out + out;
    c->acct_in = in;
    c->acct_out = out;
}

/* Past max_buffered, cuts off the client that holds the most. A client
 * whose input is the larger part is sent 'overloaded' (its framing is lost
 * with the input dropped); one whose unread output is the larger part is
 * not reading, and is closed at once, which frees that output. */
static void cut_largest(struct client_set *s)
{
    static bool busy; /* closing a client may complete requests of others */
    if (busy)
        return;
    busy = true;
    struct client *worst = NULL;
    struct dlist *pos;
    dlist_foreach(pos, &s->list) {
        struct client *c = container_of(pos, struct client, node);
        if (!c->closing && (!worst || c->acct_in + c->acct_out > worst->acct_in + worst->acct_out))
            worst = c;
    }
    if (worst) {
        char why[200];
        snprintf(why, sizeof(why),
                 "max_buffered (%ld bytes) reached: this client holds the most (%zu bytes of input, %zu of "
                 "output)",
                 s->cfg->max_buffered, worst->acct_in, worst->acct_out);
        s->counters->clients_dropped_memory++;
        log_warn("%s cut off: %s", worst->who, why);
        if (worst->acct_in >= worst->acct_out && !worst->close_when_flushed) {
            /* Only emptied, not freed: this may run inside worst's own
             * process_input. The memory goes when it closes, once the
             * error frame is written. */
            uv_read_stop((uv_stream_t *)&worst->pipe);
            worst->in.len = 0;
            deadline_remove(&s->frame_deadlines, &worst->frame_deadline);
            worst->close_when_flushed = true;
            codec_error_frame(&worst->out.pending, false, 0, FE_OVERLOADED, why);
            outq_kick(&worst->out);
            account(worst);
        } else {
            client_close(worst, why);
        }
    }
    busy = false;
}

static inline void enforce_budget(struct client_set *s)
{
    if (s->buffered_in + s->buffered_out > (uint64_t)s->cfg->max_buffered)
        cut_largest(s);
}

static void on_close(uv_handle_t *h)
{
    struct client *c = container_of((uv_pipe_t *)h, struct client, pipe);
    struct client_set *s = c->set;
    outq_free(&c->out);
    cbuf_free(&c->in);
    free(c);
    s->idle(s->hook_arg);
}

void client_close(struct client *c, const char *reason)
{
    if (c->closing)
        return;
    c->closing = true;
    struct client_set *s = c->set;
    if (c->ro.ninflight)
        log_info("%s closed: %s (%zu requests in flight abandoned)", c->who, reason, c->ro.ninflight);
    else
        log_debug("%s closed: %s", c->who, reason);
    while (!dlist_empty(&c->ro.inflight))
        request_abandon(container_of(c->ro.inflight.next, struct request, client_node));
    s->closed(s->hook_arg, c);
    dlist_remove(&c->node);
    dlist_remove(&c->resume_node);
    deadline_remove(&s->frame_deadlines, &c->frame_deadline);
    s->n--;
    outq_reset(&c->out);
    account(c);
    uv_close((uv_handle_t *)&c->pipe, on_close);
}

/* Closes c if it has nothing left to do and was asked to finish. */
static void maybe_finish(struct client *c)
{
    if (c->closing)
        return;
    if ((c->eof || c->close_when_flushed || c->set->rq->draining) && c->ro.ninflight == 0 &&
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
    account(c);
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "write failed: %s", uv_strerror(status));
        client_close(c, why);
        return;
    }
    maybe_finish(c);
}

void client_push(struct client *c, uint64_t sub, const char *kind, const uint8_t *data, size_t len,
                 const char *traceparent)
{
    codec_push_frame(&c->out.pending, sub, kind, data, len, traceparent);
    client_sent(c);
}

void client_sent(struct client *c)
{
    if (c->closing) {
        c->out.pending.len = 0;
        return;
    }
    size_t queued = outq_size(&c->out);
    if (queued > (size_t)c->set->cfg->client_max_output) {
        c->set->counters->clients_dropped_slow++;
        char why[128];
        snprintf(why, sizeof(why), "not reading its responses (%zu bytes queued, limit %ld)",
                 queued, c->set->cfg->client_max_output);
        log_warn("%s disconnected: %s", c->who, why);
        client_close(c, why);
        return;
    }
    outq_kick(&c->out);
    account(c);
    enforce_budget(c->set);
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
    struct client_set *s = c->set;
    size_t off = 0;
    while (!c->closing && !c->paused && off < c->in.len) {
        size_t body;
        long n = frame_next(c->in.data + off, c->in.len - off, (size_t)s->cfg->max_frame, &body);
        if (n == 0)
            break;
        if (n < 0) {
            char why[128];
            snprintf(why, sizeof(why), "frame larger than max_frame (%ld bytes)", s->cfg->max_frame);
            s->counters->clients_dropped_framing++;
            codec_error_frame(&c->out.pending, false, 0, FE_TOO_LARGE, why);
            outq_kick(&c->out);
            /* Framing is lost: read no more, write the error, then close. */
            c->close_when_flushed = true;
            uv_read_stop((uv_stream_t *)&c->pipe);
            c->in.len = 0;
            deadline_remove(&s->frame_deadlines, &c->frame_deadline);
            account(c);
            log_info("%s: %s; closing", c->who, why);
            maybe_finish(c);
            return;
        }
        request_handle(&c->ro, c, c->in.data + off + FRAME_HDR, body);
        off += (size_t)n;
        if (c->ro.ninflight >= (size_t)s->cfg->client_max_inflight && !c->closing) {
            c->paused = true;
            uv_read_stop((uv_stream_t *)&c->pipe);
        }
    }
    if (c->closing)
        return;
    cbuf_consume(&c->in, off);
    if (c->in.len == 0 && c->in.cap > KEEP_IN)
        cbuf_reset(&c->in, KEEP_IN);
    /* The frame clock runs from a frame's first byte to its last; a
     * client paused by backpressure has whole frames waiting, on us. */
    if (c->in.len == 0 || c->paused || c->close_when_flushed)
        deadline_remove(&s->frame_deadlines, &c->frame_deadline);
    else if (off > 0 || !dlist_linked(&c->frame_deadline.node)) {
        deadline_remove(&s->frame_deadlines, &c->frame_deadline);
        deadline_add(&s->frame_deadlines, &c->frame_deadline,
                     uv_now(s->loop) + (uint64_t)s->cfg->frame_timeout_ms);
    }
    account(c);
    enforce_budget(s);
}

/* The frame deadline queue's callback: a frame started too long ago. */
static void frame_expired(struct deadlines *d, struct deadline *e)
{
    (void)d;
    struct client *c = container_of(e, struct client, frame_deadline);
    struct client_set *s = c->set;
    if (c->closing || c->close_when_flushed)
        return;
    char why[160];
    snprintf(why, sizeof(why), "a frame was started and not finished within frame_timeout_ms (%ld ms; %zu bytes)",
             s->cfg->frame_timeout_ms, c->in.len);
    s->counters->clients_dropped_frame_timeout++;
    log_info("%s: %s; closing", c->who, why);
    /* Framing is lost: read no more, write the error, then close. */
    uv_read_stop((uv_stream_t *)&c->pipe);
    cbuf_reset(&c->in, 0);
    account(c);
    c->close_when_flushed = true;
    codec_error_frame(&c->out.pending, false, 0, FE_TIMEOUT, why);
    outq_kick(&c->out);
    maybe_finish(c);
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
        c->set->counters->bytes_in += (uint64_t)nread;
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
            log_debug("%s: EOF inside a frame (%zu bytes dropped)", c->who, c->in.len);
        c->in.len = 0;
        deadline_remove(&c->set->frame_deadlines, &c->frame_deadline);
        account(c);
        maybe_finish(c);
        return;
    }
    char why[96];
    snprintf(why, sizeof(why), "read failed: %s", uv_strerror((int)nread));
    client_close(c, why);
}

static void resume_all(struct client_set *s);

static void on_resume(uv_idle_t *h)
{
    struct client_set *s = container_of(h, struct client_set, resume_idle);
    uv_idle_stop(h);
    resume_all(s);
}

/* request_owner's hooks: a client's requests reach it only through these. */
static void on_request_sent(struct request_owner *o)
{
    client_sent(container_of(o, struct client, ro));
}

static void on_request_done(struct request_owner *o)
{
    struct client *c = container_of(o, struct client, ro);
    struct client_set *s = c->set;
    if (c->closing)
        return;
    if (c->paused && c->ro.ninflight <= (size_t)s->cfg->client_max_inflight / 2 &&
        !dlist_linked(&c->resume_node)) {
        /* Resuming from here could re-enter request_handle() from inside a
         * completion; defer it to the idle callback. */
        dlist_push_tail(&s->resume, &c->resume_node);
        uv_idle_start(&s->resume_idle, on_resume);
    }
    maybe_finish(c);
    if (s->rq->draining)
        s->idle(s->hook_arg);
}

static void resume_all(struct client_set *s)
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

/* Reads who is at the other end of the socket. A Unix socket always has
 * credentials; a failure (a socket of another kind passed by a service
 * manager) leaves the client without them, which the log says. */
static void read_cred(struct client *c, int fd)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || len != sizeof(cr)) {
        snprintf(c->who, sizeof(c->who), "client %llu (no peer credentials)", (unsigned long long)c->id);
        return;
    }
    c->has_cred = c->ro.has_cred = true;
    c->uid = c->ro.uid = cr.uid;
    c->gid = c->ro.gid = cr.gid;
    c->pid = cr.pid;
    snprintf(c->who, sizeof(c->who), "client %llu (uid %u gid %u pid %d)", (unsigned long long)c->id,
             (unsigned)cr.uid, (unsigned)cr.gid, (int)cr.pid);
}

void client_set_init(struct client_set *s, uv_loop_t *loop)
{
    s->loop = loop;
    dlist_init(&s->list);
    dlist_init(&s->resume);
    uv_idle_init(loop, &s->resume_idle);
    deadlines_init(&s->frame_deadlines, loop, frame_expired);
}

void client_set_close(struct client_set *s)
{
    uv_close((uv_handle_t *)&s->resume_idle, NULL);
    deadlines_close(&s->frame_deadlines);
}

void client_accept(struct client_set *s, uv_stream_t *listener)
{
    struct client *c = xcalloc(1, sizeof(*c));
    c->set = s;
    c->id = ++s->next_id;
    snprintf(c->who, sizeof(c->who), "client %llu", (unsigned long long)c->id);
    c->ro.ctx = s->rq;
    c->ro.id = c->id;
    c->ro.out = &c->out.pending;
    c->ro.sent = on_request_sent;
    c->ro.done = on_request_done;
    dlist_init(&c->ro.inflight);
    dlist_init(&c->resume_node);
    dlist_init(&c->frame_deadline.node);
    cbuf_init(&c->in);
    outq_init(&c->out, s->flusher, on_out_done);
    uv_pipe_init(s->loop, &c->pipe, 0);
    int rc = uv_accept(listener, (uv_stream_t *)&c->pipe);
    dlist_push_tail(&s->list, &c->node);
    s->n++;
    if (rc < 0) {
        log_warn("accept failed: %s", uv_strerror(rc));
        client_close(c, "accept failed");
        return;
    }
    outq_enable(&c->out, (uv_stream_t *)&c->pipe);
    uv_os_fd_t fd = -1;
    uv_fileno((uv_handle_t *)&c->pipe, &fd);
    read_cred(c, fd);
    /* Descriptors are numbered lowest first, so a client's number tells
     * how many are open. */
    bool fds_short = s->fd_limit > 0 && (long)fd + s->fd_reserve >= s->fd_limit;
    /* With an access policy, a peer that no policy covers (and no default)
     * is told so and closed before it can send anything. */
    bool stranger = s->rq->policies->n && !(c->has_cred && policy_find(s->rq->policies, c->uid, c->gid));
    if (s->n > (size_t)s->cfg->max_clients || s->rq->draining || fds_short || stranger) {
        int code = s->rq->draining ? FE_SHUTTING_DOWN : stranger ? FE_DENIED : FE_OVERLOADED;
        char why[160];
        if (stranger)
            snprintf(why, sizeof(why), "no policy in %s covers this peer (uid %u gid %u)", s->cfg->policy_file,
                     (unsigned)c->uid, (unsigned)c->gid);
        else if (fds_short)
            snprintf(why, sizeof(why), "out of file descriptors (limit %ld, %ld kept for backends and telemetry)",
                     s->fd_limit, s->fd_reserve);
        else
            snprintf(why, sizeof(why), "too many clients (max_clients %ld)", s->cfg->max_clients);
        if (stranger && !s->rq->draining)
            s->rq->policies->refused_peers++;
        if (!s->rq->draining) {
            static struct log_limit lim;
            unsigned long held;
            s->counters->clients_rejected++;
            if (log_limit_pass(&lim, uv_now(s->loop), 1000, &held))
                log_warn("%s refused: %s (%lu more refused since the last report)", c->who, why, held);
        }
        /* Written at once and closed at once: a burst of refused clients
         * waiting for the next flush would each hold a descriptor, and
         * past the limit libuv closes connections it cannot accept
         * without a word. A new socket's buffer takes a small frame whole;
         * if it somehow does not, the client sees the connection close. */
        struct cbuf frame;
        cbuf_init(&frame);
        codec_error_frame(&frame, false, 0, code, s->rq->draining ? NULL : why);
        uv_buf_t b = uv_buf_init((char *)frame.data, (unsigned)frame.len);
        (void)uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
        cbuf_free(&frame);
        client_close(c, why);
        return;
    }
    s->counters->clients_accepted++;
    log_debug("%s connected", c->who);
    uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, on_read);
}
