/* redis_conn.c: one pipelined connection to Redis, under ferryd's own libuv
 * I/O, with hiredis only as the RESP reader and command formatter.
 *
 * Why not hiredis's async API with adapters/libuv.h: hiredis 0.14 cannot
 * forget a command whose request timed out or whose client left (its
 * callbacks stay queued), cannot time a command out at all, and must not be
 * freed from inside its own callbacks. ferryd needs all three: every request
 * has its own deadline, a Redis that is alive but silent (SIGSTOP) must cost
 * each request no more than that, and reconnecting happens from inside I/O
 * callbacks. Owning the socket also lets commands from every client share
 * one coalesced write per loop iteration (outq.c). Commands are written in
 * RESP by redis_command.c, straight into that buffer.
 *
 * Replies are matched to commands in order through a ring of request
 * pointers. A cancelled request leaves a NULL in its slot, so its reply is
 * still read, and dropped, keeping the order intact.
 *
 *   WAITING --timer--> RESOLVING --> CONNECTING --> HANDSHAKE --> READY
 *      ^                   |             |             |            |
 *      +---- CLOSING <-----+-------------+-------------+------------+
 *                               (any failure: conn_fail)
 */
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "errors.h"
#include "log.h"
#include "redis_command.h"
#include "redis_conn.h"
#include "redis_reply.h"
#include "resp_guard.h"
#include "request.h"
#include "config.h"

#define READ_BUF (64 * 1024)
#define FEED_SLICE (4 * 1024)

static char handshake_marker, kill_marker;
#define HANDSHAKE_SLOT ((struct request *)&handshake_marker)
/* A SCRIPT KILL or FUNCTION KILL sent on the control connection: its reply
 * is logged. */
#define KILL_SLOT ((struct request *)&kill_marker)

static void begin_attempt(struct redis_conn *c);

static const struct config *cfg(const struct redis_conn *c) { return c->t->cfg; }
static uv_loop_t *loop(const struct redis_conn *c) { return c->t->loop; }

const char *redis_conn_state_name(enum rconn_state s)
{
    static const char *const names[] = {"waiting", "resolving", "connecting", "handshake",
                                        "ready", "closing", "stopped"};
    return names[s];
}

/* Fails every request still awaiting a reply. Slots are re-read one at a
 * time because failing one request can cancel others (its client may
 * close), which writes NULL into their slots. */
static void fail_all(struct redis_conn *c, int code, const char *msg)
{
    while (reqring_size(&c->ring)) {
        struct request *r = reqring_pop(&c->ring);
        if (r && r != HANDSHAKE_SLOT && r != KILL_SLOT) {
            request_fail(r, code, msg);
        }
    }
    c->ring.head = c->ring.tail = 0;
    c->handshake_left = 0;
}

/* ---- failure and retry ---- */

static void on_retry(uv_timer_t *t)
{
    begin_attempt(container_of(t, struct redis_conn, timer));
}

/* Once the socket is closed and no lookup is in flight, waits out the
 * backoff delay before the next attempt. */
static void maybe_retry(struct redis_conn *c)
{
    if (c->state != RC_CLOSING || c->io_open || c->gai_busy)
        return;
    const struct config *k = cfg(c);
    uint64_t delay = backoff_ms(&c->t->rng, c->failures, (uint64_t)k->redis_backoff_min_ms,
                                      (uint64_t)k->redis_backoff_max_ms);
    c->state = RC_WAITING;
    log_debug("redis connection %u: retrying in %llu ms", c->index, (unsigned long long)delay);
    uv_timer_start(&c->timer, on_retry, delay, 0);
}

static void on_io_closed(uv_handle_t *h)
{
    struct redis_conn *c = container_of((uv_tcp_t *)h, struct redis_conn, io.tcp);
    c->io_open = false;
    maybe_retry(c);
}

static void close_io(struct redis_conn *c)
{
    outq_reset(&c->out);
    if (c->gai_busy)
        uv_cancel((uv_req_t *)&c->gai);
    if (c->io_open && !uv_is_closing(&c->io.handle))
        uv_close(&c->io.handle, on_io_closed);
}

/* The one failure path: every request on the connection gets
 * 'unavailable', and a reconnect is scheduled. */
static void conn_fail(struct redis_conn *c, const char *why)
{
    if (c->state == RC_CLOSING || c->state == RC_STOPPED || c->state == RC_WAITING)
        return;
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    if (c->state == RC_READY) {
        c->drops++;
        log_warn("redis %s %u to %s lost: %s", c->control ? "control connection" : "connection", c->index, c->t->url_redacted, why);
    } else if (!c->down || c->failures % 20 == 0) {
        log_warn("redis connection %u to %s failed: %s", c->index, c->t->url_redacted, why);
    } else {
        log_debug("redis connection %u to %s failed: %s", c->index, c->t->url_redacted, why);
    }
    c->failures++;
    c->down = true;
    c->state = RC_CLOSING;
    uv_timer_stop(&c->timer);
    fail_all(c, FE_UNAVAILABLE, "the connection to redis was lost; the command may or may not have run");
    close_io(c);
    maybe_retry(c);
    if (!c->control)
        c->t->changed(c->t);
}

/* ---- reading replies ---- */

static void handle_reply(struct redis_conn *c, redisReply *reply)
{
    if (reqring_size(&c->ring) == 0) {
        conn_fail(c, "redis sent a reply to no command");
        return;
    }
    struct request *r = reqring_pop(&c->ring);
    if (r == HANDSHAKE_SLOT) {
        if (reply->type == REDIS_REPLY_ERROR) {
            char why[160];
            snprintf(why, sizeof(why), "handshake refused: %.*s", (int)(reply->len > 120 ? 120 : reply->len),
                     reply->str);
            conn_fail(c, why);
            return;
        }
        if (--c->handshake_left == 0) {
            c->state = RC_READY;
            c->down = false;
            c->failures = 0;
            c->connects++;
            c->last_error[0] = '\0';
            uv_timer_stop(&c->timer);
            log_info("redis %s %u to %s ready", c->control ? "control connection" : "connection", c->index, c->t->url_redacted);
            if (!c->control)
                c->t->changed(c->t);
        }
        return;
    }
    if (r == KILL_SLOT) {
        if (reply->type == REDIS_REPLY_ERROR)
            log_warn("redis: the kill of a busy script was refused: %.*s", (int)(reply->len > 200 ? 200 : reply->len),
                     reply->str);
        else
            log_info("redis: the busy script was killed");
        return;
    }
    if (!r)
        return; /* its request timed out or its client left */
    if (reply->type == REDIS_REPLY_ERROR) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%.*s", (int)reply->len, reply->str);
        /* The error prefix: WRONGTYPE, ERR, NOSCRIPT ... */
        reqtrace_status_code(&r->trace, msg, strcspn(msg, " "));
        request_fail(r, FE_BACKEND_ERROR, msg);
        return;
    }
    size_t at;
    struct cbuf *out = request_result_begin(r, &at);
    redis_reply_encode(reply, out);
    request_result_end(r, at);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct redis_conn *c = container_of((uv_tcp_t *)h, struct redis_conn, io.tcp);
    buf->base = c->readbuf;
    buf->len = READ_BUF;
}

/* Feeds n bytes to the reader, in slices, and handles every reply that
 * completes. Returns false when the connection failed. */
static bool feed(struct redis_conn *c, const char *p, size_t len)
{
    /* hiredis 0.14's reader moves its whole unread buffer down each time
     * it has consumed 1 KiB, so one large feed costs time quadratic in its
     * size. Feeding small slices and draining replies between them keeps
     * each move short. */
    for (size_t off = 0; off < len;) {
        size_t n = len - off < FEED_SLICE ? len - off : FEED_SLICE;
        if (redisReaderFeed(c->reader, p + off, n) != REDIS_OK) {
            conn_fail(c, "RESP reader failed");
            return false;
        }
        off += n;
        for (;;) {
            if (c->state != RC_HANDSHAKE && c->state != RC_READY)
                return false;
            void *reply = NULL;
            if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
                char why[160];
                snprintf(why, sizeof(why), "protocol error: %s", c->reader->errstr);
                conn_fail(c, why);
                return false;
            }
            if (!reply)
                break;
            handle_reply(c, reply);
            freeReplyObject(reply);
        }
    }
    return true;
}

/* The guard refused the reply now arriving (resp_guard.h): the reader
 * forgets the part it was fed, and only the request that asked for it
 * fails. Every earlier reply has been handled, so it is the ring's head. */
static void refuse_reply(struct redis_conn *c)
{
    redisReaderFree(c->reader);
    c->reader = redisReaderCreate();
    if (!c->reader)
        abort();
    if (c->guard.why != RESP_GUARD_UNWANTED)
        c->refused++;
    if (reqring_size(&c->ring) == 0) {
        conn_fail(c, "redis sent a reply to no command");
        return;
    }
    struct request *r = reqring_pop(&c->ring);
    if (r == HANDSHAKE_SLOT) {
        conn_fail(c, "the handshake's reply was refused");
        return;
    }
    if (r == KILL_SLOT || !r)
        return;
    if (c->guard.why == RESP_GUARD_UNWANTED) {
        conn_fail(c, "a reply wanted by nobody was awaited");
        return;
    }
    char msg[200];
    if (c->guard.why == RESP_GUARD_TOO_DEEP) {
        snprintf(msg, sizeof(msg),
                 "the reply is nested deeper than %d levels, which ferryd's RESP reader (hiredis 0.14) "
                 "cannot read; it was dropped",
                 RESP_GUARD_MAX_NESTING);
        request_fail(r, FE_BACKEND_ERROR, msg);
    } else {
        snprintf(msg, sizeof(msg),
                 "the reply is larger than max_frame (%zu bytes) or has more than %zu elements; it was "
                 "dropped unread",
                 c->guard.max_bytes, c->guard.max_elements);
        request_fail(r, FE_TOO_LARGE, msg);
    }
}

/* The guard asks, as the nth reply of this connection begins: replies
 * match ring slots in order from 0, so a cancelled request's reply (a
 * NULL slot) is dropped unread, however large. */
static bool reply_wanted(void *ctx, uint64_t nth)
{
    const struct redis_conn *c = ctx;
    if (nth < c->ring.head || nth >= c->ring.tail)
        return true; /* not ours to judge: handle_reply will say */
    return c->ring.slots[nth & (c->ring.cap - 1)] != NULL;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct redis_conn *c = container_of((uv_tcp_t *)st, struct redis_conn, io.tcp);
    if (nread == 0)
        return;
    if (nread < 0) {
        conn_fail(c, nread == UV_EOF ? "redis closed the connection" : uv_strerror((int)nread));
        return;
    }
    for (size_t off = 0; off < (size_t)nread;) {
        bool skipping = c->guard.skipping;
        size_t k = resp_guard_scan(&c->guard, buf->base + off, (size_t)nread - off);
        if (!skipping && k > 0 && !feed(c, buf->base + off, k))
            return;
        off += k;
        if (!skipping && c->guard.skipping) {
            refuse_reply(c);
            if (c->state != RC_HANDSHAKE && c->state != RC_READY)
                return;
        }
    }
}

static void on_out_done(struct outq *q, int status)
{
    struct redis_conn *c = container_of(q, struct redis_conn, out);
    if (status < 0)
        conn_fail(c, uv_strerror(status));
}

/* ---- connecting ---- */

static void on_connect(uv_connect_t *req, int status)
{
    struct redis_conn *c = req->data;
    if (status == UV_ECANCELED || c->state != RC_CONNECTING)
        return;
    if (status < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
        conn_fail(c, why);
        return;
    }
    if (!c->t->addr.is_unix) {
        uv_tcp_nodelay(&c->io.tcp, 1);
        uv_tcp_keepalive(&c->io.tcp, 1, 60);
        struct sockaddr_storage sa;
        int len = sizeof(sa);
        if (uv_tcp_getpeername(&c->io.tcp, (struct sockaddr *)&sa, &len) == 0)
            uv_ip_name((struct sockaddr *)&sa, c->peer, sizeof(c->peer));
    } else {
        snprintf(c->peer, sizeof(c->peer), "%s", c->t->addr.path);
    }
    c->peer_gen++;
    c->state = RC_HANDSHAKE;
    uv_read_start(&c->io.stream, alloc_cb, on_read);
    outq_enable(&c->out, &c->io.stream);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct redis_conn *c = container_of(req, struct redis_conn, gai);
    c->gai_busy = false;
    if (c->state != RC_RESOLVING) {
        if (res)
            uv_freeaddrinfo(res);
        maybe_retry(c);
        return;
    }
    if (status < 0) {
        char why[160];
        snprintf(why, sizeof(why), "resolving %.100s: %s", c->t->addr.host, uv_strerror(status));
        conn_fail(c, why);
        return;
    }
    uv_tcp_init(loop(c), &c->io.tcp);
    c->io_open = true;
    c->state = RC_CONNECTING;
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->io.tcp, res->ai_addr, on_connect);
    uv_freeaddrinfo(res);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof(why), "connect: %s", uv_strerror(rc));
        conn_fail(c, why);
    }
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct redis_conn *c = container_of(t, struct redis_conn, timer);
    conn_fail(c, c->state == RC_HANDSHAKE ? "no answer to the handshake in time"
                                          : "connect timed out");
}

static void queue_handshake(struct redis_conn *c, int argc, const char **argv)
{
    size_t lens[3];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    redis_command_format(&c->out.pending, argc, argv, lens);
    reqring_push(&c->ring, HANDSHAKE_SLOT);
    c->handshake_left++;
}

/* Starts one connection attempt. The handshake is queued before anything
 * else, so that requests accepted while connecting are written after it and
 * run authenticated, in the right database. */
static void begin_attempt(struct redis_conn *c)
{
    const struct redis_addr *a = &c->t->addr;
    if (c->reader)
        redisReaderFree(c->reader);
    c->reader = redisReaderCreate();
    if (!c->reader)
        abort();
    resp_guard_reset(&c->guard);
    c->ring.head = c->ring.tail = 0;
    c->handshake_left = 0;
    c->out.pending.len = 0;
    if (a->password) {
        const char *argv[3] = {"AUTH", a->user ? a->user : a->password, a->password};
        queue_handshake(c, a->user ? 3 : 2, argv);
    }
    if (a->db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", a->db);
        const char *argv[2] = {"SELECT", db};
        queue_handshake(c, 2, argv);
    }
    const char *ping[1] = {"PING"};
    queue_handshake(c, 1, ping);

    uv_timer_start(&c->timer, on_connect_timeout, (uint64_t)cfg(c)->redis_connect_timeout_ms, 0);
    if (a->is_unix) {
        uv_pipe_init(loop(c), &c->io.pipe, 0);
        c->io_open = true;
        c->state = RC_CONNECTING;
        c->connect_req.data = c;
        uv_pipe_connect(&c->connect_req, &c->io.pipe, a->path, on_connect);
        return;
    }
    char port[8];
    snprintf(port, sizeof(port), "%d", a->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->state = RC_RESOLVING;
    int rc = uv_getaddrinfo(loop(c), &c->gai, on_resolved, a->host, port, &hints);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof(why), "resolving %.100s: %s", a->host, uv_strerror(rc));
        conn_fail(c, why);
        return;
    }
    c->gai_busy = true;
}

/* ---- the interface used by redis_backend.c ---- */

struct redis_conn *redis_conn_new(struct redis_target *t, unsigned index)
{
    struct redis_conn *c = xcalloc(1, sizeof(*c));
    c->t = t;
    c->index = index;
    c->state = RC_WAITING;
    c->readbuf = xmalloc(READ_BUF);
    reqring_init(&c->ring);
    /* Replies are bounded like frames: a reply is never bigger in CBOR
     * than in RESP. hiredis holds each element as an object of about 60
     * bytes, hence the bound on elements. */
    size_t max = (size_t)t->cfg->max_frame;
    resp_guard_init(&c->guard, max, max / 16);
    c->guard.wanted = reply_wanted;
    c->guard.ctx = c;
    outq_init(&c->out, t->flusher, on_out_done);
    return c;
}

void redis_conn_start(struct redis_conn *c)
{
    uv_timer_init(loop(c), &c->timer);
    begin_attempt(c);
}

int redis_conn_send(struct redis_conn *c, struct request *r, int argc, const char *const *argv,
                    const size_t *lens)
{
    if (redis_conn_pending(c) >= (size_t)cfg(c)->redis_max_pending)
        return FE_OVERLOADED;
    r->bseq = reqring_push(&c->ring, r);
    r->bdata = c;
    redis_command_format(&c->out.pending, argc, argv, lens);
    outq_kick(&c->out);
    return 0;
}

void redis_conn_cancel(struct redis_conn *c, struct request *r)
{
    reqring_cancel(&c->ring, r->bseq, r);
}

bool redis_conn_is_head(const struct redis_conn *c, const struct request *r)
{
    return reqring_size(&c->ring) && r->bseq == c->ring.head;
}

void redis_conn_kill(struct redis_conn *c, const char *what)
{
    if (c->state != RC_READY || redis_conn_pending(c) >= (size_t)cfg(c)->redis_max_pending) {
        log_warn("redis: cannot send %s KILL: the control connection is %s", what,
                 redis_conn_state_name(c->state));
        return;
    }
    const char *argv[2] = {what, "KILL"};
    size_t lens[2] = {strlen(what), 4};
    reqring_push(&c->ring, KILL_SLOT);
    redis_command_format(&c->out.pending, 2, argv, lens);
    outq_kick(&c->out);
}

void redis_conn_stop(struct redis_conn *c)
{
    if (c->state == RC_STOPPED)
        return;
    c->state = RC_STOPPED;
    fail_all(c, FE_SHUTTING_DOWN, NULL);
    if (c->timer.loop)
        uv_close((uv_handle_t *)&c->timer, NULL);
    close_io(c);
}

void redis_conn_free(struct redis_conn *c)
{
    if (c->reader)
        redisReaderFree(c->reader);
    outq_free(&c->out);
    reqring_free(&c->ring);
    free(c->readbuf);
    free(c);
}
