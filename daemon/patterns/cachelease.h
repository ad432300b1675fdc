/* cachelease.h: the cache's Lua scripts, and the key of each key's lease.
 *
 * Every script takes two keys, the value's key and its lease key, which
 * share a Redis Cluster slot: the lease key of "k" is "{k}:ferry-lease"
 * (its hash tag is the whole key, so it hashes as "k" does), and for a
 * key that has a hash tag already, "k:ferry-lease" (the same tag first). */
#ifndef FERRY_CACHELEASE_H
#define FERRY_CACHELEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <hiredis/hiredis.h>

struct rds_backend;

/* A token's longest text, with its NUL. */
#define CACHELEASE_TOKEN_MAX 40

enum cachelease_script {
    /* ARGV: a token, the lease's ms. {1, value}: a hit. {2}: the lease is
     * the token's now. {0, holder's token, its PTTL}: another holds it. */
    CACHELEASE_GET,
    /* ARGV: the token ("": none), the value, its ms. 1: stored. 0: the
     * lease is not the token's any more: nothing stored. */
    CACHELEASE_FILL,
    /* No ARGV. {values deleted, leases deleted}. */
    CACHELEASE_INVALIDATE,
    /* ARGV: a token. Deletes the lease if it is still the token's. */
    CACHELEASE_RELEASE,
};

/* Computes the scripts' digests, once. */
void cachelease_init(void);
/* Whether key has a Redis Cluster hash tag: a '{', then later a '}',
 * with at least one byte between. */
bool cachelease_has_tag(const char *key, size_t n);
/* Whether key can have a lease key in its slot: not when it holds a '}'
 * but no hash tag. */
bool cachelease_key_ok(const char *key, size_t n);
/* The lease key of key (cachelease_key_ok): a malloc'd string of *len
 * bytes, NUL-terminated. */
char *cachelease_key(const char *key, size_t n, size_t *len);
/* Runs script s on key (cachelease_key_ok) and its lease key, with nargs
 * (at most 3) more arguments; fn gets the reply as evalsha_call's does.
 * Returns 0 or a negative fe code. */
int cachelease_run(struct rds_backend *rb, enum cachelease_script s, const char *key, size_t keylen, int nargs,
                   const char *const *args, const size_t *alens, void (*fn)(void *arg, const redisReply *reply),
                   void *arg) __attribute__((warn_unused_result));
/* Gives up the lease token holds on key, without waiting for the answer.
 * Returns 0 when it was sent. */
int cachelease_release(struct rds_backend *rb, const char *key, size_t keylen, const char *token);

#endif
