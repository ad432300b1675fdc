/* ratelimit.c: the ratelimit op: GCRA (the generic cell rate algorithm)
 * in one script, so that any number of ferryds and clients share one
 * limit per key with no race between reading and writing it.
 *
 * GCRA keeps one number per key: the theoretical arrival time (TAT) of
 * the next request if requests came exactly at the rate. A request of
 * cost c is allowed when TAT + c*T - now <= burst*T (T = period / rate),
 * and then moves TAT on by c*T. The time is Redis's (TIME in the script):
 * ferryds on several hosts share no clock, and their skew would make the
 * limit wrong. The key is "ratelimit:KEY", holding TAT in microseconds
 * and expiring when the limit is full again, so idle keys cost nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "errors.h"
#include "evalsha.h"
#include "pargs.h"
#include "ratelimit.h"
#include "rds_backend.h"
#include "request.h"

#define RL_KEY_MAX 512
#define RL_MAX 1000000000.0 /* rate and burst at most this */

/* KEYS: the key. ARGV: T (µs, may be fractional), burst, cost. Returns
 * {allowed 0/1, remaining, retry_after_ms, reset_after_ms}. */
static struct evalsha_script gcra_script = {
    .body = "local t = redis.call('TIME')\n"
            "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
            "local T = tonumber(ARGV[1])\n"
            "local tol = T * tonumber(ARGV[2])\n"
            "local cost = tonumber(ARGV[3])\n"
            "local v = redis.call('GET', KEYS[1])\n"
            "local tat = now\n"
            "if v then tat = math.max(tonumber(v) or now, now) end\n"
            "local new_tat = tat + T * cost\n"
            "local diff = now - (new_tat - tol)\n"
            "if diff < 0 then\n"
            "  local remaining = math.max(math.floor((now - tat + tol) / T), 0)\n"
            "  return {0, remaining, math.ceil(-diff / 1000), math.ceil((tat - now) / 1000)}\n"
            "end\n"
            "local ms = math.ceil((new_tat - now) / 1000)\n"
            "if ms > 0 then\n"
            "  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ms)\n"
            "end\n"
            "return {1, math.floor(diff / T), 0, ms}\n",
};

struct rl_state {
    uint64_t allowed, denied;
};

/* One ratelimit request; outlives it until the script answers. */
struct rl_job {
    struct rds_job job;    /* job.r: NULL once cancelled */
    struct rl_state *S;    /* refers */
};

static void rl_cancel(struct rds_job *j)
{
    (void)j; /* freed when the reply comes, which always does */
}

static void on_gcra(void *arg, const redisReply *reply)
{
    struct rl_job *j = arg;
    struct request *r = j->job.r;
    bool shaped = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 4;
    for (size_t i = 0; shaped && i < 4; i++)
        shaped = reply->element[i]->type == REDIS_REPLY_INTEGER && reply->element[i]->integer >= 0;
    if (shaped)
        (reply->element[0]->integer ? &j->S->allowed : &j->S->denied)[0]++;
    free(j);
    if (!r)
        return;
    if (!shaped) {
        if (reply && reply->type != REDIS_REPLY_ERROR)
            request_fail(r, FE_INTERNAL, "unexpected reply to the rate limit script");
        else
            rds_backend_fail_reply(r, reply);
        return;
    }
    static const char *const names[4] = {"allowed", "remaining", "retry_after_ms", "reset_after_ms"};
    size_t at;
    struct cbuf *o = request_result_begin(r, &at);
    cbuf_map(o, 4);
    cbuf_str(o, names[0]);
    cbuf_bool(o, reply->element[0]->integer != 0);
    for (size_t i = 1; i < 4; i++) {
        cbuf_str(o, names[i]);
        cbuf_uint(o, (uint64_t)reply->element[i]->integer);
    }
    request_result_end(r, at);
}

static int rl_submit(struct rds_backend *rb, struct request *r)
{
    struct parg a[] = {
        {.name = "key", .type = PA_STR, .required = true},
        {.name = "rate", .type = PA_NUM, .required = true},
        {.name = "period_ms", .type = PA_UINT, .required = false},
        {.name = "burst", .type = PA_UINT, .required = true},
        {.name = "cost", .type = PA_UINT, .required = false},
    };
    char msg[200];
    if (pargs_read(r->v.args, r->v.args_len, a, 5, msg, sizeof(msg))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    uint64_t period = a[2].present ? a[2].u : 1000;
    uint64_t cost = a[4].present ? a[4].u : 1;
    const char *bad = NULL;
    if (a[0].n == 0 || a[0].n > RL_KEY_MAX)
        bad = "'key' must be 1 to 512 bytes";
    else if (!(a[1].f > 0) || !isfinite(a[1].f) || a[1].f > RL_MAX)
        bad = "'rate' must be a number above 0 and at most 1e9";
    else if (period == 0 || period > 86400000ull * 366)
        bad = "'period_ms' must be 1 to 31622400000 (a year)";
    else if (a[3].u == 0 || (double)a[3].u > RL_MAX)
        bad = "'burst' must be 1 to 1e9";
    else if (cost > a[3].u)
        bad = "'cost' is above 'burst': such a request could never be allowed";
    if (bad) {
        request_fail(r, FE_BAD_REQUEST, bad);
        return 0;
    }
    char key[RL_KEY_MAX + 16];
    /* Copied, not printed: a key may hold any byte, NUL included. */
    memcpy(key, "ratelimit:", 10);
    memcpy(key + 10, a[0].p, a[0].n);
    int kn = (int)(10 + a[0].n);
    const char *set[3] = {"SET", key, "x"};
    size_t setl[3] = {3, (size_t)kn, 1};
    int rc = rds_backend_check(rb, r, false, 3, set, setl, msg, sizeof(msg));
    if (rc) {
        request_fail(r, rc, msg);
        return 0;
    }
    /* T in microseconds, as text the script reads back exactly enough. */
    char t[48], burst[24], c[24];
    int tn = snprintf(t, sizeof(t), "%.6f", (double)period * 1000.0 / a[1].f);
    int bn = snprintf(burst, sizeof(burst), "%llu", (unsigned long long)a[3].u);
    int cn = snprintf(c, sizeof(c), "%llu", (unsigned long long)cost);
    const char *argv[4] = {key, t, burst, c};
    size_t lens[4] = {(size_t)kn, (size_t)tn, (size_t)bn, (size_t)cn};
    struct rl_job *j = xcalloc(1, sizeof(*j));
    j->S = rds_backend_state(rb, &ratelimit_module);
    rc = evalsha_call(rb, &gcra_script, 1, 3, argv, lens, on_gcra, j);
    if (rc) {
        free(j);
        return rc;
    }
    j->job.cancel = rl_cancel;
    rds_backend_hold(r, &j->job);
    return 0;
}

static int rl_create(struct rds_backend *rb, void **state, char *err, size_t errlen)
{
    (void)rb;
    (void)err;
    (void)errlen;
    evalsha_init(&gcra_script);
    *state = xcalloc(1, sizeof(struct rl_state));
    return 0;
}

static void rl_stats(struct rds_backend *rb, void *state, struct cbuf *o)
{
    (void)rb;
    struct rl_state *S = state;
    cbuf_map(o, 2);
    cbuf_str(o, "allowed");
    cbuf_uint(o, S->allowed);
    cbuf_str(o, "denied");
    cbuf_uint(o, S->denied);
}

static void rl_destroy(struct rds_backend *rb, void *state)
{
    (void)rb;
    free(state);
}

static const struct rds_opdef rl_ops[] = {
    {"ratelimit", rl_submit},
};

const struct rds_module ratelimit_module = {
    .name = "ratelimit",
    .ops = rl_ops,
    .nops = 1,
    .create = rl_create,
    .stats = rl_stats,
    .destroy = rl_destroy,
};
