/* ops.c: the op table. */
#include <string.h>

#include "ops.h"

int ops_add(struct ops *t, const char *name, op_run_fn run, void *ctx, struct backend *b, int kind)
{
    if (t->n == OPS_MAX || ops_find(t, name, strlen(name)))
        return FE_INTERNAL;
    struct op *op = &t->op[t->n++];
    memset(op, 0, sizeof(*op));
    op->name = name;
    op->run = run;
    op->ctx = ctx;
    op->backend = b;
    op->kind = kind;
    return 0;
}

/* A linear scan: a dozen ops, and comparing the length first rejects
 * almost every entry without touching its name. */
struct op *ops_find(struct ops *t, const char *name, size_t len)
{
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->op[i].name) == len && memcmp(t->op[i].name, name, len) == 0)
            return &t->op[i];
    return NULL;
}

const char *ops_outcome_name(int i)
{
    return i == OUTCOME_OK ? "ok" : i == OUTCOME_ABANDONED ? "abandoned" : fe_name(-i - 1);
}

void ops_free(struct ops *t)
{
    for (size_t i = 0; i < t->n; i++)
        histogram_free(&t->op[i].duration);
    t->n = 0;
}
