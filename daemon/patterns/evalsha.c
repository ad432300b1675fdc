/* evalsha.c: built-in scripts run by digest, loaded again on NOSCRIPT. */
#include <stdlib.h>
#include <string.h>
/* SHA1_Init and friends are deprecated in OpenSSL 3 in favour of EVP (as
 * SHA1() now is a wrapper of), but EVP's first fetch loads the default
 * provider and its algorithm tables, which left 3.4 MiB of libcrypto
 * resident in an idle ferryd that uses no TLS; the low-level calls run
 * the digest directly. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include "cbuf.h"
#include "evalsha.h"
#include "rds_module.h"

unsigned long long evalsha_reloads;

void evalsha_init(struct evalsha_script *s)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA_CTX ctx;
    if (!SHA1_Init(&ctx) || !SHA1_Update(&ctx, s->body, strlen(s->body)) || !SHA1_Final(md, &ctx))
        abort();
    for (unsigned i = 0; i < 20; i++) {
        static const char hex[] = "0123456789abcdef";
        s->sha[2 * i] = hex[md[i] >> 4];
        s->sha[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha[40] = '\0';
}

/* One call in flight: what an EVAL needs if the EVALSHA meets NOSCRIPT. */
struct evcall {
    struct rds_backend *rb;
    const struct evalsha_script *s;
    void (*fn)(void *arg, const redisReply *reply);
    void *arg;
    int argc;          /* EVALSHA sha nkeys keys... args... */
    const char **argv; /* owns, and the strings, in one block after it */
    size_t *lens;
};

static void free_call(struct evcall *e)
{
    free(e->argv);
    free(e);
}

static void on_eval(void *arg, const redisReply *reply)
{
    struct evcall *e = arg;
    e->fn(e->arg, reply);
    free_call(e);
}

static void on_evalsha(void *arg, const redisReply *reply)
{
    struct evcall *e = arg;
    if (reply && reply->type == REDIS_REPLY_ERROR && reply->len >= 8 && !memcmp(reply->str, "NOSCRIPT", 8)) {
        evalsha_reloads++;
        e->argv[0] = "EVAL";
        e->lens[0] = 4;
        e->argv[1] = e->s->body;
        e->lens[1] = strlen(e->s->body);
        int nkeys = atoi(e->argv[2]);
        const char *key = nkeys > 0 ? e->argv[3] : NULL;
        if (rds_backend_call(e->rb, key, key ? e->lens[3] : 0, e->argc, e->argv, e->lens, on_eval, e) == 0)
            return;
        reply = NULL; /* the connection is gone since: as if it had failed */
    }
    e->fn(e->arg, reply);
    free_call(e);
}

int evalsha_call(struct rds_backend *rb, const struct evalsha_script *s, int nkeys, int nargs,
                 const char *const *argv, const size_t *lens, void (*fn)(void *arg, const redisReply *reply),
                 void *arg)
{
    int argc = 3 + nkeys + nargs;
    size_t bytes = 0;
    for (int i = 0; i < nkeys + nargs; i++)
        bytes += lens[i] + 1;
    /* One block: the argv array, the lens, the nkeys text, the copies. */
    char *blk = malloc((size_t)argc * (sizeof(char *) + sizeof(size_t)) + 24 + bytes);
    if (!blk)
        abort();
    struct evcall *e = calloc(1, sizeof(*e));
    if (!e)
        abort();
    e->rb = rb;
    e->s = s;
    e->fn = fn;
    e->arg = arg;
    e->argc = argc;
    e->argv = (const char **)blk;
    e->lens = (size_t *)(blk + (size_t)argc * sizeof(char *));
    char *p = (char *)(e->lens + argc);
    int nk = snprintf(p, 24, "%d", nkeys);
    e->argv[0] = "EVALSHA";
    e->lens[0] = 7;
    e->argv[1] = s->sha;
    e->lens[1] = 40;
    e->argv[2] = p;
    e->lens[2] = (size_t)nk;
    p += 24;
    for (int i = 0; i < nkeys + nargs; i++) {
        memcpy(p, argv[i], lens[i]);
        p[lens[i]] = '\0';
        e->argv[3 + i] = p;
        e->lens[3 + i] = lens[i];
        p += lens[i] + 1;
    }
    int rc = rds_backend_call(rb, nkeys ? argv[0] : NULL, nkeys ? lens[0] : 0, argc, e->argv, e->lens,
                              on_evalsha, e);
    if (rc)
        free_call(e);
    return rc;
}
