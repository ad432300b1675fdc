/* cachelease.c: the cache's scripts and lease keys (cachelease.h). */
#include <stdlib.h>
#include <string.h>

#include "cachelease.h"
#include "cbuf.h"
#include "evalsha.h"

#define LEASE_SUFFIX ":ferry-lease"

/* Each GET and SET NX is one script, so that of two callers missing at
 * once only one takes the lease, in one round trip. */
static struct evalsha_script scripts[] = {
    [CACHELEASE_GET] = {"local v = redis.call('GET', KEYS[1])\n"
                        "if v then return {1, v} end\n"
                        "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end\n"
                        "return {0, redis.call('GET', KEYS[2]) or '', redis.call('PTTL', KEYS[2])}\n",
                        {0}},
    [CACHELEASE_FILL] = {"if ARGV[1] ~= '' then\n"
                         "  if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end\n"
                         "  redis.call('DEL', KEYS[2])\n"
                         "end\n"
                         "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
                         "return 1\n",
                         {0}},
    /* The lease goes too: a fill still running loaded what the
     * invalidation made stale, and must not store it. */
    [CACHELEASE_INVALIDATE] = {"return {redis.call('DEL', KEYS[1]), redis.call('DEL', KEYS[2])}\n", {0}},
    [CACHELEASE_RELEASE] = {"if redis.call('GET', KEYS[2]) == ARGV[1] then return redis.call('DEL', KEYS[2]) end\n"
                            "return 0\n",
                            {0}},
};

void cachelease_init(void)
{
    for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++)
        if (!scripts[i].sha[0])
            evalsha_init(&scripts[i]);
}

bool cachelease_has_tag(const char *key, size_t n)
{
    const char *o = memchr(key, '{', n);
    if (!o)
        return false;
    const char *c = memchr(o + 1, '}', n - (size_t)(o + 1 - key));
    return c && c > o + 1;
}

bool cachelease_key_ok(const char *key, size_t n)
{
    return cachelease_has_tag(key, n) || !memchr(key, '}', n);
}

char *cachelease_key(const char *key, size_t n, size_t *len)
{
    bool tag = cachelease_has_tag(key, n);
    size_t sl = sizeof(LEASE_SUFFIX) - 1;
    char *p = xmalloc(n + sl + 3);
    size_t at = 0;
    if (!tag)
        p[at++] = '{';
    memcpy(p + at, key, n);
    at += n;
    if (!tag)
        p[at++] = '}';
    memcpy(p + at, LEASE_SUFFIX, sl);
    at += sl;
    p[at] = '\0';
    *len = at;
    return p;
}

int cachelease_run(struct rds_backend *rb, enum cachelease_script s, const char *key, size_t keylen, int nargs,
                   const char *const *args, const size_t *alens, void (*fn)(void *arg, const redisReply *reply),
                   void *arg)
{
    size_t llen;
    char *lk = cachelease_key(key, keylen, &llen);
    const char *argv[5] = {key, lk};
    size_t lens[5] = {keylen, llen};
    for (int i = 0; i < nargs && i < 3; i++) {
        argv[2 + i] = args[i];
        lens[2 + i] = alens[i];
    }
    int rc = evalsha_call(rb, &scripts[s], 2, nargs, argv, lens, fn, arg);
    free(lk);
    return rc;
}

static void on_released(void *arg, const redisReply *reply)
{
    (void)arg;
    (void)reply;
}

int cachelease_release(struct rds_backend *rb, const char *key, size_t keylen, const char *token)
{
    const char *args[1] = {token};
    size_t alens[1] = {strlen(token)};
    return cachelease_run(rb, CACHELEASE_RELEASE, key, keylen, 1, args, alens, on_released, NULL);
}
