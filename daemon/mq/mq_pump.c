/* mq_pump.c: the frames nobody waits for an RPC reply to; see mq_pump.h.
 *
 * rabbitmq-c queues the frames that arrive while an RPC waits for its
 * reply; they are read here after each run of commands. */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "mq_pump.h"

/* Returns 0 to read on, -1 when the connection was lost. */
typedef int (*mq_pump_handler)(struct mq_pump *p, amqp_channel_t ch, void *decoded);

/* The method's strings live in the frame pool, which reading the message
 * may reuse; both are short strings (at most 255 bytes), so they are
 * copied to the stack, not the heap. */
static int on_deliver(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    amqp_basic_deliver_t d = *(amqp_basic_deliver_t *)decoded;
    char exch[256], rkey[256];
    if (d.exchange.len)
        memcpy(exch, d.exchange.bytes, d.exchange.len & 255);
    if (d.routing_key.len)
        memcpy(rkey, d.routing_key.bytes, d.routing_key.len & 255);
    d.exchange.bytes = exch;
    d.exchange.len &= 255;
    d.routing_key.bytes = rkey;
    d.routing_key.len &= 255;
    d.consumer_tag = amqp_empty_bytes;
    amqp_message_t m;
    amqp_rpc_reply_t r = amqp_read_message(p->conn->state, ch, &m, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        mq_conn_lost(p->conn, "reading a delivery failed");
        return -1;
    }
    mq_consume_on_delivery(p->cons, ch, &d, &m);
    amqp_destroy_message(&m);
    return 0;
}

static int on_ack(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    amqp_basic_ack_t *a = decoded;
    mq_publish_on_confirm(p->pub, ch, a->delivery_tag, a->multiple, true);
    return 0;
}

static int on_nack(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    amqp_basic_nack_t *a = decoded;
    mq_publish_on_confirm(p->pub, ch, a->delivery_tag, a->multiple, false);
    return 0;
}

static int on_return(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    amqp_basic_return_t ret = *(amqp_basic_return_t *)decoded;
    ret.reply_text = amqp_bytes_malloc_dup(ret.reply_text);
    ret.exchange = amqp_bytes_malloc_dup(ret.exchange);
    ret.routing_key = amqp_bytes_malloc_dup(ret.routing_key);
    amqp_message_t m;
    amqp_rpc_reply_t r = amqp_read_message(p->conn->state, ch, &m, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        if (ch == MQ_CH_RPC)
            mq_consume_on_rpc_return(p->cons, &ret, &m);
        else
            mq_publish_on_return(p->pub, ch, &ret, &m);
        amqp_destroy_message(&m);
    }
    amqp_bytes_free(ret.reply_text);
    amqp_bytes_free(ret.exchange);
    amqp_bytes_free(ret.routing_key);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        mq_conn_lost(p->conn, "reading a returned message failed");
        return -1;
    }
    return 0;
}

static int on_cancel(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    (void)decoded;
    mq_consume_on_cancel(p->cons, ch);
    return 0;
}

/* A channel the broker closed under us: reopen it and put back what lived
 * on it. */
static int on_channel_close(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    const amqp_channel_close_t *cl = decoded;
    log_warn("amqp: channel %u closed by the broker: %u %.*s", ch, cl->reply_code, (int)cl->reply_text.len,
             (char *)cl->reply_text.bytes);
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(p->conn->state, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK) {
        mq_conn_lost(p->conn, "send channel.close-ok failed");
        return -1;
    }
    if ((ch == MQ_CH_PUB || ch == MQ_CH_PUB_ALT) && ch != p->conn->pub_ch) {
        /* The confirm channel given up (mq_publish.c), draining or closing. */
        p->conn->pub_closing = false;
        mq_publish_on_channel_closed(p->pub, ch);
        return p->conn->state ? 0 : -1;
    }
    if (ch > MQ_CH_RPC && ch != MQ_CH_PUB_ALT) {
        mq_consume_on_channel_close(p->cons, ch);
        return p->conn->state ? 0 : -1;
    }
    if (mq_conn_open_channel(p->conn, ch) != 0) {
        mq_conn_lost(p->conn, "could not reopen a channel");
        return -1;
    }
    if (ch == p->conn->pub_ch) {
        /* The exchange that closed it is checked again first. */
        mq_topology_forget_exchanges(p->topo);
        mq_publish_resend(p->pub);
    }
    return p->conn->state ? 0 : -1;
}

/* The close-ok of a confirm channel given up: its number may serve again. */
static int on_channel_close_ok(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    (void)decoded;
    if ((ch == MQ_CH_PUB || ch == MQ_CH_PUB_ALT) && ch != p->conn->pub_ch)
        p->conn->pub_closing = false;
    return 0;
}

static int on_connection_close(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    (void)ch;
    const amqp_connection_close_t *cl = decoded;
    char why[200];
    snprintf(why, sizeof(why), "connection closed by the broker: %u %.*s", cl->reply_code,
             (int)cl->reply_text.len, (char *)cl->reply_text.bytes);
    amqp_connection_close_ok_t ok = {0};
    amqp_send_method(p->conn->state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    mq_conn_lost(p->conn, why);
    return -1;
}

static int on_blocked(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    (void)ch;
    (void)decoded;
    p->conn->blocked = true;
    log_warn("amqp: the broker is blocking publishers");
    mq_conn_post_state(p->conn);
    return 0;
}

static int on_unblocked(struct mq_pump *p, amqp_channel_t ch, void *decoded)
{
    (void)ch;
    (void)decoded;
    p->conn->blocked = false;
    log_info("amqp: the broker unblocked publishers");
    mq_conn_post_state(p->conn);
    mq_publish_flush(p->pub);
    return 0;
}

/* Deliveries first: they are most of the traffic. */
static const struct {
    amqp_method_number_t id;
    mq_pump_handler fn;
} handlers[] = {
    {AMQP_BASIC_DELIVER_METHOD, on_deliver},
    {AMQP_BASIC_ACK_METHOD, on_ack},
    {AMQP_BASIC_NACK_METHOD, on_nack},
    {AMQP_BASIC_RETURN_METHOD, on_return},
    {AMQP_BASIC_CANCEL_METHOD, on_cancel},
    {AMQP_CHANNEL_CLOSE_METHOD, on_channel_close},
    {AMQP_CHANNEL_CLOSE_OK_METHOD, on_channel_close_ok},
    {AMQP_CONNECTION_CLOSE_METHOD, on_connection_close},
    {AMQP_CONNECTION_BLOCKED_METHOD, on_blocked},
    {AMQP_CONNECTION_UNBLOCKED_METHOD, on_unblocked},
};

static void read_frames(struct mq_pump *p)
{
    for (int n = 0; p->conn->state && n < 10000; n++) {
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        int s = amqp_simple_wait_frame_noblock(p->conn->state, &f, &zero);
        if (s == AMQP_STATUS_TIMEOUT)
            break;
        if (s != AMQP_STATUS_OK) {
            mq_conn_lost(p->conn, amqp_error_string2(s));
            return;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
            if (handlers[i].id != f.payload.method.id)
                continue;
            if (handlers[i].fn(p, f.channel, f.payload.method.decoded) != 0)
                return;
            break;
        }
    }
    if (p->conn->state)
        amqp_maybe_release_buffers(p->conn->state);
}

void mq_pump_run(struct mq_pump *p)
{
    mq_conn_hold(p->conn);
    read_frames(p);
    mq_conn_post_held(p->conn);
}
