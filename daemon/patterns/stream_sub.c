/* stream_sub.c: stream.consume's subscriptions (stream_sub.h). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "client.h"
#include "dedpool.h"
#include "errors.h"
#include "log.h"
#include "rds_backend.h"
#include "rds_cluster.h"
#include "rds_slots.h"
#include "rds_conn.h"
#include "request.h"
#include "stream_entry.h"
#include "stream_sub.h"

/* Stream ids are "<ms>-<seq>", two 64-bit numbers: at most 41 bytes. */
#define ID_MAX 48
/* Pending entries the claim script looks at per run for dead letters. */
#define CLAIM_SCAN "100"

/* An entry pushed and not yet acked. */
struct held {
    uint8_t len;
    char id[ID_MAX];
};

struct stream_sub {
    struct dlist node;            /* in m->subs */
    struct stream_subs *m;         /* refers */
    struct client *client;        /* refers; NULL once ended */
    uint64_t id;                  /* the consume request's id: the pushes' sub */
    struct rds_job job;           /* the consume request, until its first read answers */
    struct rds_conn *conn;        /* refers: taken from the dedicated pool until the end */
    uv_timer_t timer;             /* the tick: claims, and reads again after a failure */
    /* owns, one block: the names, each NUL-terminated */
    char *stream, *group, *consumer, *dead;
    size_t stream_len, group_len, consumer_len, dead_len;
    unsigned prefetch;            /* the most entries pushed and unacked */
    uint64_t claim_idle_ms, max_deliveries;
    uint64_t period_ms;           /* claims run this often: claim_idle / 2 */
    uint64_t block_ms;            /* a read blocks this long at most, so claims are not held up */
    uint64_t last_claim;          /* uv_now() at the last claim's answer */
    struct held *held;            /* owns: prefetch slots, nheld in use */
    size_t nheld;
    /* What keeps it allocated: 1 while open, 1 while the timer is
     * open, 1 per reply awaited (reads, claims, acks, re-creations). */
    unsigned refs;
    bool started;                 /* the consume request was answered */
    bool ended;
    bool reading;                 /* an XREADGROUP awaits its reply on conn */
    bool claiming;                /* the claim script awaits its reply */
    bool wait_tick;               /* something failed: try again at the next tick */
    char last_error[120];         /* the last read error logged, to log each kind once */
};

/* A stream.ack on a subscription while XACK is out. */
struct ackjob {
    struct rds_job job;
    struct stream_sub *s;         /* refers, counted in s->refs */
    int n;
    struct held ids[];
};

static uv_loop_t *loop_of(struct stream_sub *s)
{
    return s->m->rb->t.loop;
}

static void release(struct stream_sub *s)
{
    if (--s->refs)
        return;
    dlist_remove(&s->node);
    free(s->stream);
    free(s->held);
    free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    release(container_of((uv_timer_t *)h, struct stream_sub, timer));
}

void stream_sub_end(struct stream_sub *s)
{
    if (s->ended)
        return;
    s->ended = true;
    s->client = NULL;
    s->m->nsubs--;
    /* A read may be blocked in Redis: the pool unblocks it before the
     * connection serves anyone else; its reply still comes to on_read,
     * which sees the end. */
    dedpool_give(s->m->rb, s->conn, s->reading);
    s->conn = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    release(s);
}

static struct held *held_find(struct stream_sub *s, const char *id, size_t len)
{
    for (size_t i = 0; i < s->nheld; i++)
        if (s->held[i].len == len && !memcmp(s->held[i].id, id, len))
            return &s->held[i];
    return NULL;
}

static void held_drop(struct stream_sub *s, const char *id, size_t len)
{
    struct held *h = held_find(s, id, len);
    if (h)
        *h = s->held[--s->nheld];
}

/* Pushes entry e with its delivery count, keeping its id until acked.
 * An id already held (reclaimed from ourselves) takes no second slot. */
static void deliver(struct stream_sub *s, const redisReply *e, uint64_t deliveries)
{
    struct stream_subs *m = s->m;
    if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 2 || !e->element[0] ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= ID_MAX)
        return;
    const char *id = e->element[0]->str;
    size_t len = e->element[0]->len;
    cbuf_reset(&m->scratch, 1 << 16);
    if (stream_entry_encode(&m->scratch, s->stream, s->stream_len, e, deliveries) != 0)
        return; /* deleted meanwhile (nil fields): nothing to deliver */
    if (!held_find(s, id, len)) {
        if (s->nheld == s->prefetch) {
            /* Never happens (reads and claims ask for the free slots
             * only); if it did, the entry stays pending and is claimed
             * again later. */
            log_warn("stream: subscription %llu got more entries than its prefetch; %.*s is left pending",
                     (unsigned long long)s->id, (int)len, id);
            return;
        }
        struct held *h = &s->held[s->nheld++];
        h->len = (uint8_t)len;
        memcpy(h->id, id, len);
    }
    m->pushed++;
    client_push(s->client, s->id, "entry", m->scratch.data, m->scratch.len, NULL);
}

static void step(struct stream_sub *s);
static void on_tick(uv_timer_t *t);

/* The consume request went away before its first read answered. */
static void on_start_cancel(struct rds_job *j)
{
    stream_sub_end(container_of(j, struct stream_sub, job));
}

static void push_gap(struct stream_sub *s, const char *reason)
{
    struct cbuf *o = &s->m->scratch;
    cbuf_reset(o, 1 << 16);
    cbuf_map(o, 3);
    cbuf_str(o, "stream");
    cbuf_text(o, s->stream, s->stream_len);
    cbuf_str(o, "group");
    cbuf_text(o, s->group, s->group_len);
    cbuf_str(o, "reason");
    cbuf_str(o, reason);
    client_push(s->client, s->id, "gap", o->data, o->len, NULL);
}

static void on_recreated(void *arg, const redisReply *reply)
{
    struct stream_sub *s = arg;
    if (!s->ended && reply && reply->type == REDIS_REPLY_STATUS) {
        s->m->groups_recreated++;
        log_warn("stream: group %s of %s was missing (a restarted or flushed redis?); created it again from "
                 "the stream's start",
                 s->group, s->stream);
        push_gap(s, "the group was missing on redis (restarted or flushed); ferryd created it again, from "
                    "the stream's first entry");
    }
    release(s);
}

/* Why XGROUP CREATE ... 0 MKSTREAM: a group that vanishes under a running
 * consumer most likely went with a restarted Redis that kept no data, or
 * a flush. Starting again from the stream's first entry delivers what
 * producers added since (at-least-once); "$" would skip it. The client
 * hears of it by a gap push, since entries may have been lost with the
 * old data. */
static void recreate_group(struct stream_sub *s)
{
    const char *argv[6] = {"XGROUP", "CREATE", s->stream, s->group, "0", "MKSTREAM"};
    size_t lens[6] = {6, 6, s->stream_len, s->group_len, 1, 8};
    if (rds_backend_call(s->m->rb, s->stream, s->stream_len, 6, argv, lens, on_recreated, s) == 0)
        s->refs++;
}

/* Logs an error reply once, not at every try while it lasts. */
static void note_error(struct stream_sub *s, const char *what, const redisReply *reply)
{
    if (strncmp(s->last_error, reply->str, sizeof(s->last_error) - 1) == 0)
        return;
    snprintf(s->last_error, sizeof(s->last_error), "%s", reply->str);
    log_warn("stream: %s on %s for subscription %llu failed: %s; trying again", what, s->stream,
             (unsigned long long)s->id, reply->str);
}

static void read_failed(struct stream_sub *s, const redisReply *reply)
{
    s->m->read_errors++;
    s->wait_tick = true;
    if (!reply)
        return; /* the connection went: it comes back by itself */
    if (reply->len >= 7 && !memcmp(reply->str, "NOGROUP", 7)) {
        recreate_group(s);
        return;
    }
    /* On a cluster, a MOVED (the stream's slot was resharded): the map
     * learns it, and the next read goes on a connection to the new node
     * (kept on this one while the pool has none to give). */
    struct rds_backend *rb = s->m->rb;
    if (rb->cluster && rds_cluster_redirected(rb->cluster, reply)) {
        struct rds_conn *c = dedpool_take_for(rb, rds_slots_of(s->stream, s->stream_len));
        if (c) {
            dedpool_give(rb, s->conn, false);
            s->conn = c;
        }
    }
    note_error(s, "XREADGROUP", reply);
}

/* Entries of a read: [[stream, [entry, ...]]], or nil when none came. */
static void deliver_read(struct stream_sub *s, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *st = reply->element[i];
        if (!st || st->type != REDIS_REPLY_ARRAY || st->elements < 2 || !st->element[1] ||
            st->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        const redisReply *es = st->element[1];
        for (size_t k = 0; k < es->elements && !s->ended; k++)
            deliver(s, es->element[k], 1);
    }
}

static void on_read(void *arg, const redisReply *reply)
{
    struct stream_sub *s = arg;
    s->reading = false;
    if (s->ended) {
        release(s);
        return;
    }
    if (!s->started) {
        struct request *r = s->job.r;
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
            /* Refused at once (NOGROUP: the group must be created first,
             * WRONGTYPE ...): the client hears why, and nothing runs. */
            s->job.r = NULL;
            rds_backend_fail_reply(r, reply);
            stream_sub_end(s);
            release(s);
            return;
        }
        s->started = true;
        s->job.r = NULL;
        size_t at;
        struct cbuf *o = request_result_begin(r, &at);
        cbuf_map(o, 1);
        cbuf_str(o, "sub");
        cbuf_uint(o, s->id);
        request_result_end(r, at);
        s->last_claim = uv_now(loop_of(s));
        /* Ticks at half the claim period (10 ms to 1 s): claims are late
         * by at most that, and a failed read is tried again as soon. */
        uint64_t tick = s->period_ms / 2 < 10 ? 10 : s->period_ms / 2 > 1000 ? 1000 : s->period_ms / 2;
        uv_timer_start(&s->timer, on_tick, tick, tick);
    }
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        read_failed(s, reply);
    else {
        s->last_error[0] = '\0';
        deliver_read(s, reply);
    }
    step(s);
    release(s);
}

/* XREADGROUP for up to the free slots; blocking unless first. */
static void read_more(struct stream_sub *s, size_t count, bool block)
{
    char cnt[24], ms[24];
    int cn = snprintf(cnt, sizeof(cnt), "%zu", count);
    int mn = snprintf(ms, sizeof(ms), "%llu", (unsigned long long)s->block_ms);
    const char *argv[11] = {"XREADGROUP", "GROUP", s->group, s->consumer, "COUNT", cnt, "BLOCK", ms,
                            "STREAMS", s->stream, ">"};
    size_t lens[11] = {10, 5, s->group_len, s->consumer_len, 5, (size_t)cn, 5, (size_t)mn, 7, s->stream_len, 1};
    if (!block) {
        /* Without BLOCK ms: the first read answers at once. */
        argv[6] = argv[8], lens[6] = lens[8];
        argv[7] = argv[9], lens[7] = lens[9];
        argv[8] = argv[10], lens[8] = lens[10];
    }
    if (rds_conn_call(s->conn, block ? 11 : 9, argv, lens, on_read, s) != 0) {
        s->wait_tick = true; /* the connection is down: the tick tries again */
        return;
    }
    s->reading = true;
    s->refs++;
}

/* An entry was dead-lettered (and acked in the group): whichever
 * subscription of the group still holds it frees its slot, or a client
 * that never acks a poison entry would stall its subscription. */
static void drop_dead(struct stream_sub *s, const char *id, size_t len)
{
    struct dlist *it;
    dlist_foreach(it, &s->m->subs)
    {
        struct stream_sub *o = container_of(it, struct stream_sub, node);
        if (!o->ended && o->stream_len == s->stream_len && o->group_len == s->group_len &&
            !memcmp(o->stream, s->stream, s->stream_len) && !memcmp(o->group, s->group, s->group_len))
            held_drop(o, id, len);
    }
}

/* The claim script answered: [[[id, fields, deliveries] ...], [dead id ...]]. */
static void on_claim(void *arg, const redisReply *reply)
{
    struct stream_sub *s = arg;
    s->claiming = false;
    if (s->ended) {
        release(s);
        return;
    }
    s->last_claim = uv_now(loop_of(s));
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        /* A missing group (after a restart) shows here too; the next
         * read creates it again. */
        if (reply && reply->type == REDIS_REPLY_ERROR)
            note_error(s, "reclaiming", reply);
        s->wait_tick = !reply;
    } else {
        const redisReply *dead = reply->element[1];
        for (size_t i = 0; dead->type == REDIS_REPLY_ARRAY && i < dead->elements; i++) {
            s->m->dead_lettered++;
            if (dead->element[i]->type == REDIS_REPLY_STRING)
                drop_dead(s, dead->element[i]->str, dead->element[i]->len);
        }
        const redisReply *got = reply->element[0];
        for (size_t i = 0; got->type == REDIS_REPLY_ARRAY && i < got->elements && !s->ended; i++) {
            const redisReply *e = got->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[2]->type != REDIS_REPLY_INTEGER)
                continue;
            s->m->reclaimed++;
            deliver(s, e, (uint64_t)e->element[2]->integer);
        }
    }
    step(s);
    release(s);
}

/* Runs the claim script for the free slots: it moves the group's
 * entries delivered max_deliveries times and idle claim_idle_ms to the
 * dead-letter stream, then claims up to the free slots' worth of the
 * other idle ones for this consumer. */
static void claim(struct stream_sub *s)
{
    char idle[24], n[24], maxd[24];
    int il = snprintf(idle, sizeof(idle), "%llu", (unsigned long long)s->claim_idle_ms);
    int nl = snprintf(n, sizeof(n), "%zu", (size_t)s->prefetch - s->nheld);
    int ml = snprintf(maxd, sizeof(maxd), "%llu", (unsigned long long)s->max_deliveries);
    const char *argv[8] = {s->stream, s->dead, s->group, s->consumer, idle, n, maxd, CLAIM_SCAN};
    size_t lens[8] = {s->stream_len, s->dead_len, s->group_len, s->consumer_len, (size_t)il, (size_t)nl,
                      (size_t)ml, strlen(CLAIM_SCAN)};
    if (evalsha_call(s->m->rb, &s->m->claim, 2, 6, argv, lens, on_claim, s) != 0) {
        s->last_claim = uv_now(loop_of(s));
        s->wait_tick = true;
        return;
    }
    s->claiming = true;
    s->refs++;
}

/* What to do next: one read or one claim at a time, so that together
 * they never push more than prefetch entries unacked. */
static void step(struct stream_sub *s)
{
    if (s->ended || !s->started || s->reading || s->claiming || s->wait_tick)
        return;
    if (uv_now(loop_of(s)) - s->last_claim >= s->period_ms) {
        claim(s);
        return;
    }
    if (s->nheld < s->prefetch)
        read_more(s, s->prefetch - s->nheld, true);
}

static void on_tick(uv_timer_t *t)
{
    struct stream_sub *s = container_of(t, struct stream_sub, timer);
    s->wait_tick = false;
    step(s);
}

static char *copy_into(char **p, const char *src, size_t n)
{
    char *at = *p;
    memcpy(at, src, n);
    at[n] = '\0';
    *p += n + 1;
    return at;
}

int stream_sub_start(struct stream_subs *m, struct request *r, const struct stream_sub_args *a)
{
    struct rds_conn *c = dedpool_take_for(m->rb, m->rb->cluster ? rds_slots_of(a->stream, a->stream_len) : -1);
    if (!c)
        return FE_OVERLOADED;
    struct stream_sub *s = xcalloc(1, sizeof(*s));
    s->m = m;
    s->client = r->client;
    s->id = r->id;
    s->conn = c;
    s->prefetch = a->prefetch;
    s->claim_idle_ms = a->claim_idle_ms;
    s->max_deliveries = a->max_deliveries;
    s->period_ms = a->claim_idle_ms / 2 ? a->claim_idle_ms / 2 : 1;
    s->block_ms = s->period_ms / 2 < 10 ? 10 : s->period_ms / 2 > 5000 ? 5000 : s->period_ms / 2;
    s->held = xcalloc(a->prefetch, sizeof(*s->held));
    char *p = xmalloc(a->stream_len + a->group_len + a->consumer_len + a->dead_len + 4);
    s->stream = copy_into(&p, a->stream, a->stream_len);
    s->group = copy_into(&p, a->group, a->group_len);
    s->consumer = copy_into(&p, a->consumer, a->consumer_len);
    s->dead = copy_into(&p, a->dead, a->dead_len);
    s->stream_len = a->stream_len;
    s->group_len = a->group_len;
    s->consumer_len = a->consumer_len;
    s->dead_len = a->dead_len;
    uv_timer_init(loop_of(s), &s->timer);
    s->refs = 2; /* open, and the timer */
    dlist_push_tail(&m->subs, &s->node);
    m->nsubs++;
    read_more(s, s->prefetch, false);
    if (!s->reading) {
        stream_sub_end(s);
        return FE_UNAVAILABLE;
    }
    s->job.cancel = on_start_cancel;
    rds_backend_hold(r, &s->job);
    return 0;
}

struct stream_sub *stream_sub_find(struct stream_subs *m, const struct client *c, uint64_t sub)
{
    struct dlist *it;
    dlist_foreach(it, &m->subs)
    {
        struct stream_sub *s = container_of(it, struct stream_sub, node);
        if (!s->ended && s->started && s->client == c && s->id == sub)
            return s;
    }
    return NULL;
}

static void ack_cancel(struct rds_job *j)
{
    (void)j; /* the reply frees it */
}

static void on_ack(void *arg, const redisReply *reply)
{
    struct ackjob *a = arg;
    struct stream_sub *s = a->s;
    if (reply) {
        /* Acked, or refused for good (the group is gone): either way the
         * entries no longer hold slots. */
        for (int i = 0; i < a->n; i++)
            held_drop(s, a->ids[i].id, a->ids[i].len);
        if (reply->type == REDIS_REPLY_INTEGER)
            s->m->acked += (uint64_t)reply->integer;
    }
    if (a->job.r) {
        if (reply && reply->type == REDIS_REPLY_INTEGER) {
            size_t at;
            struct cbuf *o = request_result_begin(a->job.r, &at);
            cbuf_map(o, 1);
            cbuf_str(o, "acked");
            cbuf_uint(o, (uint64_t)reply->integer);
            request_result_end(a->job.r, at);
        } else
            rds_backend_fail_reply(a->job.r, reply);
    }
    free(a);
    step(s);
    release(s);
}

int stream_sub_ack(struct stream_sub *s, struct request *r, int n, const char *const *ids, const size_t *lens,
                   char *msg, size_t msglen)
{
    for (int i = 0; i < n; i++)
        if (lens[i] >= ID_MAX || !held_find(s, ids[i], lens[i])) {
            snprintf(msg, msglen, "entry '%.*s' is not outstanding on subscription %llu (never delivered on it, "
                     "acked already, or moved to the dead-letter stream)",
                     (int)(lens[i] > 60 ? 60 : lens[i]), ids[i], (unsigned long long)s->id);
            return FE_BAD_REQUEST;
        }
    struct ackjob *a = xcalloc(1, sizeof(*a) + (size_t)n * sizeof(struct held));
    a->s = s;
    a->n = n;
    const char **argv = xmalloc((size_t)(n + 3) * sizeof(*argv));
    size_t *alens = xmalloc((size_t)(n + 3) * sizeof(*alens));
    argv[0] = "XACK";
    alens[0] = 4;
    argv[1] = s->stream;
    alens[1] = s->stream_len;
    argv[2] = s->group;
    alens[2] = s->group_len;
    for (int i = 0; i < n; i++) {
        a->ids[i].len = (uint8_t)lens[i];
        memcpy(a->ids[i].id, ids[i], lens[i]);
        argv[3 + i] = ids[i];
        alens[3 + i] = lens[i];
    }
    int rc = rds_backend_call(s->m->rb, s->stream, s->stream_len, n + 3, argv, alens, on_ack, a);
    free(argv);
    free(alens);
    if (rc) {
        free(a);
        return rc;
    }
    s->refs++;
    a->job.cancel = ack_cancel;
    rds_backend_hold(r, &a->job);
    return 0;
}

void stream_sub_end_all(struct stream_subs *m, const struct client *c)
{
    struct dlist *it, *tmp;
    /* Ending drops no node (the timer's close does, later), so the walk
     * is safe; the safe form guards against a release that frees. */
    dlist_foreach_safe(it, tmp, &m->subs)
    {
        struct stream_sub *s = container_of(it, struct stream_sub, node);
        if (!s->ended && (!c || s->client == c))
            stream_sub_end(s);
    }
}

void stream_sub_free_all(struct stream_subs *m)
{
    struct dlist *it, *tmp;
    dlist_foreach_safe(it, tmp, &m->subs)
    {
        struct stream_sub *s = container_of(it, struct stream_sub, node);
        dlist_remove(&s->node);
        free(s->stream);
        free(s->held);
        free(s);
    }
}

uint64_t stream_sub_unacked(struct stream_subs *m)
{
    uint64_t n = 0;
    struct dlist *it;
    dlist_foreach(it, &m->subs)
    {
        struct stream_sub *s = container_of(it, struct stream_sub, node);
        if (!s->ended)
            n += s->nheld;
    }
    return n;
}
