/* rds_conn.c: one pipelined connection to Redis, under ferryd's own libuv
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
 * RESP by rds_command.c, straight into that buffer.
 *
 * Under TLS (rediss://) the socket is still libuv's: rds_tls.c encrypts
 * the outq's pending bytes at each flush (its seal hook: one SSL_write per
 * flush) and decrypts what uv_read brings before the guard and the reader
 * see it. The TLS handshake is part of HANDSHAKE, within the same connect
 * timeout; the RESP handshake queued behind it waits in the outq.
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
#include "rds_command.h"
#include "rds_config.h"
#include "rds_conn.h"
#include "rds_reply.h"
#include "resp_guard.h"
#include "request.h"
#include "config.h"

#define READ_BUF (64 * 1024)
#define FEED_SLICE (4 * 1024)

static char handshake_marker, call_marker;
#define HANDSHAKE_SLOT ((struct request *)&handshake_marker)
/* One of ferryd's own commands (rds_conn_call): its reply goes to the
 * oldest entry of c->calls. */
#define CALL_SLOT ((struct request *)&call_marker)

/* Hands the oldest call its reply (NULL: none will come). */
static void call_done(struct rds_conn *c, const redisReply *reply)
{
    if (!c->ncalls)
        return;
    struct rds_call k = c->calls[c->call_head];
    c->call_head = (c->call_head + 1) & (c->call_cap - 1);
    c->ncalls--;
    k.fn(k.arg, reply);
}

static void call_push(struct rds_conn *c, struct rds_call k)
{
    if (c->ncalls == c->call_cap) {
        size_t cap = c->call_cap ? c->call_cap * 2 : 8;
        struct rds_call *n = xcalloc(cap, sizeof(*n));
        for (size_t i = 0; i < c->ncalls; i++)
            n[i] = c->calls[(c->call_head + i) & (c->call_cap - 1)];
        free(c->calls);
        c->calls = n;
        c->call_cap = cap;
        c->call_head = 0;
    }
    c->calls[(c->call_head + c->ncalls) & (c->call_cap - 1)] = k;
    c->ncalls++;
}

static void begin_attempt(struct rds_conn *c);

static uv_loop_t *loop(const struct rds_conn *c) { return c->t->loop; }

const char *rds_conn_state_name(enum rconn_state s)
{
    static const char *const names[] = {"waiting", "resolving", "connecting", "handshake",
                                        "ready", "closing", "stopped"};
    return names[s];
}

/* Fails every request still awaiting a reply. Slots are re-read one at a
 * time because failing one request can cancel others (its client may
 * close), which writes NULL into their slots. */
static void fail_all(struct rds_conn *c, int code, const char *msg)
{
    while (reqring_size(&c->ring)) {
        struct request *r = reqring_pop(&c->ring);
        if (r == CALL_SLOT)
            call_done(c, NULL);
        else if (r && r != HANDSHAKE_SLOT) {
            request_fail(r, code, msg);
        }
    }
    c->ring.head = c->ring.tail = 0;
    c->handshake_left = 0;
}

/* ---- failure and retry ---- */

static void on_retry(uv_timer_t *t)
{
    begin_attempt(container_of(t, struct rds_conn, timer));
}

/* Once the socket is closed and no lookup is in flight, waits out the
 * backoff delay before the next attempt. */
static void maybe_retry(struct rds_conn *c)
{
    if (c->state != RC_CLOSING || c->io_open || c->gai_busy)
        return;
    uint64_t delay = backoff_ms(&c->t->rng, c->failures, (uint64_t)c->t->rc->backoff_min_ms,
                                      (uint64_t)c->t->rc->backoff_max_ms);
    c->state = RC_WAITING;
    log_debug("redis connection %u: retrying in %llu ms", c->index, (unsigned long long)delay);
    uv_timer_start(&c->timer, on_retry, delay, 0);
}

static void on_io_closed(uv_handle_t *h)
{
    struct rds_conn *c = container_of((uv_tcp_t *)h, struct rds_conn, io.tcp);
    c->io_open = false;
    if (c->tls.ssl)
        rds_tls_free(&c->tls);
    maybe_retry(c);
}

static void close_io(struct rds_conn *c)
{
    outq_reset(&c->out);
    if (c->gai_busy)
        uv_cancel((uv_req_t *)&c->gai);
    if (c->io_open && !uv_is_closing(&c->io.handle)) {
        if (c->tls.ssl) {
            /* The close_notify (or the alert of a failed handshake), in
             * one write that may not wait: a peer gone or not reading
             * does not get it, and the socket closes regardless. */
            struct cbuf last;
            cbuf_init(&last);
            rds_tls_close(&c->tls, &last);
            if (last.len) {
                uv_buf_t b = uv_buf_init((char *)last.data, (unsigned)last.len);
                (void)uv_try_write(&c->io.stream, &b, 1);
            }
            cbuf_free(&last);
        }
        uv_close(&c->io.handle, on_io_closed);
    }
}

/* The one failure path: every request on the connection gets
 * 'unavailable', and a reconnect is scheduled. */
static void conn_fail(struct rds_conn *c, const char *why)
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
    /* Before the TLS handshake ends, no command has gone out. */
    bool unsent = c->state == RC_RESOLVING || c->state == RC_CONNECTING || (c->tls.ssl && !c->tls.up);
    char msg[220];
    snprintf(msg, sizeof(msg), "redis is unreachable (%s)", why);
    c->failures++;
    c->down = true;
    c->state = RC_CLOSING;
    uv_timer_stop(&c->timer);
    fail_all(c, FE_UNAVAILABLE,
             unsent ? msg : "the connection to redis was lost; the command may or may not have run");
    close_io(c);
    maybe_retry(c);
    if (c->hooks.lost)
        c->hooks.lost(c, c->hooks.arg);
    if (!c->control && !c->quiet)
        c->t->changed(c->t);
}

/* ---- reading replies ---- */

static void handle_reply(struct rds_conn *c, redisReply *reply)
{
    if (reqring_size(&c->ring) == 0 && c->hooks.sink && c->state == RC_READY) {
        c->hooks.sink(c, c->hooks.arg, reply);
        return;
    }
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
            if (!c->control && !c->quiet)
                c->t->changed(c->t);
            else if (c->control && c->t->control_ready)
                c->t->control_ready(c->t);
            if (c->hooks.ready)
                c->hooks.ready(c, c->hooks.arg);
        }
        return;
    }
    if (r == CALL_SLOT) {
        call_done(c, reply);
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
    rds_reply_encode(reply, out);
    request_result_end(r, at);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct rds_conn *c = container_of((uv_tcp_t *)h, struct rds_conn, io.tcp);
    buf->base = c->readbuf;
    buf->len = READ_BUF;
}

/* Feeds n bytes to the reader, in slices, and handles every reply that
 * completes. Returns false when the connection failed. */
static bool feed(struct rds_conn *c, const char *p, size_t len)
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
static void refuse_reply(struct rds_conn *c)
{
    redisReaderFree(c->reader);
    c->reader = redisReaderCreate();
    if (!c->reader)
        abort();
    if (c->guard.why != RESP_GUARD_UNWANTED)
        c->refused++;
    if (reqring_size(&c->ring) == 0 && c->hooks.sink && c->state == RC_READY)
        return; /* a message too large for any frame: dropped, counted */
    if (reqring_size(&c->ring) == 0) {
        conn_fail(c, "redis sent a reply to no command");
        return;
    }
    struct request *r = reqring_pop(&c->ring);
    if (r == HANDSHAKE_SLOT) {
        conn_fail(c, "the handshake's reply was refused");
        return;
    }
    if (r == CALL_SLOT) {
        call_done(c, NULL);
        return;
    }
    if (!r)
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
    const struct rds_conn *c = ctx;
    if (nth < c->ring.head || nth >= c->ring.tail)
        return true; /* not ours to judge: handle_reply will say */
    return c->ring.slots[nth & (c->ring.cap - 1)] != NULL;
}

/* Takes n bytes of RESP: through the guard, then to the reader. Returns
 * false when the connection failed. */
static bool consume(struct rds_conn *c, const char *p, size_t n)
{
    for (size_t off = 0; off < n;) {
        bool skipping = c->guard.skipping;
        size_t k = resp_guard_scan(&c->guard, p + off, n - off);
        if (c->guard.why == RESP_GUARD_PROTOCOL) {
            /* Not RESP2: the guard can no longer tell where replies end,
             * and the reader must not be left to allocate whatever a
             * header it then misreads announces. */
            conn_fail(c, "redis sent something that is not RESP2");
            return false;
        }
        if (!skipping && k > 0 && !feed(c, p + off, k))
            return false;
        off += k;
        if (!skipping && c->guard.skipping) {
            refuse_reply(c);
            if (c->state != RC_HANDSHAKE && c->state != RC_READY)
                return false;
        }
    }
    return true;
}

/* Takes n bytes of TLS records: advances the handshake, and once it is
 * over, decrypts what there is into plainbuf and consumes it. Whatever
 * TLS has to say back (handshake messages, a key update) goes out with
 * the next flush. */
static void tls_in(struct rds_conn *c, const char *p, size_t n)
{
    rds_tls_feed(&c->tls, p, n);
    if (!c->tls.up) {
        int rc = rds_tls_handshake(&c->tls);
        if (rc < 0) {
            conn_fail(c, c->tls.why);
            return;
        }
        outq_wake(&c->out); /* its next messages; once up, the commands queued behind it */
        if (rc == 0)
            return;
        char how[160];
        rds_tls_describe(&c->tls, how, sizeof(how));
        log_info("redis %s %u to %s: TLS up (%s)", c->control ? "control connection" : "connection", c->index,
                 c->t->url_redacted, how);
    }
    ssize_t r;
    do {
        size_t used = 0;
        while (used < READ_BUF && (r = rds_tls_read(&c->tls, c->plainbuf + used, READ_BUF - used)) > 0)
            used += (size_t)r;
        if (used > 0 && !consume(c, c->plainbuf, used))
            return;
        if (r < 0) {
            conn_fail(c, c->tls.why);
            return;
        }
    } while (r > 0); /* plainbuf filled up: there may be more */
    if (rds_tls_has_output(&c->tls))
        outq_wake(&c->out);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct rds_conn *c = container_of((uv_tcp_t *)st, struct rds_conn, io.tcp);
    if (nread == 0)
        return;
    if (nread < 0) {
        conn_fail(c, nread == UV_EOF ? "redis closed the connection" : uv_strerror((int)nread));
        return;
    }
    if (c->tls.ssl)
        tls_in(c, buf->base, (size_t)nread);
    else
        consume(c, buf->base, (size_t)nread);
}

static void on_out_done(struct outq *q, int status)
{
    struct rds_conn *c = container_of(q, struct rds_conn, out);
    if (status < 0)
        conn_fail(c, c->tls.ssl && c->tls.broken ? c->tls.why : uv_strerror(status));
}

/* The outq's seal hook under TLS (outq.h). */
static int on_seal(struct outq *q, struct cbuf *plain, struct cbuf *wire)
{
    struct rds_conn *c = container_of(q, struct rds_conn, out);
    return rds_tls_seal(&c->tls, plain, wire) == 0 ? 0 : UV_EPROTO;
}

/* ---- connecting ---- */

static void on_connect(uv_connect_t *req, int status)
{
    struct rds_conn *c = req->data;
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
    if (c->t->addr.tls) {
        if (!c->t->tls.verify)
            log_warn("redis connection %u to %s: redis_tls_verify is no: Redis's certificate is not checked",
                     c->index, c->t->url_redacted);
        if (rds_tls_start(&c->tls, &c->t->tls) != 0) {
            conn_fail(c, c->tls.why);
            return;
        }
    }
    uv_read_start(&c->io.stream, alloc_cb, on_read);
    outq_enable(&c->out, &c->io.stream);
    if (c->tls.ssl)
        outq_wake(&c->out); /* the ClientHello */
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct rds_conn *c = container_of(req, struct rds_conn, gai);
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
    struct rds_conn *c = container_of(t, struct rds_conn, timer);
    conn_fail(c, c->state != RC_HANDSHAKE               ? "connect timed out"
                 : c->tls.ssl && !c->tls.up ? "no answer to the TLS handshake in time"
                                             : "no answer to the handshake in time");
}

static void queue_handshake(struct rds_conn *c, int argc, const char **argv)
{
    size_t lens[3];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    rds_command_format(&c->out.pending, argc, argv, lens);
    reqring_push(&c->ring, HANDSHAKE_SLOT);
    c->handshake_left++;
}

/* Starts one connection attempt. The handshake is queued before anything
 * else, so that requests accepted while connecting are written after it and
 * run authenticated, in the right database. */
static void begin_attempt(struct rds_conn *c)
{
    const struct url_redis *a = &c->t->addr;
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

    uv_timer_start(&c->timer, on_connect_timeout, (uint64_t)c->t->rc->connect_timeout_ms, 0);
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

/* ---- the interface used by rds_backend.c ---- */

struct rds_conn *rds_conn_new(struct rds_target *t, unsigned index)
{
    struct rds_conn *c = xcalloc(1, sizeof(*c));
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
    if (t->addr.tls) {
        c->out.seal = on_seal;
        c->plainbuf = xmalloc(READ_BUF);
    }
    return c;
}

void rds_conn_start(struct rds_conn *c)
{
    uv_timer_init(loop(c), &c->timer);
    begin_attempt(c);
}

int rds_conn_send(struct rds_conn *c, struct request *r, int argc, const char *const *argv,
                    const size_t *lens)
{
    if (rds_conn_pending(c) >= (size_t)c->t->rc->max_pending)
        return FE_OVERLOADED;
    r->bseq = reqring_push(&c->ring, r);
    r->bdata = c;
    rds_command_format(&c->out.pending, argc, argv, lens);
    outq_kick(&c->out);
    return 0;
}

void rds_conn_cancel(struct rds_conn *c, struct request *r)
{
    reqring_cancel(&c->ring, r->bseq, r);
}

bool rds_conn_is_head(const struct rds_conn *c, const struct request *r)
{
    return reqring_size(&c->ring) && r->bseq == c->ring.head;
}

int rds_conn_call(struct rds_conn *c, int argc, const char *const *argv, const size_t *lens,
                  void (*fn)(void *arg, const redisReply *reply), void *arg)
{
    if (!rds_conn_usable(c) || rds_conn_pending(c) >= (size_t)c->t->rc->max_pending)
        return -1;
    call_push(c, (struct rds_call){fn, arg});
    reqring_push(&c->ring, CALL_SLOT);
    rds_command_format(&c->out.pending, argc, argv, lens);
    outq_kick(&c->out);
    return 0;
}

int rds_conn_send_raw(struct rds_conn *c, int argc, const char *const *argv, const size_t *lens)
{
    if (c->state != RC_READY)
        return -1;
    rds_command_format(&c->out.pending, argc, argv, lens);
    outq_kick(&c->out);
    return 0;
}

static void on_kill_reply(void *arg, const redisReply *reply)
{
    (void)arg;
    if (!reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR)
        log_warn("redis: the kill of a busy script was refused: %.*s", (int)(reply->len > 200 ? 200 : reply->len),
                 reply->str);
    else
        log_info("redis: the busy script was killed");
}

void rds_conn_kill(struct rds_conn *c, const char *what)
{
    const char *argv[2] = {what, "KILL"};
    size_t lens[2] = {strlen(what), 4};
    if (rds_conn_call(c, 2, argv, lens, on_kill_reply, NULL) != 0)
        log_warn("redis: cannot send %s KILL: the control connection is %s", what, rds_conn_state_name(c->state));
}

void rds_conn_reconnect(struct rds_conn *c, const char *why)
{
    if (c->state == RC_STOPPED)
        return;
    c->failures = 0; /* the shortest backoff: the new address is likely up */
    if (c->state == RC_WAITING) {
        uv_timer_stop(&c->timer);
        begin_attempt(c);
        return;
    }
    conn_fail(c, why);
}

void rds_conn_stop(struct rds_conn *c)
{
    if (c->state == RC_STOPPED)
        return;
    c->state = RC_STOPPED;
    fail_all(c, FE_SHUTTING_DOWN, NULL);
    if (c->timer.loop)
        uv_close((uv_handle_t *)&c->timer, NULL);
    close_io(c);
}

void rds_conn_free(struct rds_conn *c)
{
    if (c->reader)
        redisReaderFree(c->reader);
    outq_free(&c->out);
    reqring_free(&c->ring);
    if (c->tls.ssl)
        rds_tls_free(&c->tls);
    free(c->readbuf);
    free(c->plainbuf);
    free(c->calls);
    free(c);
}
