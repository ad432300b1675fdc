/* ops.h: the op table: each op's name, who serves it, and its outcomes.
 *
 * Built once at start (the core ops, then each configured backend's) and
 * read by the request path for every frame; stats, hello and the metrics
 * read it too. It sits below request.c and knows nothing of clients or
 * the server. */
#ifndef FERRY_OPS_H
#define FERRY_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "histogram.h"

struct backend;
struct request;

/* A request ends with an error code, with a result, or abandoned because
 * its client went away. */
#define OUTCOME_OK FE_NCODES
#define OUTCOME_ABANDONED (FE_NCODES + 1)
#define NOUTCOMES (FE_NCODES + 2)

/* A built-in op's handler: it completes r (now or later) and returns 0,
 * or returns a negative fe code for the request path to answer. */
typedef int (*op_run_fn)(void *ctx, struct request *r);

/* One op: a built-in handler, or a backend and the kind it gave. */
struct op {
    const char *name;                 /* refers: a static string */
    size_t name_len;
    op_run_fn run;                    /* built-in handler, or NULL */
    void *ctx;                        /* refers: run's first argument */
    struct backend *backend;          /* refers: the backend that serves it */
    int kind;                         /* backend-private op number */
    uint64_t outcomes[NOUTCOMES];     /* by fe_index(), OUTCOME_OK, OUTCOME_ABANDONED */
    struct histogram duration;        /* owns: seconds, for ferry.request.duration */
};

#define OPS_MAX 64

struct ops {
    struct op op[OPS_MAX];
    size_t n;
};

/* Adds an op served by run(ctx, ...) or by backend b. Returns 0, or
 * FE_INTERNAL when the name is taken or the table is full. */
int ops_add(struct ops *t, const char *name, op_run_fn run, void *ctx, struct backend *b, int kind)
    __attribute__((warn_unused_result));
struct op *ops_find(struct ops *t, const char *name, size_t len);
/* The name stats and the metrics give outcome i. */
const char *ops_outcome_name(int i);
void ops_free(struct ops *t);

#endif
