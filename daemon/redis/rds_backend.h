/* rds_backend.h: the Redis backend (the 'redis' op). */
#ifndef FERRY_RDS_BACKEND_H
#define FERRY_RDS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "rds_commands.h"
#include "rds_conn.h"
#include "rds_deny.h"
#include "rds_module.h"
#include "rds_policy.h"
#include "reqtrace.h"
#include "url.h"


struct rds_cluster;
struct rds_sentinel;

struct rds_backend {
    struct backend base;
    struct rds_target t;       /* owns: what its connections share */
    struct rds_deny deny;      /* owns */
    struct rds_conn **conns;   /* owns: the pool */
    size_t nconns;
    /* owns: a connection that carries no requests, kept open so that a
     * busy script can be killed (SCRIPT KILL waits behind the script on
     * the connection that ran it). */
    struct rds_conn *control;
    uint64_t scripts_killed;     /* SCRIPT/FUNCTION KILLs sent */
    size_t next;                 /* round-robin start among equals */
    uint64_t denied;             /* requests refused by the deny-list */
    uint64_t rejected_unavailable;
    char db_text[8];             /* db index as text, for spans */
    struct rds_commands commands; /* owns: the server's command table; empty until learned */
    struct rds_policy policy;    /* owns: policies' rules compiled against it */
    /* What a request's span says: the fields all requests share, set
     * once; the others set per request, valid during reqtrace_describe. */
    struct reqtrace_desc desc;
    /* The patterns' modules (rds_module.h): each one's state, by its
     * index in rds_modules[], and the ops they serve, by op kind - 2. */
    void *mod[RDS_MAX_MODULES];
    const struct rds_opdef *opdefs[48];
    /* The modules that see each redis command (intercept), by index. */
    size_t interceptors[RDS_MAX_MODULES];
    size_t ninterceptors;
    size_t nopdefs;
    unsigned dedicated;          /* dedicated connections made, for their log names */
    /* owns, with redis_cluster (else NULL): the nodes, the slot map, the
     * routing (rds_cluster.c, rds_cljob.c); the pool is empty then, and
     * the control connection goes to the first seed. */
    struct rds_cluster *cluster;
    /* owns, with redis_sentinel (else NULL): t's address follows the
     * primary it names; requests wait for its ROLE confirmation. */
    struct rds_sentinel *sentinel;
    bool pool_started;           /* with a sentinel: once the primary is known */
    struct rds_conn *learning;   /* refers: the connection COMMAND LIST/INFO were sent on */
};

/* The backend table's row (backends.c). */
extern const struct backend_kind rds_backend_kind;


#endif
