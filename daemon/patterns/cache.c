/* cache.c: cache-aside without stampedes (cache.h): leases, waiters,
 * fills and invalidations. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <uv.h>

#include "cache.h"
#include "cachelease.h"
#include "cachetab.h"
#include "cbuf.h"
#include "errors.h"
#include "list.h"
#include "log.h"
#include "pargs.h"
#include "rds_backend.h"
#include "request.h"

#define TOKEN_MAX CACHELEASE_TOKEN_MAX
#define LEASE_MS_DEFAULT 5000
#define LEASE_MS_MAX 3600000
#define TTL_MS_MAX (1ull << 42)

struct cache {
    struct rds_backend *rb;    /* refers */
    uv_timer_t timer;          /* the retries of sleeping keys */
    bool timer_open;
    struct cachetab keys;      /* owns the table; entries are struct ckey */
    struct dlist sleeping;     /* struct ckey waiting for their due time */
    /* Bumped by each fill and invalidation landing here: a waiter whose
     * script ran before one of them, and whose reply came after, retries
     * at once rather than wait for a wake-up that already passed. */
    uint64_t epoch;
    char prefix[17];           /* this ferryd's tokens start with it */
    uint64_t seq;              /* tokens' counter */
    uint64_t rng;              /* xorshift state, for the TTLs' jitter */
    uint64_t hits, leases, waited, woken, retries, taken_over, fills, not_held, invalidations,
        released, nwaiting;
};

/* A key with requests waiting for its value. */
struct ckey {
    struct cachetab_node node; /* in keys */
    struct cache *cc;          /* refers */
    struct dlist waiters;      /* refers: struct cwait, oldest first */
    struct dlist sleep_node;   /* in sleeping until due */
    uint64_t due;              /* uv_now() ms of its next retry */
    bool busy;                 /* a retry in flight, or its waiters being answered: not freed */
    bool again;                /* an invalidation landed during the retry: retry once more */
    char token[TOKEN_MAX];     /* the retry's token */
    size_t keylen;
    char key[];                /* owns */
};

/* A cache.get request. */
struct cwait {
    struct rds_job job;        /* job.r NULL once the request went away */
    struct cache *cc;          /* refers */
    struct dlist node;         /* in k->waiters while waiting */
    struct ckey *k;            /* refers: the key it waits on, or NULL */
    uint64_t lease_ms;
    uint64_t epoch;            /* cc->epoch when its script was sent */
    bool wait;
    bool peek;                 /* a plain GET only: no lease, no waiting */
    bool inflight;             /* its own GET's or script's reply is awaited */
    char token[TOKEN_MAX];
    size_t keylen;
    char key[];                /* owns */
};

/* A cache.fill or cache.invalidate request. */
struct cjob {
    struct rds_job job;
    struct cache *cc;          /* refers */
    const uint8_t *value;      /* refers into the request's frame: valid while job.r */
    size_t vlen;
    uint64_t ttl_ms;           /* with its jitter */
    size_t keylen;
    char key[];                /* owns */
};

static void retry(struct ckey *k);
static void on_timer(uv_timer_t *t);

static void new_token(struct cache *cc, char *out)
{
    snprintf(out, TOKEN_MAX, "%s.%" PRIx64, cc->prefix, ++cc->seq);
}

static bool token_is_ours(const struct cache *cc, const char *t, size_t n)
{
    return n > 16 && !memcmp(t, cc->prefix, 16) && t[16] == '.';
}

static uint64_t next_rand(struct cache *cc)
{
    uint64_t x = cc->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return cc->rng = x;
}

/* ---- answers ---- */

static void answer_hit(struct request *r, const char *v, size_t n)
{
    size_t at;
    struct cbuf *o = request_result_begin(r, &at);
    cbuf_map(o, 2);
    cbuf_str(o, "hit");
    cbuf_bool(o, true);
    cbuf_str(o, "value");
    cbuf_bytes(o, v, n);
    request_result_end(r, at);
}

static void answer_miss(struct request *r, const char *token)
{
    size_t at;
    struct cbuf *o = request_result_begin(r, &at);
    cbuf_map(o, token ? 2 : 1);
    cbuf_str(o, "hit");
    cbuf_bool(o, false);
    if (token) {
        cbuf_str(o, "lease");
        cbuf_str(o, token);
    }
    request_result_end(r, at);
}

/* ---- keys with waiters ---- */

static void arm(struct cache *cc)
{
    if (!cc->timer_open)
        return;
    struct dlist *p;
    uint64_t due = UINT64_MAX;
    dlist_foreach(p, &cc->sleeping) {
        struct ckey *k = container_of(p, struct ckey, sleep_node);
        if (k->due < due)
            due = k->due;
    }
    if (due == UINT64_MAX) {
        uv_timer_stop(&cc->timer);
        return;
    }
    uint64_t now = uv_now(cc->rb->t.loop);
    uv_timer_start(&cc->timer, on_timer, due > now ? due - now : 0, 0);
}

/* Frees k once nothing waits on it and nothing refers to it. */
static void ckey_drop(struct ckey *k)
{
    if (k->busy || !dlist_empty(&k->waiters))
        return;
    dlist_remove(&k->sleep_node);
    cachetab_remove(&k->cc->keys, &k->node);
    free(k);
}

static struct ckey *ckey_get(struct cache *cc, const char *key, size_t keylen)
{
    struct cachetab_node *n = cachetab_find(&cc->keys, key, keylen);
    if (n)
        return container_of(n, struct ckey, node);
    struct ckey *k = xcalloc(1, sizeof(*k) + keylen + 1);
    memcpy(k->key, key, keylen);
    k->keylen = keylen;
    k->node.key = k->key;
    k->node.keylen = keylen;
    k->cc = cc;
    dlist_init(&k->waiters);
    dlist_init(&k->sleep_node);
    cachetab_add(&cc->keys, &k->node);
    return k;
}

/* Retries k after delay ms (sooner if it was already due sooner). */
static void schedule(struct ckey *k, uint64_t delay)
{
    struct cache *cc = k->cc;
    uint64_t due = uv_now(cc->rb->t.loop) + delay;
    if (dlist_linked(&k->sleep_node) && k->due <= due)
        return;
    k->due = due;
    if (!dlist_linked(&k->sleep_node))
        dlist_push_tail(&cc->sleeping, &k->sleep_node);
    arm(cc);
}

/* When to look again while the lease holder's token is t, pttl ms left:
 * at its expiry when it is ours (a fill or invalidation here wakes the
 * waiters before); else by polling, since another ferryd's fill wakes
 * nobody here. */
static uint64_t delay_for(struct cache *cc, const char *t, size_t n, long long pttl)
{
    if (pttl < 0)
        return CACHE_POLL_MS; /* no TTL (set by hand) or gone: keep looking */
    if (token_is_ours(cc, t, n))
        return (uint64_t)pttl + 1;
    return (uint64_t)pttl + 1 < CACHE_POLL_MS ? (uint64_t)pttl + 1 : CACHE_POLL_MS;
}

static struct cwait *first_waiter(struct ckey *k)
{
    return container_of(k->waiters.next, struct cwait, node);
}

static void waiter_free(struct cwait *w)
{
    if (w->k) {
        dlist_remove(&w->node);
        w->cc->nwaiting--;
        w->k = NULL;
    }
    free(w);
}

/* Answers every waiter of k: with the value v (n bytes), or with the
 * error reply (reply; NULL: the connection failed), or with code. Each is
 * taken off the list before it is answered: answering one may close a
 * client, which cancels others. */
static void answer_all(struct ckey *k, const char *v, size_t n, const redisReply *reply, int code)
{
    bool was = k->busy; /* a retry may be in flight, whose reply refers to k */
    k->busy = true;
    while (!dlist_empty(&k->waiters)) {
        struct cwait *w = first_waiter(k);
        struct request *r = w->job.r;
        waiter_free(w);
        if (v)
            answer_hit(r, v, n);
        else if (code)
            request_fail(r, code, NULL);
        else
            rds_backend_fail_reply(r, reply);
    }
    k->busy = was;
}

/* The shared retry's reply. */
static void on_retry(void *arg, const redisReply *reply)
{
    struct ckey *k = arg;
    struct cache *cc = k->cc;
    k->busy = false;
    bool shaped = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
                  reply->element[0]->type == REDIS_REPLY_INTEGER;
    long long what = shaped ? reply->element[0]->integer : -1;
    if (dlist_empty(&k->waiters)) {
        if (what == 2)
            cc->released += cachelease_release(cc->rb, k->key, k->keylen, k->token) == 0;
        ckey_drop(k);
        return;
    }
    if (what == 1 && reply->elements == 2) {
        const redisReply *v = reply->element[1];
        answer_all(k, v->str, v->len, NULL, 0);
    } else if (what == 2) {
        /* The lease expired or was invalidated: the one waiting longest
         * takes it over; the others wait on (for a fill here). */
        struct cwait *w = first_waiter(k);
        struct request *r = w->job.r;
        uint64_t lease_ms = w->lease_ms;
        cc->leases++;
        cc->taken_over++;
        k->busy = true;
        waiter_free(w);
        answer_miss(r, k->token);
        k->busy = false;
        if (!dlist_empty(&k->waiters))
            schedule(k, lease_ms + 1);
    } else if (what == 0 && reply->elements == 3 && reply->element[1]->type == REDIS_REPLY_STRING &&
               reply->element[2]->type == REDIS_REPLY_INTEGER) {
        if (k->again) {
            k->again = false;
            retry(k);
            return;
        }
        schedule(k, delay_for(cc, reply->element[1]->str, reply->element[1]->len, reply->element[2]->integer));
    } else {
        bool err = !reply || reply->type == REDIS_REPLY_ERROR;
        answer_all(k, NULL, 0, reply, err ? 0 : FE_INTERNAL);
    }
    ckey_drop(k);
}

/* Runs the script again for all of k's waiters at once: a lease it takes
 * goes to the one waiting longest. */
static void retry(struct ckey *k)
{
    struct cache *cc = k->cc;
    dlist_remove(&k->sleep_node);
    if (dlist_empty(&k->waiters)) {
        ckey_drop(k);
        return;
    }
    new_token(cc, k->token);
    char ms[24];
    int n = snprintf(ms, sizeof(ms), "%" PRIu64, first_waiter(k)->lease_ms);
    const char *args[2] = {k->token, ms};
    size_t alens[2] = {strlen(k->token), (size_t)n};
    k->again = false;
    int rc = cachelease_run(cc->rb, CACHELEASE_GET, k->key, k->keylen, 2, args, alens, on_retry, k);
    if (rc) {
        answer_all(k, NULL, 0, NULL, rc);
        ckey_drop(k);
        return;
    }
    k->busy = true;
    cc->retries++;
}

static void on_timer(uv_timer_t *t)
{
    struct cache *cc = container_of(t, struct cache, timer);
    uint64_t now = uv_now(cc->rb->t.loop);
    /* The due keys move to a list of their own first: retrying one may
     * answer requests, whose clients' closing frees other keys. */
    struct dlist due;
    dlist_init(&due);
    struct dlist *p, *tmp;
    dlist_foreach_safe(p, tmp, &cc->sleeping) {
        struct ckey *k = container_of(p, struct ckey, sleep_node);
        if (k->due <= now) {
            dlist_remove(p);
            dlist_push_tail(&due, p);
        }
    }
    while (!dlist_empty(&due))
        retry(container_of(due.next, struct ckey, sleep_node));
    arm(cc);
}

/* Wakes k's waiters after a fill here: with the value when it is known,
 * else by a retry. */
static void wake(struct cache *cc, const char *key, size_t keylen, const uint8_t *v, size_t n)
{
    cc->epoch++;
    struct cachetab_node *node = cachetab_find(&cc->keys, key, keylen);
    if (!node)
        return;
    struct ckey *k = container_of(node, struct ckey, node);
    if (v) {
        struct dlist *p;
        dlist_foreach(p, &k->waiters)
            cc->woken++;
        /* A copy: v is in the fill's request frame, which answering a
         * waiter may free (a client waiting on its own fill, cut off for
         * its output). */
        char *copy = xmalloc(n ? n : 1);
        memcpy(copy, v, n);
        answer_all(k, copy, n, NULL, 0);
        free(copy);
        ckey_drop(k);
    } else if (k->busy) {
        k->again = true;
    } else {
        retry(k);
    }
}

/* ---- cache.get ---- */

static void get_cancel(struct rds_job *j)
{
    struct cwait *w = container_of(j, struct cwait, job);
    if (w->inflight)
        return; /* the awaited reply's callback frees it */
    struct ckey *k = w->k;
    waiter_free(w);
    if (k)
        ckey_drop(k);
}

static void on_get(void *arg, const redisReply *reply)
{
    struct cwait *w = arg;
    struct cache *cc = w->cc;
    struct request *r = w->job.r;
    w->inflight = false;
    bool shaped = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
                  reply->element[0]->type == REDIS_REPLY_INTEGER;
    long long what = shaped ? reply->element[0]->integer : -1;
    if (!r) {
        if (what == 2)
            cc->released += cachelease_release(cc->rb, w->key, w->keylen, w->token) == 0;
        free(w);
        return;
    }
    if (what == 1 && reply->elements == 2) {
        cc->hits++;
        answer_hit(r, reply->element[1]->str, reply->element[1]->len);
    } else if (what == 2) {
        cc->leases++;
        answer_miss(r, w->token);
    } else if (what == 0 && reply->elements == 3 && reply->element[1]->type == REDIS_REPLY_STRING &&
               reply->element[2]->type == REDIS_REPLY_INTEGER) {
        if (!w->wait) {
            answer_miss(r, NULL);
        } else {
            struct ckey *k = ckey_get(cc, w->key, w->keylen);
            dlist_push_tail(&k->waiters, &w->node);
            w->k = k;
            cc->nwaiting++;
            cc->waited++;
            if (!k->busy) {
                /* A fill or invalidation that landed here since the script
                 * ran has woken the waiters already: look again now. */
                uint64_t d = w->epoch != cc->epoch ? 0
                                                   : delay_for(cc, reply->element[1]->str, reply->element[1]->len,
                                                               reply->element[2]->integer);
                schedule(k, d);
            }
            return;
        }
    } else if (!reply || reply->type == REDIS_REPLY_ERROR) {
        rds_backend_fail_reply(r, reply);
    } else {
        request_fail(r, FE_INTERNAL, "the cache script answered in an unexpected shape");
    }
    free(w);
}

/* Sends the lease script for w, after a miss. Returns 0 or a negative fe code. */
static int send_script(struct cwait *w)
{
    struct cache *cc = w->cc;
    char ms[24];
    int n = snprintf(ms, sizeof(ms), "%" PRIu64, w->lease_ms);
    new_token(cc, w->token);
    const char *args[2] = {w->token, ms};
    size_t alens[2] = {strlen(w->token), (size_t)n};
    w->epoch = cc->epoch;
    return cachelease_run(cc->rb, CACHELEASE_GET, w->key, w->keylen, 2, args, alens, on_get, w);
}

/* The plain GET that every cache.get starts with. Why not the script at
 * once: a hit is what a cache serves most, and a script run costs Redis
 * several times a GET (Lua's call and its table), which would make a hit
 * through cache.get far slower than a GET through the redis op. Only a
 * miss pays for the script, which GETs again (the value may have been
 * filled since) and takes the lease atomically. */
static void on_first(void *arg, const redisReply *reply)
{
    struct cwait *w = arg;
    struct request *r = w->job.r;
    if (r && reply && reply->type == REDIS_REPLY_STRING) {
        w->cc->hits++;
        answer_hit(r, reply->str, reply->len);
    } else if (r && reply && reply->type == REDIS_REPLY_NIL && w->peek) {
        answer_miss(r, NULL);
    } else if (r && reply && reply->type == REDIS_REPLY_NIL) {
        int rc = send_script(w);
        if (rc == 0)
            return; /* still in flight: on_get takes it from here */
        request_fail(r, rc, NULL);
    } else if (r) {
        rds_backend_fail_reply(r, reply);
    }
    free(w);
}

static int read_key(struct parg *a, char *msg, size_t len)
{
    if (a->n == 0) {
        snprintf(msg, len, "key must not be empty");
        return FE_BAD_REQUEST;
    }
    if (!cachelease_key_ok((const char *)a->p, a->n)) {
        snprintf(msg, len,
                 "a key with '}' must have a hash tag ({...}): its lease key could not share its cluster slot");
        return FE_BAD_REQUEST;
    }
    return 0;
}

/* Checks the key against the client's policy as GET and SET of it would
 * be (the ops read and write only the key and its lease). */
static int check_key(struct rds_backend *rb, struct request *r, const char *cmd, struct parg *key, char *msg,
                     size_t len)
{
    const char *argv[2] = {cmd, (const char *)key->p};
    size_t lens[2] = {strlen(cmd), key->n};
    return rds_backend_check(rb, r, false, 2, argv, lens, msg, len);
}

static int cache_get(struct rds_backend *rb, struct request *r)
{
    struct cache *cc = rds_backend_state(rb, &cache_module);
    struct parg a[] = {
        {.name = "key", .type = PA_STR, .required = true},
        {.name = "lease_ms", .type = PA_UINT, .required = false},
        {.name = "wait", .type = PA_BOOL, .required = false},
        {.name = "peek", .type = PA_BOOL, .required = false},
    };
    char msg[200];
    int rc;
    if (pargs_read(r->v.args, r->v.args_len, a, 4, msg, sizeof(msg)) || (rc = read_key(&a[0], msg, sizeof(msg)))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    if (a[1].present && (a[1].u < 1 || a[1].u > LEASE_MS_MAX)) {
        snprintf(msg, sizeof(msg), "lease_ms must be 1 to %d", LEASE_MS_MAX);
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    if ((rc = check_key(rb, r, "GET", &a[0], msg, sizeof(msg)))) {
        request_fail(r, rc, msg);
        return 0;
    }
    struct cwait *w = xcalloc(1, sizeof(*w) + a[0].n + 1);
    w->cc = cc;
    w->job.cancel = get_cancel;
    dlist_init(&w->node);
    memcpy(w->key, a[0].p, a[0].n);
    w->keylen = a[0].n;
    w->lease_ms = a[1].present ? a[1].u : LEASE_MS_DEFAULT;
    w->wait = a[2].present ? a[2].b : true;
    w->peek = a[3].present && a[3].b;
    const char *argv[2] = {"GET", w->key};
    size_t lens[2] = {3, w->keylen};
    rc = rds_backend_call(rb, w->key, w->keylen, 2, argv, lens, on_first, w);
    if (rc) {
        free(w);
        return rc;
    }
    w->inflight = true;
    rds_backend_hold(r, &w->job);
    return 0;
}

/* ---- cache.fill ---- */

static void job_cancel(struct rds_job *j)
{
    (void)j; /* the reply frees it; job.r is NULL from now on */
}

static void on_fill(void *arg, const redisReply *reply)
{
    struct cjob *f = arg;
    struct cache *cc = f->cc;
    struct request *r = f->job.r;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        cc->fills++;
        /* The value is in the request's frame while it lives; after, the
         * waiters read it back from Redis. */
        wake(cc, f->key, f->keylen, r ? f->value : NULL, f->vlen);
        r = f->job.r; /* waking may have cancelled it */
        if (r) {
            size_t at;
            struct cbuf *o = request_result_begin(r, &at);
            cbuf_map(o, 1);
            cbuf_str(o, "ttl_ms");
            cbuf_uint(o, f->ttl_ms);
            request_result_end(r, at);
        }
    } else if (reply && reply->type == REDIS_REPLY_INTEGER) {
        cc->not_held++;
        if (r)
            request_fail(r, FE_NOT_HELD,
                         "the lease expired, was invalidated or passed to another caller: the value was not stored");
    } else if (r) {
        rds_backend_fail_reply(r, reply);
    }
    free(f);
}

static struct cjob *new_job(struct cache *cc, const struct parg *key)
{
    struct cjob *f = xcalloc(1, sizeof(*f) + key->n + 1);
    f->cc = cc;
    f->job.cancel = job_cancel;
    memcpy(f->key, key->p, key->n);
    f->keylen = key->n;
    return f;
}

static int cache_fill(struct rds_backend *rb, struct request *r)
{
    struct cache *cc = rds_backend_state(rb, &cache_module);
    struct parg a[] = {
        {.name = "key", .type = PA_STR, .required = true},
        {.name = "lease", .type = PA_STR, .required = false},
        {.name = "value", .type = PA_STR, .required = true},
        {.name = "ttl_ms", .type = PA_UINT, .required = true},
        {.name = "jitter_ms", .type = PA_UINT, .required = false},
    };
    char msg[200];
    int rc;
    if (pargs_read(r->v.args, r->v.args_len, a, 5, msg, sizeof(msg)) || (rc = read_key(&a[0], msg, sizeof(msg)))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    if (a[3].u < 1 || a[3].u > TTL_MS_MAX || (a[4].present && a[4].u > TTL_MS_MAX)) {
        snprintf(msg, sizeof(msg), "ttl_ms must be 1 to %llu, and jitter_ms at most that",
                 (unsigned long long)TTL_MS_MAX);
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    if (a[1].present && (a[1].n == 0 || a[1].n >= TOKEN_MAX)) {
        request_fail(r, FE_BAD_REQUEST, "lease is not a token cache.get gave out");
        return 0;
    }
    if ((rc = check_key(rb, r, "SET", &a[0], msg, sizeof(msg)))) {
        request_fail(r, rc, msg);
        return 0;
    }
    /* The default jitter, a tenth of the TTL, spreads the expiry of keys
     * filled together (after a deploy, a cold start) over time. */
    uint64_t jitter = a[4].present ? a[4].u : a[3].u / 10;
    struct cjob *f = new_job(cc, &a[0]);
    f->value = a[2].p;
    f->vlen = a[2].n;
    f->ttl_ms = a[3].u + (jitter ? next_rand(cc) % (jitter + 1) : 0);
    char ms[24];
    int n = snprintf(ms, sizeof(ms), "%" PRIu64, f->ttl_ms);
    const char *args[3] = {a[1].present ? (const char *)a[1].p : "", (const char *)a[2].p, ms};
    size_t alens[3] = {a[1].present ? a[1].n : 0, a[2].n, (size_t)n};
    rc = cachelease_run(cc->rb, CACHELEASE_FILL, f->key, f->keylen, 3, args, alens, on_fill, f);
    if (rc) {
        free(f);
        return rc;
    }
    rds_backend_hold(r, &f->job);
    return 0;
}

/* ---- cache.invalidate ---- */

static void on_invalidate(void *arg, const redisReply *reply)
{
    struct cjob *f = arg;
    struct cache *cc = f->cc;
    struct request *r = f->job.r;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER) {
        cc->invalidations++;
        wake(cc, f->key, f->keylen, NULL, 0);
        if (r) {
            size_t at;
            struct cbuf *o = request_result_begin(r, &at);
            cbuf_map(o, 1);
            cbuf_str(o, "deleted");
            cbuf_bool(o, reply->element[0]->integer > 0);
            request_result_end(r, at);
        }
    } else if (r) {
        rds_backend_fail_reply(r, reply);
    }
    free(f);
}

static int cache_invalidate(struct rds_backend *rb, struct request *r)
{
    struct cache *cc = rds_backend_state(rb, &cache_module);
    struct parg a[] = {{.name = "key", .type = PA_STR, .required = true}};
    char msg[200];
    int rc;
    if (pargs_read(r->v.args, r->v.args_len, a, 1, msg, sizeof(msg)) || (rc = read_key(&a[0], msg, sizeof(msg)))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    if ((rc = check_key(rb, r, "DEL", &a[0], msg, sizeof(msg)))) {
        request_fail(r, rc, msg);
        return 0;
    }
    struct cjob *f = new_job(cc, &a[0]);
    rc = cachelease_run(cc->rb, CACHELEASE_INVALIDATE, f->key, f->keylen, 0, NULL, NULL, on_invalidate, f);
    if (rc) {
        free(f);
        return rc;
    }
    rds_backend_hold(r, &f->job);
    return 0;
}

/* ---- the module ---- */

static const struct rds_opdef cache_ops[] = {
    {"cache.get", cache_get},
    {"cache.fill", cache_fill},
    {"cache.invalidate", cache_invalidate},
};

static int ca_create(struct rds_backend *rb, void **state, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct cache *cc = xcalloc(1, sizeof(*cc));
    cc->rb = rb;
    cachetab_init(&cc->keys);
    dlist_init(&cc->sleeping);
    uint8_t seed[16];
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        /* No entropy yet (early boot): the time and pid tell ferryds apart well enough. */
        uint64_t t = uv_hrtime() ^ ((uint64_t)getpid() << 32);
        memcpy(seed, &t, 8);
        memcpy(seed + 8, &t, 8);
    }
    for (int i = 0; i < 8; i++)
        snprintf(cc->prefix + 2 * i, 3, "%02x", seed[i]);
    memcpy(&cc->rng, seed + 8, 8);
    cc->rng |= 1;
    cachelease_init();
    *state = cc;
    return 0;
}

static void ca_start(struct rds_backend *rb, void *state)
{
    struct cache *cc = state;
    uv_timer_init(rb->t.loop, &cc->timer);
    cc->timer_open = true;
}

static void ca_stats(struct rds_backend *rb, void *state, struct cbuf *o)
{
    (void)rb;
    struct cache *cc = state;
    cbuf_map(o, 12);
    cbuf_str(o, "hits");
    cbuf_uint(o, cc->hits);
    cbuf_str(o, "leases");
    cbuf_uint(o, cc->leases);
    cbuf_str(o, "taken_over");
    cbuf_uint(o, cc->taken_over);
    cbuf_str(o, "waited");
    cbuf_uint(o, cc->waited);
    cbuf_str(o, "waiting");
    cbuf_uint(o, cc->nwaiting);
    cbuf_str(o, "keys_waited_on");
    cbuf_uint(o, cc->keys.n);
    cbuf_str(o, "woken_by_fill");
    cbuf_uint(o, cc->woken);
    cbuf_str(o, "retries");
    cbuf_uint(o, cc->retries);
    cbuf_str(o, "fills");
    cbuf_uint(o, cc->fills);
    cbuf_str(o, "fills_not_held");
    cbuf_uint(o, cc->not_held);
    cbuf_str(o, "invalidations");
    cbuf_uint(o, cc->invalidations);
    cbuf_str(o, "leases_released");
    cbuf_uint(o, cc->released);
}

static void ca_close(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct cache *cc = state;
    if (cc->timer_open) {
        cc->timer_open = false;
        uv_close((uv_handle_t *)&cc->timer, NULL);
    }
}

/* Every request is answered and every call has landed (the connections
 * failed them as they stopped), so no key is left. */
static void ca_destroy(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct cache *cc = state;
    cachetab_free(&cc->keys);
    free(cc);
}

const struct rds_module cache_module = {
    .name = "cache",
    .ops = cache_ops,
    .nops = sizeof(cache_ops) / sizeof(cache_ops[0]),
    .create = ca_create,
    .start = ca_start,
    .stats = ca_stats,
    .close = ca_close,
    .destroy = ca_destroy,
};
