/* mq_backend.c: the AMQP ops on the loop. A request's arguments become a
 * command (mq_args.c) here, so bad input gets 'bad_request' even while
 * the broker is frozen; the command goes to the AMQP thread
 * (mq_worker.c), whose results and deliveries come back through a
 * uv_async and end requests or become push frames.
 *
 * Subscriptions: a consume request's id is the subscription id the client
 * sees in push frames ("sub"); ferryd numbers consumers itself so that two
 * clients may use the same request id. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "client.h"
#include "errors.h"
#include "log.h"
#include "mq_args.h"
#include "mq_backend.h"
#include "mq_tls.h"
#include "mq_trace.h"
#include "mq_worker.h"
#include "reqring.h"
#include "mq_settings.h"
#include "ops.h"
#include "policy.h"
#include "request.h"

/* How long a stopping worker may take to close the connection before its
 * socket is shut down under it (a frozen broker). */
#define STOP_GRACE_MS 2000

struct mq_backend_sub {
    struct dlist node;       /* in mb->subs */
    uint64_t consumer;       /* ferry-wide consumer number */
    struct client *client;   /* refers; removed before the client is freed */
    uint64_t sub;            /* the consume request's id */
    bool active;             /* the broker confirmed the subscription */
    char queue[256];         /* for the spans of its deliveries and acks */
};

struct mq_backend {
    struct backend base;
    struct url_amqp *addrs; /* owns */
    size_t naddrs;
    bool enabled;            /* an amqp_url is configured */
    struct mq_tls tls;       /* owns: the amqp_tls_* values in force (the worker copies them) */
    struct mq_worker *wk;    /* owns */
    uv_async_t async;        /* the worker's events arrive here */
    uv_timer_t stop_timer;
    bool handles_open, stopping;
    enum { MB_CONNECTING, MB_UP, MB_DOWN } state;
    bool blocked;
    char last_error[256];
    size_t addr;             /* the URL connected to, or tried next (stats) */
    struct reqring pending;  /* requests awaiting the worker */
    struct dlist subs;       /* struct mq_backend_sub */
    uint64_t next_consumer;
};

static const struct {
    const char *name;
    enum mq_op op;
} ops[] = {
    {"exchange.declare", MQ_OP_EXCHANGE_DECLARE}, {"exchange.delete", MQ_OP_EXCHANGE_DELETE},
    {"queue.declare", MQ_OP_QUEUE_DECLARE},       {"queue.bind", MQ_OP_QUEUE_BIND},
    {"queue.unbind", MQ_OP_QUEUE_UNBIND},         {"queue.purge", MQ_OP_QUEUE_PURGE},
    {"queue.delete", MQ_OP_QUEUE_DELETE},         {"publish", MQ_OP_PUBLISH},
    {"publish.batch", MQ_OP_PUBLISH_BATCH},       {"publish.delayed", MQ_OP_PUBLISH_DELAYED},
    {"consume", MQ_OP_CONSUME},                   {"ack", MQ_OP_ACK},
    {"nack", MQ_OP_NACK},                         {"reject", MQ_OP_REJECT},
    {"cancel", MQ_OP_CANCEL},                     {"get", MQ_OP_GET},
    {"rpc", MQ_OP_RPC},
};

static struct mq_backend *mb_of(struct backend *b) { return container_of(b, struct mq_backend, base); }

static const struct url_amqp *server_addr(const struct mq_backend *mb)
{
    return mb->naddrs ? &mb->addrs[mb->addr] : NULL;
}

struct sub_lookup {
    struct mq_backend *mb;
    const struct client *client;
};

/* The client's active subscription sub. */
static struct mq_backend_sub *find_sub(struct mq_backend *mb, const struct client *c, uint64_t sub)
{
    struct dlist *p;
    dlist_foreach(p, &mb->subs) {
        struct mq_backend_sub *s = container_of(p, struct mq_backend_sub, node);
        if (s->client == c && s->sub == sub && s->active)
            return s;
    }
    return NULL;
}

/* mq_args_ctx's find_sub. */
static bool lookup_sub(void *ctx, uint64_t sub, uint64_t *consumer)
{
    struct sub_lookup *l = ctx;
    struct mq_backend_sub *s = find_sub(l->mb, l->client, sub);
    if (s)
        *consumer = s->consumer;
    return s != NULL;
}

static struct mq_backend_sub *find_consumer(struct mq_backend *mb, uint64_t consumer)
{
    struct dlist *p;
    dlist_foreach(p, &mb->subs) {
        struct mq_backend_sub *s = container_of(p, struct mq_backend_sub, node);
        if (s->consumer == consumer)
            return s;
    }
    return NULL;
}

static void drop_sub(struct mq_backend *mb, struct mq_backend_sub *s, bool tell_worker)
{
    if (tell_worker) {
        struct mq_cmd *c = mq_cmd_new(MC_CANCEL, 0, UINT64_MAX);
        c->consumer = s->consumer;
        mq_worker_post(mb->wk, c);
    }
    dlist_remove(&s->node);
    free(s);
}

static bool is_publish(int op)
{
    return op == MQ_OP_PUBLISH || op == MQ_OP_PUBLISH_BATCH || op == MQ_OP_PUBLISH_DELAYED;
}

/* ---- the backend interface ---- */

/* One name under a policy's list: NULL, or what to say. */
static const char *check_name(const struct policy *p, enum policy_list l, const char *what, amqp_bytes_t name,
                              char *msg, size_t len)
{
    if (policy_allows_name(p, l, name.bytes, name.len))
        return NULL;
    snprintf(msg, len, "policy '%s' does not allow %s '%.*s' (%s)", p->name, what, (int)(name.len > 64 ? 64 : name.len),
             (const char *)name.bytes, policy_list_key(l));
    return msg;
}

/* The names a command touches, in RabbitMQ's own terms: configure to
 * declare or delete, write to publish to an exchange or bind a queue, read
 * to consume, get or purge a queue, or to bind from an exchange. */
static const char *check_policy(const struct policy *p, enum mq_op op, const struct mq_cmd *c, char *msg, size_t len)
{
    const char *bad = NULL;
    switch (op) {
    case MQ_OP_EXCHANGE_DECLARE:
    case MQ_OP_EXCHANGE_DELETE:
        return check_name(p, PL_AMQP_CONFIGURE, "exchange", c->name, msg, len);
    case MQ_OP_QUEUE_DECLARE:
    case MQ_OP_QUEUE_DELETE:
        return check_name(p, PL_AMQP_CONFIGURE, "queue", c->name, msg, len);
    case MQ_OP_QUEUE_BIND:
    case MQ_OP_QUEUE_UNBIND:
        bad = check_name(p, PL_AMQP_WRITE, "queue", c->name, msg, len);
        return bad ? bad : check_name(p, PL_AMQP_READ, "exchange", c->exchange, msg, len);
    case MQ_OP_QUEUE_PURGE:
    case MQ_OP_GET:
    case MQ_OP_CONSUME:
        return check_name(p, PL_AMQP_READ, "queue", c->name, msg, len);
    case MQ_OP_PUBLISH:
    case MQ_OP_PUBLISH_BATCH:
    case MQ_OP_PUBLISH_DELAYED:
    case MQ_OP_RPC:
        for (size_t i = 0; i < c->nmsgs && !bad; i++)
            bad = check_name(p, PL_AMQP_WRITE, "exchange", c->msgs[i].exchange, msg, len);
        return bad;
    default:
        return NULL; /* ack, nack, reject, cancel: only the client's own deliveries */
    }
}

static void mb_submit(struct backend *b, struct request *r)
{
    struct mq_backend *mb = mb_of(b);
    enum mq_op op = (enum mq_op)r->op->kind;
    if (!mb->enabled) {
        request_fail(r, FE_UNAVAILABLE, "AMQP is not configured (amqp_url is empty)");
        return;
    }
    struct sub_lookup lookup = {.mb = mb, .client = r->client};
    struct mq_args_ctx ctx = {
        .op_name = r->op->name,
        .deadline = mq_now_ms() + (r->deadline.at - uv_now(b->host->loop)),
        .default_prefetch = (uint16_t)mq_settings_of(b->host->cfg)->prefetch,
        .client_id = r->client->id,
        .find_sub = lookup_sub,
        .ctx = &lookup,
    };
    int code;
    char msg[256];
    struct mq_cmd *c = mq_args_build(op, r->v.args, r->v.args_len, &ctx, &code, msg, sizeof(msg));
    if (!c) {
        request_fail(r, code, msg);
        return;
    }
    const char *denied = r->policy ? check_policy(r->policy, op, c, msg, sizeof(msg)) : NULL;
    if (denied) {
        r->policy->denied++;
        mq_cmd_free(c);
        request_fail(r, FE_DENIED, denied);
        return;
    }
    if (op == MQ_OP_CANCEL) {
        /* Forget the subscription now: pushes still in flight for it are
         * dropped rather than sent after the client was told it ended. */
        struct mq_backend_sub *s = find_consumer(mb, c->consumer);
        if (s) {
            dlist_remove(&s->node);
            free(s);
        }
    }
    if (mb->state == MB_DOWN && op != MQ_OP_CANCEL) {
        mq_cmd_free(c);
        char why[320];
        snprintf(why, sizeof(why), "the broker is unreachable (%s)", mb->last_error);
        request_fail(r, FE_UNAVAILABLE, why);
        return;
    }
    if (reqring_size(&mb->pending) >= (size_t)mq_settings_of(b->host->cfg)->max_pending) {
        mq_cmd_free(c);
        request_fail(r, FE_OVERLOADED, NULL);
        return;
    }
    if (op == MQ_OP_CONSUME) {
        struct mq_backend_sub *s = xcalloc(1, sizeof(*s));
        s->consumer = c->consumer = ++mb->next_consumer;
        s->client = r->client;
        s->sub = r->id;
        snprintf(s->queue, sizeof(s->queue), "%.*s", (int)c->name.len, (char *)c->name.bytes);
        dlist_push_tail(&mb->subs, &s->node);
        r->bdata = s;
    }
    const char *queue = NULL;
    if (op == MQ_OP_ACK || op == MQ_OP_NACK || op == MQ_OP_REJECT) {
        struct mq_backend_sub *s = find_consumer(mb, c->consumer);
        queue = s ? s->queue : NULL;
    }
    mq_trace_request(r, op, c, queue, server_addr(mb));
    c->seq = reqring_push(&mb->pending, r) + 1; /* 0 means "no answer due" */
    r->bseq = c->seq;
    mq_worker_post(mb->wk, c);
}

static void mb_cancel(struct backend *b, struct request *r)
{
    struct mq_backend *mb = mb_of(b);
    reqring_cancel(&mb->pending, r->bseq - 1, r);
    /* A consume that timed out may still succeed at the broker; cancel it
     * there too, since nobody will read its deliveries. */
    if (r->op->kind == MQ_OP_CONSUME && r->bdata)
        drop_sub(mb, r->bdata, true);
}

static int mb_timeout_code(struct backend *b, struct request *r)
{
    struct mq_backend *mb = mb_of(b);
    if (!is_publish(r->op->kind))
        return FE_TIMEOUT;
    if (mb->blocked)
        return FE_BLOCKED;
    return mb->state == MB_UP ? FE_TIMEOUT : FE_UNCONFIRMED;
}

static void mb_client_closed(struct backend *b, struct client *c)
{
    struct mq_backend *mb = mb_of(b);
    bool any = false;
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &mb->subs) {
        struct mq_backend_sub *s = container_of(pos, struct mq_backend_sub, node);
        if (s->client == c) {
            dlist_remove(&s->node);
            free(s);
            any = true;
        }
    }
    if (any) {
        struct mq_cmd *cmd = mq_cmd_new(MC_CLIENT_GONE, 0, UINT64_MAX);
        cmd->client_id = c->id;
        mq_worker_post(mb->wk, cmd);
    }
}

/* ---- events from the worker ---- */

static void on_stop_timer(uv_timer_t *t)
{
    struct mq_backend *mb = container_of(t, struct mq_backend, stop_timer);
    log_warn("amqp: the worker is slow to stop; shutting its socket down");
    mq_worker_kick_socket(mb->wk);
}

static void on_result(struct mq_backend *mb, struct mq_event *e)
{
    struct request *r = reqring_take(&mb->pending, e->seq - 1);
    if (!r)
        return; /* it timed out, or its client left */
    if (r->op->kind == MQ_OP_CONSUME && r->bdata) {
        struct mq_backend_sub *s = r->bdata;
        if (e->code)
            drop_sub(mb, s, false);
        else
            s->active = true;
    }
    if (e->code) {
        request_fail(r, e->code, e->message);
    } else if (r->op->kind == MQ_OP_CONSUME) {
        /* Add the subscription id to the worker's {"consumer_tag"}. */
        size_t at;
        struct cbuf *out = request_result_begin(r, &at);
        cbuf_map(out, 2);
        cbuf_str(out, "sub");
        cbuf_uint(out, r->id);
        cbuf_put(out, e->data.data + 1, e->data.len - 1);
        request_result_end(r, at);
    } else {
        request_result(r, e->data.data, e->data.len);
    }
}

static void on_push(struct mq_backend *mb, struct mq_event *e)
{
    struct mq_backend_sub *s = find_consumer(mb, e->consumer);
    if (!s)
        return;
    struct telemetry *tel = mb->base.host->tel;
    bool ended = strcmp(e->message, "cancelled") == 0;
    char tp[MQ_TRACE_TP_SIZE] = "";
    struct span *sp = ended ? NULL : mq_trace_delivery_start(tel, s->queue, e, server_addr(mb), tp);
    client_push(s->client, s->sub, e->message, e->data.data, e->data.len, tp[0] ? tp : NULL);
    mq_trace_delivery_end(tel, sp);
    if (ended)
        drop_sub(mb, s, false);
}

static void handle_event(struct mq_backend *mb, struct mq_event *e)
{
    switch (e->kind) {
    case ME_RESULT:
        on_result(mb, e);
        break;
    case ME_PUSH:
        on_push(mb, e);
        break;
    case ME_STATE:
        mb->state = e->up ? MB_UP : MB_DOWN;
        mb->blocked = e->blocked;
        if (e->addr < mb->naddrs)
            mb->addr = e->addr;
        snprintf(mb->last_error, sizeof(mb->last_error), "%s", e->message);
        backend_changed(&mb->base);
        break;
    case ME_STOPPED:
        mq_worker_join(mb->wk);
        uv_close((uv_handle_t *)&mb->async, NULL);
        uv_close((uv_handle_t *)&mb->stop_timer, NULL);
        mb->handles_open = false;
        break;
    }
}

static void on_async(uv_async_t *h)
{
    struct mq_backend *mb = container_of(h, struct mq_backend, async);
    struct dlist batch;
    dlist_init(&batch);
    mq_worker_take_events(mb->wk, &batch);
    struct dlist done;
    dlist_init(&done);
    bool stopped = false;
    while (!dlist_empty(&batch)) {
        struct mq_event *e = container_of(batch.next, struct mq_event, node);
        dlist_remove(&e->node);
        stopped = e->kind == ME_STOPPED;
        if (stopped) {
            /* Whatever is done goes back before the worker is joined. */
            mq_worker_recycle(mb->wk, &done);
            handle_event(mb, e);
            mq_event_free(e);
            break; /* the worker is joined and its queues freed */
        }
        handle_event(mb, e);
        dlist_push_tail(&done, &e->node);
    }
    if (!stopped)
        mq_worker_recycle(mb->wk, &done);
    while (!dlist_empty(&batch)) {
        struct mq_event *e = container_of(batch.next, struct mq_event, node);
        dlist_remove(&e->node);
        mq_event_free(e);
    }
}

static int mb_start(struct backend *b)
{
    struct mq_backend *mb = mb_of(b);
    if (!mb->enabled)
        return 0;
    const struct mq_settings *st = mq_settings_of(b->host->cfg);
    uv_async_init(b->host->loop, &mb->async, on_async);
    uv_timer_init(b->host->loop, &mb->stop_timer);
    mb->handles_open = true;
    struct mq_worker_config cfg = {
        .addrs = mb->addrs,
        .naddrs = mb->naddrs,
        .connect_timeout_ms = (uint64_t)st->connect_timeout_ms,
        .backoff_min_ms = (uint64_t)st->backoff_min_ms,
        .backoff_max_ms = (uint64_t)st->backoff_max_ms,
        .tls = &mb->tls,
    };
    if (mq_worker_start(mb->wk, &cfg, &mb->async) != 0) {
        log_error("amqp: cannot start the worker thread");
        return FE_INTERNAL;
    }
    log_info("amqp backend: %s%s", mb->addrs[0].redacted, mb->naddrs > 1 ? " (and fallbacks)" : "");
    bool any_tls = false;
    for (size_t i = 0; i < mb->naddrs; i++)
        any_tls = any_tls || mb->addrs[i].tls;
    if (!any_tls && (mb->tls.ca_file[0] || mb->tls.cert[0] || mb->tls.key[0]))
        log_warn("amqp backend: amqp_tls_* keys are set, but no amqp_url is amqps://: they are ignored");
    return 0;
}

static void mb_stats(struct backend *b, struct cbuf *o)
{
    struct mq_backend *mb = mb_of(b);
    const struct mq_counters *k = mq_worker_counters(mb->wk);
    size_t nsubs = 0;
    struct dlist *p;
    dlist_foreach(p, &mb->subs)
        nsubs++;
    cbuf_map(o, 15);
    cbuf_str(o, "url");
    cbuf_str(o, mb->naddrs ? mb->addrs[mb->addr].redacted : "");
    cbuf_str(o, "state");
    cbuf_str(o, !mb->enabled ? "disabled" : mb->state == MB_UP ? "up" : mb->state == MB_DOWN ? "down" : "connecting");
    cbuf_str(o, "blocked");
    cbuf_bool(o, mb->blocked);
    cbuf_str(o, "last_error");
    cbuf_str(o, mb->last_error);
    cbuf_str(o, "pending");
    cbuf_uint(o, reqring_size(&mb->pending));
    cbuf_str(o, "subscriptions");
    cbuf_uint(o, nsubs);
#define K(name)                    \
    cbuf_str(o, #name);            \
    cbuf_uint(o, atomic_load(&k->name));
    K(connects) K(drops) K(confirms) K(nacks) K(returns) K(republished) K(deliveries) K(acks_merged)
#undef K
    cbuf_str(o, "max_body");
    cbuf_uint(o, MQ_ARGS_MAX_BODY);
}

static enum backend_health mb_health(struct backend *b, char *why, size_t len)
{
    struct mq_backend *mb = mb_of(b);
    if (!mb->enabled)
        return BH_OFF;
    snprintf(why, len, "%s", mb->state == MB_UP ? "" : mb->last_error);
    return mb->state == MB_UP ? BH_UP : mb->state == MB_DOWN ? BH_DOWN : BH_CONNECTING;
}

static void mb_metrics(struct backend *b, const struct metric_emit *e)
{
    struct mq_backend *mb = mb_of(b);
    if (!mb->enabled)
        return;
    if (e->connections)
        e->connections(e->ctx, "amqp", mb->state == MB_UP ? "up" : mb->state == MB_DOWN ? "down" : "connecting", 1);
    if (e->counter) {
        const struct mq_counters *k = mq_worker_counters(mb->wk);
        uint64_t connects = atomic_load(&k->connects);
        e->counter(e->ctx, "amqp", "ferry.backend.reconnects", connects > 1 ? connects - 1 : 0);
        e->counter(e->ctx, "amqp", "ferry.amqp.confirms", atomic_load(&k->confirms));
        e->counter(e->ctx, "amqp", "ferry.amqp.nacks", atomic_load(&k->nacks));
        e->counter(e->ctx, "amqp", "ferry.amqp.returns", atomic_load(&k->returns));
    }
}

/* amqp_max_pending and amqp_prefetch are read where used; the TLS keys go
 * to the thread, whose next connection attempt takes them. */
static void mb_reload(struct backend *b, const struct config *cfg)
{
    struct mq_backend *mb = mb_of(b);
    const struct mq_settings *st = mq_settings_of(cfg);
    mq_tls_free(&mb->tls);
    mq_tls_set(&mb->tls, st->tls_ca_file, st->tls_cert, st->tls_key, st->tls_verify);
    if (mb->enabled && !mb->stopping)
        mq_worker_set_tls(mb->wk, &mb->tls);
}

static void mb_close(struct backend *b)
{
    struct mq_backend *mb = mb_of(b);
    if (!mb->handles_open || mb->stopping)
        return;
    mb->stopping = true;
    mq_worker_stop(mb->wk);
    uv_timer_start(&mb->stop_timer, on_stop_timer, STOP_GRACE_MS, 0);
    uv_unref((uv_handle_t *)&mb->stop_timer);
}

static void mb_destroy(struct backend *b)
{
    struct mq_backend *mb = mb_of(b);
    mq_worker_free(mb->wk);
    while (!dlist_empty(&mb->subs))
        drop_sub(mb, container_of(mb->subs.next, struct mq_backend_sub, node), false);
    for (size_t i = 0; i < mb->naddrs; i++)
        url_amqp_free(&mb->addrs[i]);
    free(mb->addrs);
    mq_tls_free(&mb->tls);
    reqring_free(&mb->pending);
    free(mb);
}

static const struct backend_ops mq_backend_ops = {
    .name = "amqp",
    .start = mb_start,
    .submit = mb_submit,
    .cancel = mb_cancel,
    .timeout_code = mb_timeout_code,
    .client_closed = mb_client_closed,
    .health = mb_health,
    .stats = mb_stats,
    .metrics = mb_metrics,
    .reload = mb_reload,
    .close = mb_close,
    .destroy = mb_destroy,
};

/* Parses the AMQP keys and, when amqp_url names a broker, registers the
 * AMQP ops. Returns the backend, or NULL with a message naming the key in
 * err. */
static struct backend *mb_create(const struct backend_host *h, char *err, size_t errlen)
{
    struct mq_backend *mb = xcalloc(1, sizeof(*mb));
    mb->base.ops = &mq_backend_ops;
    mb->base.host = h;
    mb->wk = mq_worker_new();
    dlist_init(&mb->subs);
    reqring_init(&mb->pending);
    const struct mq_settings *st = mq_settings_of(h->cfg);
    /* Copied: a reload replaces the configuration's strings. */
    mq_tls_set(&mb->tls, st->tls_ca_file, st->tls_cert, st->tls_key, st->tls_verify);
    char *copy = xstrdup(st->url);
    for (char *save = NULL, *u = strtok_r(copy, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        while (*u == ' ')
            u++;
        if (!*u)
            continue;
        mb->addrs = xrealloc(mb->addrs, (mb->naddrs + 1) * sizeof(*mb->addrs));
        char why[256];
        if (url_parse_amqp(u, &mb->addrs[mb->naddrs], why, sizeof(why)) != 0) {
            snprintf(err, errlen, "key 'amqp_url': %s", why);
            free(copy);
            mb_destroy(&mb->base);
            return NULL;
        }
        mb->naddrs++;
    }
    free(copy);
    mb->enabled = mb->naddrs > 0;
    mb->base.fds = mb->enabled ? 1 : 0; /* the broker's socket */
    /* Without a broker the ops are not served at all: hello lists only what
     * can work, and a client that sends one anyway gets unknown_op, which
     * no retry will change, rather than unavailable, which invites one. */
    for (size_t i = 0; mb->enabled && i < sizeof(ops) / sizeof(ops[0]); i++)
        if (ops_add(h->ops, ops[i].name, NULL, NULL, &mb->base, ops[i].op) != 0) {
            snprintf(err, errlen, "cannot register the AMQP ops");
            mb_destroy(&mb->base);
            return NULL;
        }
    return &mb->base;
}

const struct backend_kind mq_backend_kind = {"amqp", &mq_settings_section, mb_create};
