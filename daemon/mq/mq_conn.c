/* mq_conn.c: the AMQP connection, its fixed channels and the hand-off
 * to the loop; see mq_conn.h. */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <amqp_tcp_socket.h>

#include "backoff.h"
#include "config.h"
#include "errors.h"
#include "log.h"
#include "mq_conn.h"

/* Events kept for reuse, and the largest data buffer one may keep. */
#define MQ_EVENT_SPARE_MAX 1024
#define MQ_EVENT_KEEP_DATA (64 * 1024)

int mq_conn_init(struct mq_conn *c)
{
    pthread_mutex_init(&c->mu, NULL);
    dlist_init(&c->cmds);
    dlist_init(&c->events);
    dlist_init(&c->spare);
    dlist_init(&c->held);
    dlist_init(&c->local_spare);
    c->nspare = 0;
    c->tls_next = NULL;
    atomic_store(&c->sockfd, -1);
    c->rng = (uint32_t)mq_now_ms() ^ (uint32_t)getpid();
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd < 0) {
        pthread_mutex_destroy(&c->mu);
        return -1;
    }
    return 0;
}

static void free_events(struct dlist *l)
{
    while (!dlist_empty(l)) {
        struct mq_event *e = container_of(l->next, struct mq_event, node);
        dlist_remove(&e->node);
        mq_event_free(e);
    }
}

void mq_conn_destroy(struct mq_conn *c)
{
    close(c->wake_fd);
    while (!dlist_empty(&c->cmds)) {
        struct mq_cmd *cmd = container_of(c->cmds.next, struct mq_cmd, node);
        dlist_remove(&cmd->node);
        mq_cmd_free(cmd);
    }
    free_events(&c->events);
    free_events(&c->spare);
    free_events(&c->held);
    free_events(&c->local_spare);
    mq_tls_free(&c->tls);
    if (c->tls_next) {
        mq_tls_free(c->tls_next);
        free(c->tls_next);
        c->tls_next = NULL;
    }
    pthread_mutex_destroy(&c->mu);
}

/* ---- the loop's side of the hand-off ---- */

static void wake(struct mq_conn *c)
{
    uint64_t one = 1;
    ssize_t r = write(c->wake_fd, &one, sizeof(one));
    (void)r;
}

void mq_conn_post_cmd(struct mq_conn *c, struct mq_cmd *cmd)
{
    pthread_mutex_lock(&c->mu);
    dlist_push_tail(&c->cmds, &cmd->node);
    pthread_mutex_unlock(&c->mu);
    wake(c);
}

void mq_conn_stop(struct mq_conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_mutex_unlock(&c->mu);
    wake(c);
}

void mq_conn_kick_socket(struct mq_conn *c)
{
    int fd = atomic_load(&c->sockfd);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

void mq_conn_set_tls(struct mq_conn *c, const struct mq_tls *t)
{
    struct mq_tls *next = xcalloc(1, sizeof(*next));
    mq_tls_copy(next, t);
    pthread_mutex_lock(&c->mu);
    struct mq_tls *old = c->tls_next;
    c->tls_next = next;
    pthread_mutex_unlock(&c->mu);
    if (old) {
        mq_tls_free(old);
        free(old);
    }
}

void mq_conn_take_events(struct mq_conn *c, struct dlist *out)
{
    pthread_mutex_lock(&c->mu);
    while (!dlist_empty(&c->events)) {
        struct dlist *n = c->events.next;
        dlist_remove(n);
        dlist_push_tail(out, n);
    }
    pthread_mutex_unlock(&c->mu);
}

void mq_conn_recycle(struct mq_conn *c, struct dlist *done)
{
    pthread_mutex_lock(&c->mu);
    while (!dlist_empty(done)) {
        struct mq_event *e = container_of(done->next, struct mq_event, node);
        dlist_remove(&e->node);
        if (c->nspare < MQ_EVENT_SPARE_MAX && e->data.cap <= MQ_EVENT_KEEP_DATA && c->started) {
            dlist_push_tail(&c->spare, &e->node);
            c->nspare++;
        } else {
            mq_event_free(e);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- the thread's side of the hand-off ---- */

bool mq_conn_take_cmds(struct mq_conn *c, struct dlist *out)
{
    pthread_mutex_lock(&c->mu);
    bool stop = c->stop;
    while (!dlist_empty(&c->cmds)) {
        struct dlist *n = c->cmds.next;
        dlist_remove(n);
        dlist_push_tail(out, n);
    }
    pthread_mutex_unlock(&c->mu);
    return stop;
}

void mq_conn_wait(struct mq_conn *c, int timeout_ms)
{
    struct pollfd fds[2] = {{.fd = c->wake_fd, .events = POLLIN},
                            {.fd = c->state ? amqp_get_sockfd(c->state) : -1, .events = POLLIN}};
    poll(fds, 2, timeout_ms);
    if (fds[0].revents & POLLIN) {
        uint64_t v;
        ssize_t r = read(c->wake_fd, &v, sizeof(v));
        (void)r;
    }
}

void mq_conn_post(struct mq_conn *c, struct mq_event *e)
{
    if (c->holding_events) {
        dlist_push_tail(&c->held, &e->node);
        return;
    }
    pthread_mutex_lock(&c->mu);
    dlist_push_tail(&c->events, &e->node);
    pthread_mutex_unlock(&c->mu);
    uv_async_send(c->async);
}

void mq_conn_hold(struct mq_conn *c)
{
    c->holding_events = true;
}

void mq_conn_post_held(struct mq_conn *c)
{
    c->holding_events = false;
    if (dlist_empty(&c->held))
        return;
    pthread_mutex_lock(&c->mu);
    while (!dlist_empty(&c->held)) {
        struct dlist *n = c->held.next;
        dlist_remove(n);
        dlist_push_tail(&c->events, n);
    }
    pthread_mutex_unlock(&c->mu);
    uv_async_send(c->async);
}

struct mq_event *mq_conn_event_new(struct mq_conn *c, enum mq_event_kind kind)
{
    if (dlist_empty(&c->local_spare)) {
        /* Take every spare event at once: one lock per batch. */
        pthread_mutex_lock(&c->mu);
        while (!dlist_empty(&c->spare)) {
            struct dlist *n = c->spare.next;
            dlist_remove(n);
            dlist_push_tail(&c->local_spare, n);
        }
        c->nspare = 0;
        pthread_mutex_unlock(&c->mu);
    }
    struct mq_event *e;
    if (!dlist_empty(&c->local_spare)) {
        e = container_of(c->local_spare.next, struct mq_event, node);
        dlist_remove(&e->node);
        /* Field by field: the text arrays are 1 KiB that a C string's
         * first byte empties. */
        e->seq = 0;
        e->code = 0;
        e->message[0] = '\0';
        e->data.len = 0;
        e->consumer = 0;
        e->up = e->blocked = false;
        e->addr = 0;
        e->traceparent[0] = e->tracestate[0] = e->routing_key[0] = e->message_id[0] = '\0';
        e->delivery_tag = 0;
        e->body_size = 0;
    } else {
        e = xcalloc(1, sizeof(*e));
        cbuf_init(&e->data);
    }
    e->kind = kind;
    return e;
}

void mq_conn_reply_ok(struct mq_conn *c, uint64_t seq, struct cbuf *data)
{
    if (!seq) {
        cbuf_free(data);
        return;
    }
    struct mq_event *e = mq_conn_event_new(c, ME_RESULT);
    e->seq = seq;
    cbuf_free(&e->data); /* a recycled event's buffer: the result brings its own */
    e->data = *data;
    cbuf_init(data);
    mq_conn_post(c, e);
}

void mq_conn_reply_empty(struct mq_conn *c, uint64_t seq)
{
    struct cbuf b;
    cbuf_init(&b);
    cbuf_map(&b, 0);
    mq_conn_reply_ok(c, seq, &b);
}

void mq_conn_reply_err(struct mq_conn *c, uint64_t seq, int code, const char *fmt, ...)
{
    if (!seq)
        return;
    struct mq_event *e = mq_conn_event_new(c, ME_RESULT);
    e->seq = seq;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    mq_conn_post(c, e);
}

void mq_conn_post_state(struct mq_conn *c)
{
    struct mq_event *e = mq_conn_event_new(c, ME_STATE);
    e->up = c->state != NULL;
    e->blocked = c->blocked;
    e->addr = c->addr_next;
    snprintf(e->message, sizeof(e->message), "%s", c->last_error);
    mq_conn_post(c, e);
}

/* ---- errors from rabbitmq-c ---- */

void mq_conn_describe(amqp_rpc_reply_t r, char *buf, size_t len)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(buf, len, "ok");
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(buf, len, "no reply from the broker");
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, len, "%s", amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(buf, len, "%u %.*s", m->reply_code, (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(buf, len, "connection closed by the broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else {
            snprintf(buf, len, "unexpected broker method 0x%08x", r.reply.id);
        }
        break;
    }
}

int mq_conn_check_rpc(struct mq_conn *c, amqp_channel_t ch, char *err, size_t errlen)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->state);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    mq_conn_describe(r, err, errlen);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t ok = {0};
        if (amqp_send_method(c->state, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK ||
            mq_conn_open_channel(c, ch) != 0) {
            mq_conn_lost(c, "could not reopen a channel after a channel error");
            return FE_UNAVAILABLE;
        }
        return FE_BACKEND_ERROR;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(c->state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    }
    mq_conn_lost(c, err);
    return FE_UNAVAILABLE;
}

/* ---- channels ---- */

int mq_conn_open_channel(struct mq_conn *c, amqp_channel_t ch)
{
    amqp_channel_open(c->state, ch);
    if (amqp_get_rpc_reply(c->state).reply_type != AMQP_RESPONSE_NORMAL)
        return -1;
    if (ch == MQ_CH_PUB || ch == MQ_CH_PUB_ALT) {
        amqp_confirm_select(c->state, ch);
        c->next_tag = 1;
    } else if (ch == MQ_CH_TX) {
        amqp_tx_select(c->state, ch);
    } else if (ch == MQ_CH_RPC) {
        amqp_basic_consume(c->state, ch, amqp_cstring_bytes("amq.rabbitmq.reply-to"), amqp_empty_bytes,
                           0, 1, 0, amqp_empty_table);
    } else {
        return 0;
    }
    return amqp_get_rpc_reply(c->state).reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
}

/* ---- connecting ---- */

void mq_conn_lost(struct mq_conn *c, const char *why)
{
    if (!c->state)
        return;
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    log_warn("amqp: connection lost: %s", why);
    atomic_store(&c->sockfd, -1);
    amqp_destroy_connection(c->state);
    c->state = NULL;
    c->blocked = false;
    atomic_fetch_add(&c->counters.drops, 1);
    c->failures = 1;
    /* The next attempt starts with the URL after this one: in a cluster
     * the node that dropped us is the one most likely down, and each
     * attempt on a dead host can cost amqp_connect_timeout_ms. */
    c->addr_next = (c->addr_next + 1) % c->naddrs;
    c->retry_at = mq_now_ms() + backoff_ms(&c->rng, c->failures, c->backoff_min_ms, c->backoff_max_ms);
    if (c->on_lost)
        c->on_lost(c->on_lost_ctx, why);
    mq_conn_post_state(c);
}

static amqp_table_entry_t entry_bool(const char *k, bool v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e.value.value.boolean = v;
    return e;
}

static int try_connect(struct mq_conn *c, const struct url_amqp *a)
{
    struct timeval tv = {.tv_sec = (time_t)(c->connect_timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(c->connect_timeout_ms % 1000) * 1000};
    amqp_connection_state_t conn = amqp_new_connection();
    char why[200];
    snprintf(why, sizeof(why), "cannot create a socket");
    amqp_socket_t *sock = a->tls ? mq_tls_socket(conn, &c->tls, a->host, c->tls_verdict, why, sizeof(why))
                                 : amqp_tcp_socket_new(conn);
    if (!sock) {
        amqp_destroy_connection(conn);
        snprintf(c->last_error, sizeof(c->last_error), "%.80s: %.170s", a->redacted, why);
        return -1;
    }
    if (a->tls && !c->tls.verify)
        log_warn("amqp: amqp_tls_verify is no: %s is not authenticated (its certificate and name are not checked)",
                 a->redacted);
    int s = amqp_socket_open_noblock(sock, a->host, a->port, &tv);
    if (s != AMQP_STATUS_OK) {
        if (a->tls)
            mq_tls_describe(s, c->tls_verdict, false, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "%s", amqp_error_string2(s));
        snprintf(c->last_error, sizeof(c->last_error), "%.80s: %.170s", a->redacted, why);
        amqp_destroy_connection(conn);
        return -1;
    }
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    amqp_table_entry_t caps[] = {entry_bool("publisher_confirms", true), entry_bool("consumer_cancel_notify", true),
                                 entry_bool("connection.blocked", true), entry_bool("basic.nack", true),
                                 entry_bool("exchange_exchange_bindings", true)};
    amqp_table_entry_t props[3];
    props[0].key = amqp_cstring_bytes("connection_name");
    props[0].value.kind = AMQP_FIELD_KIND_UTF8;
    props[0].value.value.bytes = amqp_cstring_bytes(a->name);
    props[1].key = amqp_cstring_bytes("product");
    props[1].value.kind = AMQP_FIELD_KIND_UTF8;
    props[1].value.value.bytes = amqp_cstring_bytes("ferryd " FERRY_VERSION);
    props[2].key = amqp_cstring_bytes("capabilities");
    props[2].value.kind = AMQP_FIELD_KIND_TABLE;
    props[2].value.value.table.num_entries = 5;
    props[2].value.value.table.entries = caps;
    amqp_table_t client_props = {.num_entries = 3, .entries = props};
    amqp_rpc_reply_t r = amqp_login_with_properties(conn, a->vhost, 0, 131072, a->heartbeat, &client_props,
                                                    AMQP_SASL_METHOD_PLAIN, a->user, a->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        /* Over TLS 1.3 a broker that refuses the client certificate says
         * so only after the handshake, so the login meets its alert. */
        if (a->tls && r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
            mq_tls_describe(r.library_error, c->tls_verdict, true, why, sizeof(why));
        else
            mq_conn_describe(r, why, sizeof(why));
        snprintf(c->last_error, sizeof(c->last_error), "%.80s: login: %.160s", a->redacted, why);
        amqp_destroy_connection(conn);
        return -1;
    }
    c->state = conn;
    c->heartbeat = a->heartbeat;
    for (amqp_channel_t ch = MQ_CH_PUB; ch <= MQ_CH_RPC; ch++) {
        if (mq_conn_open_channel(c, ch) != 0) {
            snprintf(c->last_error, sizeof(c->last_error), "%.120s: opening channel %u failed", a->redacted, ch);
            amqp_destroy_connection(conn);
            c->state = NULL;
            return -1;
        }
    }
    c->pub_ch = MQ_CH_PUB;
    c->pub_closing = false;
    atomic_store(&c->sockfd, amqp_get_sockfd(conn));
    return 0;
}

int mq_conn_connect(struct mq_conn *c)
{
    pthread_mutex_lock(&c->mu);
    struct mq_tls *next = c->tls_next;
    c->tls_next = NULL;
    pthread_mutex_unlock(&c->mu);
    if (next) {
        mq_tls_free(&c->tls);
        c->tls = *next;
        free(next);
    }
    for (size_t k = 0; k < c->naddrs; k++) {
        const struct url_amqp *a = &c->addrs[(c->addr_next + k) % c->naddrs];
        if (try_connect(c, a) == 0) {
            c->addr_next = (c->addr_next + k) % c->naddrs;
            c->failures = 0;
            c->last_error[0] = '\0';
            atomic_fetch_add(&c->counters.connects, 1);
            log_info("amqp: connected to %s", a->redacted);
            return 0;
        }
    }
    c->failures++;
    if (c->failures == 1 || c->failures % 20 == 0)
        log_warn("amqp: cannot connect: %s", c->last_error);
    c->retry_at = mq_now_ms() + backoff_ms(&c->rng, c->failures, c->backoff_min_ms, c->backoff_max_ms);
    mq_conn_post_state(c);
    return -1;
}

void mq_conn_close(struct mq_conn *c)
{
    if (!c->state)
        return;
    atomic_store(&c->sockfd, -1);
    amqp_connection_close(c->state, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c->state);
    c->state = NULL;
}
