/* pubsub.c: Redis pub/sub for every client on one subscriber connection
 * (pubsub.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "client.h"
#include "codec.h"
#include "errors.h"
#include "log.h"
#include "pargs.h"
#include "policy.h"
#include "pubsub.h"
#include "pubsub_clients.h"
#include "pubsub_names.h"
#include "rds_backend.h"
#include "rds_config.h"
#include "rds_conn.h"
#include "request.h"

/* Names one request may subscribe to, and names one (UN)SUBSCRIBE carries. */
#define PS_MAX_NAMES 1024
#define PS_CHUNK 256
/* Scratch kept between messages; a larger one is freed after use. */
#define PS_KEEP (256 * 1024)

struct ps_sub;

/* A subscription's place on one of its names. */
struct ps_member {
    struct dlist node;       /* in name->members */
    struct ps_sub *sub;      /* refers: its subscription */
    struct ps_name *name;    /* refers: NULL for a duplicate name, which joins nothing */
};

/* One subscription: a subscribe request's channels or patterns, until
 * unsubscribe or its client closes. */
struct ps_sub {
    struct rds_job job;      /* its request, while it waits for Redis's confirmations */
    struct pubsub *ps;       /* refers */
    struct dlist node;       /* in ps->subs, then in ps->ended once it ended */
    struct dlist cnode;      /* in its client's entry of ps->clients while live */
    struct client *client;   /* refers; NULL once ended */
    uint64_t id;             /* the subscribe request's id: the pushes' sub */
    bool active;             /* its result was sent: pushes may follow */
    bool gap;                /* the connection was lost since: say so once restored */
    size_t waiting;          /* its names not yet confirmed by Redis */
    uint64_t dropped;        /* messages dropped since its last 'dropped' push */
    size_t n;
    struct ps_member m[];    /* owns */
};

struct pubsub {
    struct rds_backend *rb;  /* refers */
    struct rds_conn *conn;   /* owns: the subscriber connection, made at the first subscribe */
    bool started;            /* the loop runs */
    struct pubsub_names names; /* owns */
    struct pubsub_clients clients; /* owns: each client's live subscriptions */
    struct dlist subs;       /* owns: the live subscriptions */
    /* owns: subscriptions ended while something walks the members (a
     * push may close a client, whose subscriptions end at once); they
     * leave their names and are freed when the outermost entry returns. */
    struct dlist ended;
    unsigned depth;          /* entries into this module now on the stack */
    struct cbuf data;        /* owns: one push's data, encoded once per message */
    struct cbuf small;       /* owns: a 'dropped' or 'gap' push's data */
    size_t nsubs;
    uint64_t messages, delivered, dropped, disconnected, gaps, published, resubscribes;
};

static struct pubsub *ps_of(struct rds_backend *rb)
{
    return rds_backend_state(rb, &pubsub_module);
}

static void enter(struct pubsub *ps)
{
    ps->depth++;
}

/* ---- talking to Redis ---- */

/* Sends cmd naming names[], PS_CHUNK of them per command. Redis confirms
 * each name with a reply of its own; until it comes, the name counts one
 * more command in flight. */
static void send_names(struct pubsub *ps, const char *cmd, struct ps_name **names, size_t n)
{
    const char *argv[PS_CHUNK + 1];
    size_t lens[PS_CHUNK + 1];
    argv[0] = cmd;
    lens[0] = strlen(cmd);
    for (size_t at = 0; at < n; at += PS_CHUNK) {
        size_t k = n - at < PS_CHUNK ? n - at : PS_CHUNK;
        for (size_t i = 0; i < k; i++) {
            argv[1 + i] = names[at + i]->text;
            lens[1 + i] = names[at + i]->len;
        }
        if (rds_conn_send_raw(ps->conn, (int)k + 1, argv, lens) != 0)
            return; /* not ready: the ready hook sends what is wanted */
        for (size_t i = 0; i < k; i++)
            names[at + i]->inflight++;
    }
}

static bool conn_ready(const struct pubsub *ps)
{
    return ps->conn && ps->conn->state == RC_READY;
}

/* A name's last member left: unsubscribe it on Redis, or forget it when
 * nothing is in flight for it. */
static void name_unused(struct pubsub *ps, struct ps_name *e, struct ps_name **batch, size_t *nb)
{
    e->want = false;
    e->confirmed = false;
    if (conn_ready(ps))
        batch[(*nb)++] = e;
    else if (!e->inflight)
        pubsub_names_remove(&ps->names, e);
}

/* Frees the subscriptions that ended, once nothing walks the members:
 * their names lose a member each, and the names nobody wants any more are
 * unsubscribed, in one command per kind. */
static void leave(struct pubsub *ps)
{
    if (--ps->depth || dlist_empty(&ps->ended))
        return;
    ps->depth++;
    struct ps_name *chan[PS_CHUNK], *pat[PS_CHUNK];
    size_t nc = 0, np = 0;
    while (!dlist_empty(&ps->ended)) {
        struct ps_sub *s = container_of(ps->ended.next, struct ps_sub, node);
        dlist_remove(&s->node);
        for (size_t i = 0; i < s->n; i++) {
            struct ps_name *e = s->m[i].name;
            if (!e)
                continue;
            dlist_remove(&s->m[i].node);
            if (--e->refs)
                continue;
            if (e->pattern)
                name_unused(ps, e, pat, &np);
            else
                name_unused(ps, e, chan, &nc);
            if (nc == PS_CHUNK) {
                send_names(ps, "UNSUBSCRIBE", chan, nc);
                nc = 0;
            }
            if (np == PS_CHUNK) {
                send_names(ps, "PUNSUBSCRIBE", pat, np);
                np = 0;
            }
        }
        free(s);
    }
    send_names(ps, "UNSUBSCRIBE", chan, nc);
    send_names(ps, "PUNSUBSCRIBE", pat, np);
    ps->depth--;
}

/* Ends s: no push follows. Its names are left in leave(). */
static void sub_end(struct pubsub *ps, struct ps_sub *s)
{
    if (!s->client)
        return;
    struct ps_client *pc = pubsub_clients_find(&ps->clients, s->client);
    dlist_remove(&s->cnode);
    if (dlist_empty(&pc->subs))
        pubsub_clients_remove(&ps->clients, pc);
    s->client = NULL;
    dlist_remove(&s->node);
    dlist_push_tail(&ps->ended, &s->node);
    ps->nsubs--;
}

/* ---- pushes ---- */

/* A push whose data is a one-key map: {key: u} or {key: text}. */
static void push_small(struct pubsub *ps, struct ps_sub *s, const char *kind, const char *key, uint64_t u,
                       const char *text)
{
    struct cbuf *o = &ps->small;
    o->len = 0;
    cbuf_map(o, 1);
    cbuf_str(o, key);
    if (text)
        cbuf_str(o, text);
    else
        cbuf_uint(o, u);
    client_push(s->client, s->id, kind, o->data, o->len, NULL);
}

/* All of s's names are confirmed: its request gets its result, or, after
 * a reconnect, it hears of the gap. */
static void sub_ready(struct pubsub *ps, struct ps_sub *s)
{
    if (!s->client)
        return;
    if (!s->active) {
        s->active = true;
        struct request *r = s->job.r;
        s->job.r = NULL;
        if (r) {
            size_t at;
            struct cbuf *o = request_result_begin(r, &at);
            cbuf_map(o, 1);
            cbuf_str(o, "sub");
            cbuf_uint(o, s->id);
            request_result_end(r, at);
        }
        s->gap = false;
        return;
    }
    if (s->gap && !s->client->closing) {
        s->gap = false;
        ps->gaps++;
        push_small(ps, s, "gap", "reason", 0,
                   "the connection to redis was lost and made again: messages published meanwhile were missed");
    }
}

/* One message to one subscription, unless its client is over its bound:
 * its unwritten output (acct_out, which includes every other response
 * queued for it) plus this push. A client with nothing queued always gets
 * the message, so one larger than the bound still reaches readers. */
static void deliver(struct pubsub *ps, struct ps_sub *s)
{
    struct client *c = s->client;
    if (c->closing)
        return;
    const struct rds_config *rc = ps->rb->t.rc;
    size_t bound = (size_t)rc->pubsub_buffer, need = ps->data.len + 48;
    if (c->acct_out > 0 && c->acct_out + need > bound) {
        if (!strcmp(rc->pubsub_overflow, "disconnect")) {
            ps->disconnected++;
            char why[160];
            snprintf(why, sizeof(why), "not reading its pub/sub messages (%zu bytes unwritten, redis_pubsub_buffer %zu)",
                     c->acct_out, bound);
            log_warn("%s disconnected: %s", c->who, why);
            client_close(c, why);
            return;
        }
        s->dropped++;
        ps->dropped++;
        return;
    }
    if (s->dropped) {
        push_small(ps, s, "dropped", "count", s->dropped, NULL);
        s->dropped = 0;
        if (c->closing)
            return;
    }
    client_push(c, s->id, "message", ps->data.data, ps->data.len, NULL);
    ps->delivered++;
}

static void put_name(struct cbuf *o, const char *p, size_t n)
{
    if (utf8_valid((const uint8_t *)p, n))
        cbuf_text(o, p, n);
    else
        cbuf_bytes(o, p, n);
}

static bool is_str(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS;
}

static void fan_out(struct pubsub *ps, struct ps_name *e, const redisReply *pattern, const redisReply *channel,
                    const redisReply *payload)
{
    ps->messages++;
    if (!e || !e->refs)
        return;
    struct cbuf *o = &ps->data;
    o->len = 0;
    cbuf_map(o, 3);
    cbuf_str(o, "channel");
    put_name(o, channel->str, channel->len);
    cbuf_str(o, "pattern");
    if (pattern)
        put_name(o, pattern->str, pattern->len);
    else
        cbuf_null(o);
    cbuf_str(o, "payload");
    cbuf_bytes(o, payload->str, payload->len);
    struct dlist *pos;
    dlist_foreach(pos, &e->members) {
        struct ps_sub *s = container_of(pos, struct ps_member, node)->sub;
        if (s->client && s->active)
            deliver(ps, s);
    }
    /* One large message should not pin its size for good. */
    if (o->cap > PS_KEEP) {
        cbuf_free(o);
        cbuf_init(o);
    }
}

/* A (P)(UN)SUBSCRIBE of e is confirmed. When it was the last one sent,
 * e's state is Redis's: subscribed (its members may be waiting for it),
 * or not, and then forgotten if unused. */
static void confirm(struct pubsub *ps, struct ps_name *e)
{
    if (!e || !e->inflight || --e->inflight)
        return;
    if (!e->want) {
        if (!e->refs)
            pubsub_names_remove(&ps->names, e);
        return;
    }
    if (e->confirmed)
        return;
    e->confirmed = true;
    struct dlist *pos;
    dlist_foreach(pos, &e->members) {
        struct ps_sub *s = container_of(pos, struct ps_member, node)->sub;
        if (s->waiting && --s->waiting == 0)
            sub_ready(ps, s);
    }
}

static void on_sink(struct rds_conn *c, void *arg, const redisReply *reply)
{
    (void)c;
    struct pubsub *ps = arg;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || !is_str(reply->element[0]))
        return;
    const redisReply *const *el = (const redisReply *const *)reply->element;
    const char *kind = el[0]->str;
    size_t klen = el[0]->len;
    enter(ps);
    if (klen == 7 && !memcmp(kind, "message", 7) && is_str(el[1]) && is_str(el[2])) {
        fan_out(ps, pubsub_names_find(&ps->names, false, el[1]->str, el[1]->len), NULL, el[1], el[2]);
    } else if (klen == 8 && !memcmp(kind, "pmessage", 8) && reply->elements == 4 && is_str(el[1]) &&
               is_str(el[2]) && is_str(el[3])) {
        fan_out(ps, pubsub_names_find(&ps->names, true, el[1]->str, el[1]->len), el[1], el[2], el[3]);
    } else if (is_str(el[1])) {
        bool pattern = klen > 0 && kind[0] == 'p';
        const char *k = pattern ? kind + 1 : kind;
        size_t kl = pattern ? klen - 1 : klen;
        if ((kl == 9 && !memcmp(k, "subscribe", 9)) || (kl == 11 && !memcmp(k, "unsubscribe", 11)))
            confirm(ps, pubsub_names_find(&ps->names, pattern, el[1]->str, el[1]->len));
    }
    leave(ps);
}

/* ---- the subscriber connection's life ---- */

/* Names to subscribe again after a reconnect, by kind. */
struct ps_resend {
    struct ps_name **names[2]; /* owns: channels, patterns */
    size_t n[2];
};

static void collect(struct ps_name *e, void *arg)
{
    struct ps_resend *rs = arg;
    e->inflight = 0;
    if (e->want)
        rs->names[e->pattern][rs->n[e->pattern]++] = e;
}

/* After each (re)connect: everything wanted is subscribed again, in
 * commands of PS_CHUNK names. */
static void on_ready(struct rds_conn *c, void *arg)
{
    struct pubsub *ps = arg;
    if (c->connects > 1)
        ps->resubscribes++;
    enter(ps);
    struct ps_resend rs = {{NULL, NULL}, {0, 0}};
    if (ps->names.n) {
        rs.names[0] = xmalloc(ps->names.n * sizeof(*rs.names[0]));
        rs.names[1] = xmalloc(ps->names.n * sizeof(*rs.names[1]));
        pubsub_names_each(&ps->names, collect, &rs);
        send_names(ps, "SUBSCRIBE", rs.names[0], rs.n[0]);
        send_names(ps, "PSUBSCRIBE", rs.names[1], rs.n[1]);
    }
    free(rs.names[0]);
    free(rs.names[1]);
    leave(ps);
}

/* The connection is gone, and with it every subscription on Redis: each
 * member waits for its name again, and live subscriptions will hear of
 * the gap. */
static void forget(struct ps_name *e, void *arg)
{
    struct pubsub *ps = arg;
    e->inflight = 0;
    if (!e->want) {
        pubsub_names_remove(&ps->names, e);
        return;
    }
    if (!e->confirmed)
        return;
    e->confirmed = false;
    struct dlist *pos;
    dlist_foreach(pos, &e->members) {
        struct ps_sub *s = container_of(pos, struct ps_member, node)->sub;
        s->waiting++;
        if (s->active)
            s->gap = true;
    }
}

static void on_lost(struct rds_conn *c, void *arg)
{
    (void)c;
    struct pubsub *ps = arg;
    enter(ps);
    pubsub_names_each(&ps->names, forget, ps);
    leave(ps);
}

static void ensure_conn(struct pubsub *ps)
{
    if (ps->conn)
        return;
    ps->conn = rds_backend_dedicated(ps->rb);
    ps->conn->hooks.arg = ps;
    ps->conn->hooks.ready = on_ready;
    ps->conn->hooks.sink = on_sink;
    ps->conn->hooks.lost = on_lost;
    if (ps->started)
        rds_conn_start(ps->conn);
}

/* ---- the ops ---- */

static void sub_cancel(struct rds_job *j)
{
    struct ps_sub *s = container_of(j, struct ps_sub, job);
    struct pubsub *ps = s->ps;
    enter(ps);
    sub_end(ps, s);
    leave(ps);
}

static struct ps_sub *find_sub(struct pubsub *ps, struct client *c, uint64_t id)
{
    struct ps_client *pc = pubsub_clients_find(&ps->clients, c);
    struct dlist *pos;
    if (pc) {
        dlist_foreach(pos, &pc->subs) {
            struct ps_sub *s = container_of(pos, struct ps_sub, cnode);
            if (s->id == id)
                return s;
        }
    }
    return NULL;
}

static int bad(struct request *r, const char *msg)
{
    request_fail(r, FE_BAD_REQUEST, msg);
    return 0;
}

/* Redis does not count channels as keys (COMMAND INFO names none), so
 * the policy's command check passes them all; ferryd holds channels to
 * redis_keys itself, as security.md says it treats them. A pattern must
 * itself fall within the globs: "app:*" under "app:*", never "*". */
static int check_channels(struct request *r, const char *const *names, const size_t *lens, int n, char *msg,
                          size_t len)
{
    if (!r->policy)
        return 0;
    for (int i = 0; i < n; i++) {
        if (!policy_allows_name(r->policy, PL_REDIS_KEYS, names[i], lens[i])) {
            r->policy->denied++;
            snprintf(msg, len, "policy '%s' does not allow channel '%.*s' (redis_keys)", r->policy->name,
                     (int)(lens[i] > 100 ? 100 : lens[i]), names[i]);
            return FE_DENIED;
        }
    }
    return 0;
}

/* Adds s's names: each new one is subscribed (when the connection is
 * ready; otherwise the ready hook does it). */
static void join_names(struct pubsub *ps, struct ps_sub *s, bool pattern, const char *const *names,
                       const size_t *lens, size_t n)
{
    struct ps_name *fresh[PS_MAX_NAMES];
    size_t nf = 0;
    for (size_t i = 0; i < n; i++) {
        struct ps_member *m = &s->m[i];
        m->sub = s;
        dlist_init(&m->node);
        struct ps_name *e = pubsub_names_add(&ps->names, pattern, names[i], lens[i]);
        /* A name given twice: its members are added in order, so an
         * earlier one of s is the last. */
        if (!dlist_empty(&e->members) && container_of(e->members.prev, struct ps_member, node)->sub == s)
            continue;
        m->name = e;
        dlist_push_tail(&e->members, &m->node);
        e->refs++;
        if (!e->want) {
            e->want = true;
            e->confirmed = false;
            fresh[nf++] = e;
        }
        if (!e->confirmed)
            s->waiting++;
    }
    send_names(ps, pattern ? "PSUBSCRIBE" : "SUBSCRIBE", fresh, nf);
}

static int subscribe(struct rds_backend *rb, struct request *r, bool pattern)
{
    struct pubsub *ps = ps_of(rb);
    const char *key = pattern ? "patterns" : "channels";
    struct parg spec[] = {{.name = key, .type = PA_ARRAY, .required = true}};
    char msg[256];
    const char *why = pargs_read(r->v.args, r->v.args_len, spec, 1, msg, sizeof(msg));
    if (why)
        return bad(r, why);
    static const char *argv[PS_MAX_NAMES + 1];
    static size_t lens[PS_MAX_NAMES + 1];
    int n = pargs_strings(spec[0].p, spec[0].n, argv + 1, lens + 1, PS_MAX_NAMES, msg, sizeof(msg));
    if (n < 0) {
        char m2[300];
        snprintf(m2, sizeof(m2), "%s: %s", key, msg);
        return bad(r, m2);
    }
    if (n == 0) {
        snprintf(msg, sizeof(msg), "%s: at least one is needed", key);
        return bad(r, msg);
    }
    argv[0] = pattern ? "PSUBSCRIBE" : "SUBSCRIBE";
    lens[0] = strlen(argv[0]);
    int code = rds_backend_check(rb, r, false, n + 1, argv, lens, msg, sizeof(msg));
    if (!code)
        code = check_channels(r, argv + 1, lens + 1, n, msg, sizeof(msg));
    if (code) {
        request_fail(r, code, msg);
        return 0;
    }
    if (find_sub(ps, r->client, r->id)) {
        snprintf(msg, sizeof(msg), "request id %llu already names a subscription of this connection",
                 (unsigned long long)r->id);
        return bad(r, msg);
    }
    ensure_conn(ps);
    if (!rds_conn_usable(ps->conn)) {
        snprintf(msg, sizeof(msg), "the subscriber connection to redis is down (%s)",
                 ps->conn->last_error[0] ? ps->conn->last_error : rds_conn_state_name(ps->conn->state));
        request_fail(r, FE_UNAVAILABLE, msg);
        return 0;
    }
    struct ps_sub *s = xcalloc(1, sizeof(*s) + (size_t)n * sizeof(s->m[0]));
    s->ps = ps;
    s->client = r->client;
    s->id = r->id;
    s->n = (size_t)n;
    s->job.cancel = sub_cancel;
    dlist_push_tail(&ps->subs, &s->node);
    dlist_push_tail(&pubsub_clients_add(&ps->clients, r->client)->subs, &s->cnode);
    ps->nsubs++;
    enter(ps);
    join_names(ps, s, pattern, argv + 1, lens + 1, (size_t)n);
    if (s->waiting) {
        rds_backend_hold(r, &s->job);
    } else {
        s->job.r = r;
        sub_ready(ps, s);
    }
    leave(ps);
    return 0;
}

static int op_subscribe(struct rds_backend *rb, struct request *r)
{
    return subscribe(rb, r, false);
}

static int op_psubscribe(struct rds_backend *rb, struct request *r)
{
    return subscribe(rb, r, true);
}

static int op_unsubscribe(struct rds_backend *rb, struct request *r)
{
    struct pubsub *ps = ps_of(rb);
    struct parg spec[] = {{.name = "sub", .type = PA_UINT, .required = true}};
    char msg[256];
    const char *why = pargs_read(r->v.args, r->v.args_len, spec, 1, msg, sizeof(msg));
    if (why)
        return bad(r, why);
    struct ps_sub *s = find_sub(ps, r->client, spec[0].u);
    if (!s || !s->active)
        return bad(r, "no such subscription on this connection");
    enter(ps);
    sub_end(ps, s);
    leave(ps);
    static const uint8_t empty_map = 0xa0;
    request_result(r, &empty_map, 1);
    return 0;
}

/* A publish in flight: its reply may come after its request is gone. */
struct ps_publish {
    struct rds_job job;
    struct pubsub *ps;       /* refers */
};

static void pub_cancel(struct rds_job *j)
{
    (void)j; /* freed when the reply comes */
}

static void on_published(void *arg, const redisReply *reply)
{
    struct ps_publish *p = arg;
    struct request *r = p->job.r;
    if (r) {
        if (reply && reply->type == REDIS_REPLY_INTEGER) {
            p->ps->published++;
            size_t at;
            struct cbuf *o = request_result_begin(r, &at);
            cbuf_map(o, 1);
            cbuf_str(o, "receivers");
            cbuf_uint(o, reply->integer > 0 ? (uint64_t)reply->integer : 0);
            request_result_end(r, at);
        } else {
            rds_backend_fail_reply(r, reply);
        }
    }
    free(p);
}

static int op_publish(struct rds_backend *rb, struct request *r)
{
    struct parg spec[] = {{.name = "channel", .type = PA_STR, .required = true},
                          {.name = "message", .type = PA_STR, .required = true}};
    char msg[256];
    const char *why = pargs_read(r->v.args, r->v.args_len, spec, 2, msg, sizeof(msg));
    if (why)
        return bad(r, why);
    const char *argv[3] = {"PUBLISH", (const char *)spec[0].p, (const char *)spec[1].p};
    size_t lens[3] = {7, spec[0].n, spec[1].n};
    /* On a pooled connection, so redis_deny applies, as to the redis op. */
    int code = rds_backend_check(rb, r, true, 3, argv, lens, msg, sizeof(msg));
    if (!code)
        code = check_channels(r, argv + 1, lens + 1, 1, msg, sizeof(msg));
    if (code) {
        request_fail(r, code, msg);
        return 0;
    }
    struct ps_publish *p = xcalloc(1, sizeof(*p));
    p->ps = ps_of(rb);
    p->job.cancel = pub_cancel;
    code = rds_backend_call(rb, argv[1], lens[1], 3, argv, lens, on_published, p);
    if (code) {
        free(p);
        return code;
    }
    rds_backend_hold(r, &p->job);
    return 0;
}

/* ---- the module ---- */

static void ps_client_closed(struct rds_backend *rb, void *state, struct client *c)
{
    (void)rb;
    struct pubsub *ps = state;
    enter(ps);
    /* The entry goes with its last subscription. */
    struct ps_client *pc;
    while ((pc = pubsub_clients_find(&ps->clients, c)))
        sub_end(ps, container_of(pc->subs.next, struct ps_sub, cnode));
    leave(ps);
}

static int ps_create(struct rds_backend *rb, void **state, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct pubsub *ps = xcalloc(1, sizeof(*ps));
    ps->rb = rb;
    dlist_init(&ps->subs);
    dlist_init(&ps->ended);
    cbuf_init(&ps->data);
    cbuf_init(&ps->small);
    *state = ps;
    rb->base.fds += 1; /* the subscriber connection */
    return 0;
}

static void ps_start(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct pubsub *ps = state;
    ps->started = true;
    if (ps->conn)
        rds_conn_start(ps->conn);
}

static void count_names(struct ps_name *e, void *arg)
{
    size_t *n = arg;
    if (e->refs)
        n[e->pattern]++;
}

static void ps_stats(struct rds_backend *rb, void *state, struct cbuf *o)
{
    (void)rb;
    struct pubsub *ps = state;
    size_t n[2] = {0, 0};
    pubsub_names_each(&ps->names, count_names, n);
    cbuf_map(o, 11);
    cbuf_str(o, "state");
    cbuf_str(o, ps->conn ? rds_conn_state_name(ps->conn->state) : "idle");
    cbuf_str(o, "channels");
    cbuf_uint(o, n[0]);
    cbuf_str(o, "patterns");
    cbuf_uint(o, n[1]);
    cbuf_str(o, "subscriptions");
    cbuf_uint(o, ps->nsubs);
    cbuf_str(o, "messages");
    cbuf_uint(o, ps->messages);
    cbuf_str(o, "delivered");
    cbuf_uint(o, ps->delivered);
    cbuf_str(o, "dropped");
    cbuf_uint(o, ps->dropped);
    cbuf_str(o, "disconnected");
    cbuf_uint(o, ps->disconnected);
    cbuf_str(o, "gaps");
    cbuf_uint(o, ps->gaps);
    cbuf_str(o, "resubscribes");
    cbuf_uint(o, ps->resubscribes);
    cbuf_str(o, "published");
    cbuf_uint(o, ps->published);
}

static void ps_close(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct pubsub *ps = state;
    if (ps->conn)
        rds_conn_stop(ps->conn);
}

static void free_list(struct dlist *l)
{
    while (!dlist_empty(l)) {
        struct ps_sub *s = container_of(l->next, struct ps_sub, node);
        dlist_remove(&s->node);
        free(s);
    }
}

static void ps_destroy(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct pubsub *ps = state;
    if (ps->conn)
        rds_conn_free(ps->conn);
    free_list(&ps->subs);
    free_list(&ps->ended);
    pubsub_names_free(&ps->names);
    pubsub_clients_free(&ps->clients);
    cbuf_free(&ps->data);
    cbuf_free(&ps->small);
    free(ps);
}

static const struct rds_opdef ps_ops[] = {
    {"pubsub.subscribe", op_subscribe},
    {"pubsub.psubscribe", op_psubscribe},
    {"pubsub.unsubscribe", op_unsubscribe},
    {"pubsub.publish", op_publish},
};

const struct rds_module pubsub_module = {
    .name = "pubsub",
    .ops = ps_ops,
    .nops = sizeof(ps_ops) / sizeof(ps_ops[0]),
    .create = ps_create,
    .start = ps_start,
    .client_closed = ps_client_closed,
    .stats = ps_stats,
    .close = ps_close,
    .destroy = ps_destroy,
};
