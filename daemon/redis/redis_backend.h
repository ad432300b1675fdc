/* redis_backend.h: the Redis backend (the 'redis' op). */
#ifndef FERRY_REDIS_BACKEND_H
#define FERRY_REDIS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "redis_conn.h"
#include "redis_deny.h"
#include "reqtrace.h"
#include "url.h"


struct redis_backend {
    struct backend base;
    struct redis_target t;       /* owns: what its connections share */
    struct redis_deny deny;      /* owns */
    struct redis_conn **conns;   /* owns: the pool */
    size_t nconns;
    /* owns: a connection that carries no requests, kept open so that a
     * busy script can be killed (SCRIPT KILL waits behind the script on
     * the connection that ran it). */
    struct redis_conn *control;
    uint64_t scripts_killed;     /* SCRIPT/FUNCTION KILLs sent */
    size_t next;                 /* round-robin start among equals */
    uint64_t denied;             /* requests refused by the deny-list */
    uint64_t rejected_unavailable;
    char db_text[8];             /* db index as text, for spans */
    /* What a request's span says: the fields all requests share, set
     * once; the others set per request, valid during reqtrace_describe. */
    struct reqtrace_desc desc;
};

/* Parses the Redis settings in s->cfg, registers the 'redis' op and
 * returns the backend, or NULL with a message naming the key in err. */
struct backend *redis_backend_new(struct server *s, char *err, size_t errlen);


#endif
