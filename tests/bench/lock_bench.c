/* lock_bench.c: lock-bench, the latency of a lock's acquire + release
 * through ferryd against the same done directly on Redis:
 *
 *   lock-bench --socket FERRY_SOCK --redis REDIS_SOCK -n N [--pairs P]
 *
 * Through ferryd: lock.acquire then lock.release, one connection, one at
 * a time. Directly (hiredis, synchronous): SET key token NX PX 10000,
 * then EVALSHA of a compare-and-delete script: what a careful client does
 * without ferryd (and with no fencing counter). Each side runs N/P
 * iterations in turn, P times, the side that goes first alternating, so
 * that drift on a shared machine hits both. It also counts, from INFO
 * commandstats, the Redis commands ferryd sent per acquire + release.
 *
 * Prints:
 *   ferryd: p50=0.123 msec p99=0.456 msec
 *   direct: p50=0.050 msec p99=0.100 msec
 *   ratio: 2.46 (median of P pairs' p50 ratios, spread 2.1-2.8)
 *   redis commands per acquire+release: 2.00 (evalsha 2.00, eval 0.00) */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <hiredis/hiredis.h>

#include "ferry.h"

static const char *release_lua = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
                                 "end return 0";

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void fail(const char *what)
{
    fprintf(stderr, "lock-bench: %s\n", what);
    exit(1);
}

static uint64_t through_ferryd(ferry_t *f)
{
    uint64_t t0 = now_ns();
    cbor_item_t *a = cbor_new_definite_map(2);
    cbor_map_add(a, (struct cbor_pair){cbor_move(cbor_build_string("name")), cbor_move(cbor_build_string("bench"))});
    cbor_map_add(a, (struct cbor_pair){cbor_move(cbor_build_string("ttl_ms")), cbor_move(cbor_build_uint32(10000))});
    ferry_msg_t *m = NULL;
    if (ferry_call(f, "lock.acquire", a, 5000, &m, 6000) || m->err_code)
        fail("lock.acquire failed");
    cbor_decref(&a);
    char token[33] = "";
    struct cbor_pair *p = cbor_map_handle(m->result);
    for (size_t i = 0; i < cbor_map_size(m->result); i++)
        if (cbor_string_length(p[i].key) == 5 && !memcmp(cbor_string_handle(p[i].key), "token", 5))
            memcpy(token, cbor_string_handle(p[i].value), 32);
    ferry_msg_free(m);
    if (!token[0])
        fail("lock.acquire did not take the lock");
    a = cbor_new_definite_map(2);
    cbor_map_add(a, (struct cbor_pair){cbor_move(cbor_build_string("name")), cbor_move(cbor_build_string("bench"))});
    cbor_map_add(a, (struct cbor_pair){cbor_move(cbor_build_string("token")), cbor_move(cbor_build_string(token))});
    if (ferry_call(f, "lock.release", a, 5000, &m, 6000) || m->err_code)
        fail("lock.release failed");
    cbor_decref(&a);
    ferry_msg_free(m);
    return now_ns() - t0;
}

static uint64_t direct(redisContext *rc, const char *sha)
{
    uint64_t t0 = now_ns();
    char token[33];
    snprintf(token, sizeof(token), "%016llx%016llx", (unsigned long long)random(), (unsigned long long)t0);
    redisReply *r = redisCommand(rc, "SET lockbench:{direct} %s NX PX 10000", token);
    if (!r || r->type != REDIS_REPLY_STATUS)
        fail("SET NX PX failed");
    freeReplyObject(r);
    r = redisCommand(rc, "EVALSHA %s 1 lockbench:{direct} %s", sha, token);
    if (!r || r->type != REDIS_REPLY_INTEGER || r->integer != 1)
        fail("EVALSHA release failed");
    freeReplyObject(r);
    return now_ns() - t0;
}

/* calls= of cmdstat_<cmd> in INFO commandstats. */
static long long calls(redisContext *rc, const char *cmd)
{
    redisReply *r = redisCommand(rc, "INFO commandstats");
    if (!r || r->type != REDIS_REPLY_STRING)
        fail("INFO failed");
    char pat[64];
    snprintf(pat, sizeof(pat), "cmdstat_%s:calls=", cmd);
    const char *s = strstr(r->str, pat);
    long long n = s ? atoll(s + strlen(pat)) : 0;
    freeReplyObject(r);
    return n;
}

static double pct(uint64_t *v, size_t n, double q)
{
    qsort(v, n, sizeof(*v), cmp_u64);
    return (double)v[(size_t)(q * (double)(n - 1))] / 1e6;
}

int main(int argc, char **argv)
{
    const char *fsock = NULL, *rsock = NULL;
    long n = 20000, pairs = 9;
    static const struct option opts[] = {{"socket", 1, 0, 's'}, {"redis", 1, 0, 'r'}, {"pairs", 1, 0, 'p'}, {0}};
    int o;
    while ((o = getopt_long(argc, argv, "s:r:n:p:", opts, NULL)) != -1) {
        if (o == 's')
            fsock = optarg;
        else if (o == 'r')
            rsock = optarg;
        else if (o == 'n')
            n = atol(optarg);
        else if (o == 'p')
            pairs = atol(optarg);
        else
            return 64;
    }
    if (!fsock || !rsock || n < pairs || pairs < 1)
        fail("usage: lock-bench --socket FERRY_SOCK --redis REDIS_SOCK -n N [--pairs P]");
    int err = 0;
    ferry_t *f = ferry_connect(fsock, &err);
    redisContext *rc = redisConnectUnix(rsock);
    if (!f || !rc || rc->err)
        fail("cannot connect");
    redisReply *r = redisCommand(rc, "SCRIPT LOAD %s", release_lua);
    if (!r || r->type != REDIS_REPLY_STRING)
        fail("SCRIPT LOAD failed");
    char sha[41];
    snprintf(sha, sizeof(sha), "%s", r->str);
    freeReplyObject(r);
    long per = n / pairs;
    /* Warm both paths (ferryd's scripts get loaded on first use). */
    for (int i = 0; i < 200; i++) {
        through_ferryd(f);
        direct(rc, sha);
    }
    uint64_t *fv = calloc((size_t)(per * pairs), sizeof(*fv)), *dv = calloc((size_t)(per * pairs), sizeof(*dv));
    uint64_t *blk = calloc((size_t)per, sizeof(*blk));
    double *ratios = calloc((size_t)pairs, sizeof(*ratios));
    long long sha0 = calls(rc, "evalsha"), eval0 = calls(rc, "eval"), all0 = 0;
    /* INFO itself counts as a call of info: only evalsha and eval are ferryd's here. */
    (void)all0;
    uint64_t ferry_iters = 0;
    for (long p = 0; p < pairs; p++) {
        double p50[2];
        for (int side = 0; side < 2; side++) {
            int ferry_side = (side == 0) == (p % 2 == 0);
            for (long i = 0; i < per; i++)
                blk[i] = ferry_side ? through_ferryd(f) : direct(rc, sha);
            memcpy((ferry_side ? fv : dv) + p * per, blk, (size_t)per * sizeof(*blk));
            ferry_iters += ferry_side ? (uint64_t)per : 0;
            p50[ferry_side] = pct(blk, (size_t)per, 0.5);
        }
        ratios[p] = p50[1] / p50[0];
    }
    long long sha1 = calls(rc, "evalsha"), eval1 = calls(rc, "eval");
    /* The direct side ran one EVALSHA per iteration, as many as ferryd's side. */
    double per_sha = (double)(sha1 - sha0 - (long long)ferry_iters) / (double)ferry_iters;
    double per_eval = (double)(eval1 - eval0) / (double)ferry_iters;
    size_t total = (size_t)(per * pairs);
    printf("ferryd: p50=%.3f msec p99=%.3f msec\n", pct(fv, total, 0.5), pct(fv, total, 0.99));
    printf("direct: p50=%.3f msec p99=%.3f msec\n", pct(dv, total, 0.5), pct(dv, total, 0.99));
    qsort(ratios, (size_t)pairs, sizeof(*ratios), cmp_double);
    printf("ratio: %.2f (median of %ld pairs' p50 ratios, spread %.2f-%.2f)\n", ratios[pairs / 2], pairs, ratios[0],
           ratios[pairs - 1]);
    printf("redis commands per acquire+release: %.2f (evalsha %.2f, eval %.2f)\n", per_sha + per_eval, per_sha,
           per_eval);
    free(fv);
    free(dv);
    free(blk);
    free(ratios);
    redisFree(rc);
    ferry_close(f);
    return 0;
}
