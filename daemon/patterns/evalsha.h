/* evalsha.h: ferryd's built-in Lua scripts (lock release, GCRA, dead
 * letters ...), run by digest.
 *
 * Each call is EVALSHA; a NOSCRIPT answer (a new server, a restart, a
 * SCRIPT FLUSH) is followed by EVAL of the same script with the same
 * arguments, which loads it again for the next calls, so callers never
 * see NOSCRIPT and never need to load anything first. */
#ifndef FERRY_EVALSHA_H
#define FERRY_EVALSHA_H

#include <stddef.h>
#include <hiredis/hiredis.h>

struct rds_backend;

struct evalsha_script {
    const char *body;  /* refers: the Lua text, static */
    char sha[41];      /* its SHA1 in hex, set by evalsha_init */
};

void evalsha_init(struct evalsha_script *s);
/* Runs s with nkeys keys then the other arguments (argv has nkeys + nargs
 * entries), on the connection serving the first key. fn gets the reply
 * (never NOSCRIPT), borrowed, or NULL when the connection failed. Returns
 * 0 or a negative fe code. */
int evalsha_call(struct rds_backend *rb, const struct evalsha_script *s, int nkeys, int nargs,
                 const char *const *argv, const size_t *lens, void (*fn)(void *arg, const redisReply *reply),
                 void *arg) __attribute__((warn_unused_result));
/* Counters for stats: NOSCRIPT answers that led to an EVAL. */
extern unsigned long long evalsha_reloads;

#endif
