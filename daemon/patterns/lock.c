/* lock.c: distributed locks on one Redis (lock.acquire, lock.release,
 * lock.extend), with fencing numbers, and released at once when their
 * holder's connection drops.
 *
 * Keys: the lock NAME is the key "lock:{NAME}" (its value the holder's
 * token, its TTL the lock's) and its fencing counter "lock:{NAME}:fence"
 * (no TTL: it must never go back). The hash tag {NAME} puts both in one
 * Redis Cluster slot, which a script touching both requires; so NAME may
 * not contain '}'.
 *
 *   lock.acquire ──> EVALSHA acquire (SET NX PX + INCR: one round trip)
 *        │ taken: record (client, token) in holds ──> {token, fence, ttl_ms}
 *        │ busy, wait left: timer (backoff with jitter, or woken at once
 *        │       when this ferryd releases that lock) ──> EVALSHA again
 *        └ busy, no wait left ──> {acquired: false}
 *   lock.release / lock.extend ──> EVALSHA compare-and-delete / -pexpire
 *   client gone ──> token-checked release of each lock it held
 *   acquire cancelled while its script ran ──> released when it answers */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "backoff.h"
#include "cbuf.h"
#include "errors.h"
#include "evalsha.h"
#include "lock.h"
#include "lock_holds.h"
#include "log.h"
#include "pargs.h"
#include "rds_backend.h"
#include "request.h"

#define LOCK_NAME_MAX 512
#define LOCK_TTL_MAX 2147483647ull /* ms, about 24 days */
#define LOCK_RETRY_MIN_MS 5
#define LOCK_RETRY_MAX_MS 250

/* KEYS: lock, fence. ARGV: token, ttl. {1, fence} when taken, else {0,
 * the holder's remaining ms}. */
static struct evalsha_script acquire_script = {
    .body = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
            "  return {1, redis.call('INCR', KEYS[2])}\n"
            "end\n"
            "return {0, redis.call('PTTL', KEYS[1])}\n",
};
/* KEYS: lock. ARGV: token. 1 when released, 0 when not held with it. */
static struct evalsha_script release_script = {
    .body = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
            "  return redis.call('DEL', KEYS[1])\n"
            "end\n"
            "return 0\n",
};
/* KEYS: lock. ARGV: token, ttl. 1 when extended, 0 when not held with it. */
static struct evalsha_script extend_script = {
    .body = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
            "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
            "end\n"
            "return 0\n",
};

struct lock_state {
    struct rds_backend *rb;  /* refers */
    struct lock_holds holds; /* owns */
    struct dlist waiting;    /* acquires between attempts (struct lock_job) */
    uint32_t rng;            /* jitter */
    uint64_t acquired, not_acquired, retries, released, extended, not_held;
    uint64_t dead_released;   /* released because their client went */
    uint64_t orphan_released; /* taken for a request that was gone by then */
};

enum lock_kind { LK_ACQUIRE, LK_RELEASE, LK_EXTEND };

/* One request of a lock op; it may outlive the request (rds_module.h). */
struct lock_job {
    struct rds_job job;      /* job.r: the request, NULL once cancelled */
    struct lock_state *L;    /* refers */
    struct client *client;   /* refers: the request's client, recorded as the holder; NULL: detached */
    enum lock_kind kind;
    bool awaiting;           /* a script's reply is awaited */
    bool timer_open;         /* timer is initialised and not closed */
    uv_timer_t timer;        /* the wait before the next attempt */
    struct dlist wait_node;  /* in L->waiting while the timer runs */
    uint64_t ttl_ms;
    uint64_t give_up;        /* loop time (ms) after which no attempt starts */
    unsigned attempts;
    char token[33];
    size_t keylen;           /* "lock:{NAME}" */
    size_t fencelen;         /* "lock:{NAME}:fence": key holds both */
    char key[];
};

static struct lock_state *state_of(struct rds_backend *rb)
{
    return rds_backend_state(rb, &lock_module);
}

static void on_timer_closed(uv_handle_t *h)
{
    free(container_of((uv_timer_t *)h, struct lock_job, timer));
}

static void job_free(struct lock_job *j)
{
    dlist_remove(&j->wait_node);
    if (j->timer_open) {
        j->timer_open = false;
        uv_close((uv_handle_t *)&j->timer, on_timer_closed);
        return;
    }
    free(j);
}

/* The request went away: free now, or when the awaited reply comes. */
static void job_cancel(struct rds_job *rj)
{
    struct lock_job *j = container_of(rj, struct lock_job, job);
    if (!j->awaiting)
        job_free(j);
}

/* Reads and checks NAME; fills "lock:{NAME}:fence" into the new job. */
static struct lock_job *job_new(struct lock_state *L, struct request *r, enum lock_kind kind,
                                const struct parg *name, char *msg, size_t msglen)
{
    if (name->n == 0 || name->n > LOCK_NAME_MAX) {
        snprintf(msg, msglen, "'name' must be 1 to %d bytes", LOCK_NAME_MAX);
        return NULL;
    }
    if (memchr(name->p, '}', name->n)) {
        snprintf(msg, msglen, "'name' may not contain '}' (it is the key's hash tag)");
        return NULL;
    }
    struct lock_job *j = xcalloc(1, sizeof(*j) + name->n + 16);
    j->L = L;
    j->client = r->client;
    j->kind = kind;
    dlist_init(&j->wait_node);
    /* Copied, not printed: a name may hold any byte, NUL included. */
    memcpy(j->key, "lock:{", 6);
    memcpy(j->key + 6, name->p, name->n);
    j->keylen = 6 + name->n + 1;
    memcpy(j->key + j->keylen - 1, "}:fence", 8);
    j->fencelen = j->keylen + 6;
    return j;
}

/* The keys a lock op touches, under the client's access policy: as the
 * SET and INCR the script does. */
static int check_keys(struct rds_backend *rb, struct request *r, const struct lock_job *j, bool fence,
                      char *msg, size_t msglen)
{
    const char *set[3] = {"SET", j->key, "x"};
    size_t setl[3] = {3, j->keylen, 1};
    int rc = rds_backend_check(rb, r, false, 3, set, setl, msg, msglen);
    if (rc || !fence)
        return rc;
    const char *incr[2] = {"INCR", j->key};
    size_t incrl[2] = {4, j->fencelen};
    return rds_backend_check(rb, r, false, 2, incr, incrl, msg, msglen);
}

static void on_timer(uv_timer_t *t);

/* When a lock surely is gone from Redis, for sweeping what its holder
 * never released: its TTL from now, with a second to spare for clocks. */
static uint64_t expiry(struct lock_state *L, uint64_t ttl_ms)
{
    return uv_now(L->rb->t.loop) + ttl_ms + 1000;
}

/* Wakes the acquire of this ferryd that has waited longest for the lock
 * of key: it was just released here, so trying now beats sleeping the
 * backoff out. One, not all: the others would only find it taken again
 * (they keep polling, in case this one fails). */
static void wake_waiters(struct lock_state *L, const char *key, size_t keylen)
{
    struct dlist *pos;
    dlist_foreach(pos, &L->waiting) {
        struct lock_job *w = container_of(pos, struct lock_job, wait_node);
        if (w->keylen == keylen && !memcmp(w->key, key, keylen)) {
            dlist_remove(&w->wait_node);
            uv_timer_start(&w->timer, on_timer, 0, 0);
            return;
        }
    }
}

/* A release ferryd sends on its own (dead holder, orphaned acquire). */
struct quiet_release {
    struct lock_state *L; /* refers */
    size_t keylen;
    char key[];
};

static void on_released_quietly(void *arg, const redisReply *reply)
{
    struct quiet_release *q = arg;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)
        wake_waiters(q->L, q->key, q->keylen);
    free(q);
}

static void release_quietly(struct lock_state *L, const char *key, size_t keylen, const char *token)
{
    struct quiet_release *q = xmalloc(sizeof(*q) + keylen);
    q->L = L;
    q->keylen = keylen;
    memcpy(q->key, key, keylen);
    const char *argv[2] = {key, token};
    size_t lens[2] = {keylen, 32};
    if (evalsha_call(L->rb, &release_script, 1, 1, argv, lens, on_released_quietly, q) != 0) {
        free(q);
        log_warn("redis: cannot release lock %.*s (redis unreachable): it frees itself at its TTL", (int)keylen,
                 key);
    }
}

static int attempt(struct lock_job *j);

static void on_timer(uv_timer_t *t)
{
    struct lock_job *j = container_of(t, struct lock_job, timer);
    dlist_remove(&j->wait_node);
    j->L->retries++;
    int rc = attempt(j);
    if (rc) {
        struct request *r = j->job.r;
        job_free(j);
        request_fail(r, rc, NULL);
    }
}

static void answer_taken(struct lock_job *j, struct request *r, long long fence)
{
    size_t at;
    struct cbuf *o = request_result_begin(r, &at);
    cbuf_map(o, 4);
    cbuf_str(o, "acquired");
    cbuf_bool(o, true);
    cbuf_str(o, "token");
    cbuf_text(o, j->token, 32);
    cbuf_str(o, "fence");
    cbuf_uint(o, (uint64_t)fence);
    cbuf_str(o, "ttl_ms");
    cbuf_uint(o, j->ttl_ms);
    request_result_end(r, at);
}

static void answer_busy(struct request *r)
{
    size_t at;
    struct cbuf *o = request_result_begin(r, &at);
    cbuf_map(o, 1);
    cbuf_str(o, "acquired");
    cbuf_bool(o, false);
    request_result_end(r, at);
}

static void on_acquire(void *arg, const redisReply *reply)
{
    struct lock_job *j = arg;
    struct lock_state *L = j->L;
    struct request *r = j->job.r;
    j->awaiting = false;
    bool shaped = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                  reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[1]->type == REDIS_REPLY_INTEGER;
    bool taken = shaped && reply->element[0]->integer == 1;
    if (!r) {
        /* Nobody will hear of this lock: hand it back at once. */
        if (taken) {
            L->orphan_released++;
            release_quietly(L, j->key, j->keylen, j->token);
        }
        job_free(j);
        return;
    }
    if (!shaped) {
        job_free(j);
        if (reply && reply->type != REDIS_REPLY_ERROR)
            request_fail(r, FE_INTERNAL, "unexpected reply to the lock script");
        else
            rds_backend_fail_reply(r, reply);
        return;
    }
    if (taken) {
        L->acquired++;
        if (j->client)
            lock_holds_add(&L->holds, j->client, j->token, j->key, j->keylen, expiry(L, j->ttl_ms),
                           uv_now(L->rb->t.loop));
        answer_taken(j, r, reply->element[1]->integer);
        job_free(j);
        return;
    }
    uint64_t now = uv_now(L->rb->t.loop);
    if (now < j->give_up) {
        /* Back off, but no later than the holder's TTL runs out, nor past
         * the wait: the last attempt is at give_up. */
        uint64_t d = backoff_ms(&L->rng, ++j->attempts, LOCK_RETRY_MIN_MS, LOCK_RETRY_MAX_MS);
        long long pttl = reply->element[1]->integer;
        if (pttl >= 0 && (uint64_t)pttl + 1 < d)
            d = (uint64_t)pttl + 1;
        if (now + d > j->give_up)
            d = j->give_up - now;
        if (!j->timer_open) {
            uv_timer_init(L->rb->t.loop, &j->timer);
            j->timer_open = true;
        }
        uv_timer_start(&j->timer, on_timer, d, 0);
        dlist_push_tail(&L->waiting, &j->wait_node);
        return;
    }
    L->not_acquired++;
    job_free(j);
    answer_busy(r);
}

static int attempt(struct lock_job *j)
{
    char ttl[24];
    int n = snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)j->ttl_ms);
    const char *argv[4] = {j->key, j->key, j->token, ttl};
    size_t lens[4] = {j->keylen, j->fencelen, 32, (size_t)n};
    int rc = evalsha_call(j->L->rb, &acquire_script, 2, 2, argv, lens, on_acquire, j);
    if (rc == 0)
        j->awaiting = true;
    return rc;
}

/* 128 bits from the kernel's CSPRNG, as 32 hex digits: unguessable, so a
 * client cannot release a lock it was not given. */
static int make_token(char out[33])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof(b)) {
        ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FE_INTERNAL;
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[32] = '\0';
    return 0;
}

static int read_ttl(const struct parg *a, char *msg, size_t msglen)
{
    if (a->u == 0 || a->u > LOCK_TTL_MAX) {
        snprintf(msg, msglen, "'%s' must be 1 to %llu", a->name, LOCK_TTL_MAX);
        return FE_BAD_REQUEST;
    }
    return 0;
}

static int acquire_submit(struct rds_backend *rb, struct request *r)
{
    struct lock_state *L = state_of(rb);
    struct parg a[] = {
        {.name = "name", .type = PA_STR, .required = true},
        {.name = "ttl_ms", .type = PA_UINT, .required = true},
        {.name = "wait_ms", .type = PA_UINT, .required = false},
        {.name = "detach", .type = PA_BOOL, .required = false},
    };
    char msg[200];
    int rc;
    if (pargs_read(r->v.args, r->v.args_len, a, 4, msg, sizeof(msg)) || read_ttl(&a[1], msg, sizeof(msg))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    struct lock_job *j = job_new(L, r, LK_ACQUIRE, &a[0], msg, sizeof(msg));
    if (!j) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    if ((rc = check_keys(rb, r, j, true, msg, sizeof(msg))) != 0) {
        job_free(j);
        request_fail(r, rc, msg);
        return 0;
    }
    if ((rc = make_token(j->token)) != 0) {
        job_free(j);
        return rc;
    }
    j->ttl_ms = a[1].u;
    /* Detached: the lock outlives the connection (a shell script's
     * acquire, then release from another process): not recorded. */
    if (a[3].present && a[3].b)
        j->client = NULL;
    /* The wait ends at wait_ms, or a little before the request's deadline
     * so that the answer is "not acquired" rather than "timeout". */
    uint64_t now = uv_now(rb->t.loop);
    uint64_t wait = a[2].present ? a[2].u : 0;
    j->give_up = wait > r->deadline.at - now ? r->deadline.at : now + wait;
    if (j->give_up > now + 10 && j->give_up == r->deadline.at)
        j->give_up -= 10;
    if ((rc = attempt(j)) != 0) {
        job_free(j);
        return rc;
    }
    j->job.cancel = job_cancel;
    rds_backend_hold(r, &j->job);
    return 0;
}

/* Release and extend: 1 from the script when held with the token. */
static void on_checked(void *arg, const redisReply *reply)
{
    struct lock_job *j = arg;
    struct lock_state *L = j->L;
    struct request *r = j->job.r;
    j->awaiting = false;
    bool held = reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
    bool answered = reply && reply->type == REDIS_REPLY_INTEGER;
    if (answered && (j->kind == LK_RELEASE || !held))
        lock_holds_forget(&L->holds, j->token);
    if (held && j->kind == LK_RELEASE) {
        L->released++;
        wake_waiters(L, j->key, j->keylen);
    } else if (held) {
        L->extended++;
        lock_holds_touch(&L->holds, j->token, expiry(L, j->ttl_ms));
    } else if (answered) {
        L->not_held++;
    }
    if (!r) {
        job_free(j);
        return;
    }
    if (!answered) {
        rds_backend_fail_reply(r, reply);
    } else if (!held) {
        request_fail(r, FE_NOT_HELD, "the lock is not held with this token (released, expired or taken since)");
    } else {
        size_t at;
        struct cbuf *o = request_result_begin(r, &at);
        cbuf_map(o, 1);
        if (j->kind == LK_RELEASE) {
            cbuf_str(o, "released");
            cbuf_bool(o, true);
        } else {
            cbuf_str(o, "ttl_ms");
            cbuf_uint(o, j->ttl_ms);
        }
        request_result_end(r, at);
    }
    job_free(j);
}

static bool is_token(const struct parg *a)
{
    if (a->n != 32)
        return false;
    for (size_t i = 0; i < 32; i++)
        if (!((a->p[i] >= '0' && a->p[i] <= '9') || (a->p[i] >= 'a' && a->p[i] <= 'f')))
            return false;
    return true;
}

static int checked_submit(struct rds_backend *rb, struct request *r, enum lock_kind kind)
{
    struct lock_state *L = state_of(rb);
    struct parg a[] = {
        {.name = "name", .type = PA_STR, .required = true},
        {.name = "token", .type = PA_STR, .required = true},
        {.name = "ttl_ms", .type = PA_UINT, .required = kind == LK_EXTEND},
    };
    char msg[200];
    int rc;
    size_t na = kind == LK_EXTEND ? 3 : 2;
    if (pargs_read(r->v.args, r->v.args_len, a, na, msg, sizeof(msg)) ||
        (kind == LK_EXTEND && read_ttl(&a[2], msg, sizeof(msg)))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    if (!is_token(&a[1])) {
        /* No lock has such a token: the answer is known without asking. */
        L->not_held++;
        request_fail(r, FE_NOT_HELD, "the lock is not held with this token (a token is 32 hex digits)");
        return 0;
    }
    struct lock_job *j = job_new(L, r, kind, &a[0], msg, sizeof(msg));
    if (!j) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    if ((rc = check_keys(rb, r, j, false, msg, sizeof(msg))) != 0) {
        job_free(j);
        request_fail(r, rc, msg);
        return 0;
    }
    memcpy(j->token, a[1].p, 32);
    j->ttl_ms = kind == LK_EXTEND ? a[2].u : 0;
    char ttl[24];
    int n = snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)j->ttl_ms);
    const char *argv[3] = {j->key, j->token, ttl};
    size_t lens[3] = {j->keylen, 32, (size_t)n};
    rc = evalsha_call(rb, kind == LK_RELEASE ? &release_script : &extend_script, 1, kind == LK_RELEASE ? 1 : 2,
                      argv, lens, on_checked, j);
    if (rc) {
        job_free(j);
        return rc;
    }
    j->awaiting = true;
    j->job.cancel = job_cancel;
    rds_backend_hold(r, &j->job);
    return 0;
}

static int release_submit(struct rds_backend *rb, struct request *r)
{
    return checked_submit(rb, r, LK_RELEASE);
}

static int extend_submit(struct rds_backend *rb, struct request *r)
{
    return checked_submit(rb, r, LK_EXTEND);
}

static void release_dead(void *arg, const struct lock_hold *e)
{
    struct lock_state *L = arg;
    L->dead_released++;
    release_quietly(L, e->key, e->keylen, e->token);
}

/* The holder is gone: nobody can use, extend or release its locks any
 * more, so they go now rather than at their TTL. The release is token-
 * checked: a lock that expired and was taken by another is left alone. */
static void lk_client_closed(struct rds_backend *rb, void *state, struct client *c)
{
    (void)rb;
    struct lock_state *L = state;
    lock_holds_drop_client(&L->holds, c, release_dead, L);
}

static int lk_create(struct rds_backend *rb, void **state, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct lock_state *L = xcalloc(1, sizeof(*L));
    L->rb = rb;
    L->rng = (uint32_t)(uintptr_t)L ^ 0x5bd1e995u;
    dlist_init(&L->waiting);
    evalsha_init(&acquire_script);
    evalsha_init(&release_script);
    evalsha_init(&extend_script);
    *state = L;
    return 0;
}

static void lk_stats(struct rds_backend *rb, void *state, struct cbuf *o)
{
    (void)rb;
    struct lock_state *L = state;
    size_t waiting = 0;
    struct dlist *pos;
    dlist_foreach(pos, &L->waiting)
        waiting++;
    cbuf_map(o, 10);
    cbuf_str(o, "held");
    cbuf_uint(o, L->holds.n);
    cbuf_str(o, "waiting");
    cbuf_uint(o, waiting);
    cbuf_str(o, "acquired");
    cbuf_uint(o, L->acquired);
    cbuf_str(o, "not_acquired");
    cbuf_uint(o, L->not_acquired);
    cbuf_str(o, "retries");
    cbuf_uint(o, L->retries);
    cbuf_str(o, "released");
    cbuf_uint(o, L->released);
    cbuf_str(o, "extended");
    cbuf_uint(o, L->extended);
    cbuf_str(o, "not_held");
    cbuf_uint(o, L->not_held);
    cbuf_str(o, "dead_released");
    cbuf_uint(o, L->dead_released);
    cbuf_str(o, "orphan_released");
    cbuf_uint(o, L->orphan_released);
}

static void lk_destroy(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct lock_state *L = state;
    lock_holds_free(&L->holds);
    free(L);
}

static const struct rds_opdef lock_ops[] = {
    {"lock.acquire", acquire_submit},
    {"lock.release", release_submit},
    {"lock.extend", extend_submit},
};

const struct rds_module lock_module = {
    .name = "locks",
    .ops = lock_ops,
    .nops = sizeof(lock_ops) / sizeof(lock_ops[0]),
    .create = lk_create,
    .client_closed = lk_client_closed,
    .stats = lk_stats,
    .destroy = lk_destroy,
};
