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
    op->name_len = strlen(name);
    op->run = run;
    op->ctx = ctx;
    op->backend = b;
    op->kind = kind;
    return 0;
}

/* A linear scan of a dozen ops, on every frame: the length and first
 * byte reject almost every entry without a call to memcmp. */
struct op *ops_find(struct ops *t, const char *name, size_t len)
{
    if (len == 0)
        return NULL;
    for (size_t i = 0; i < t->n; i++) {
        const struct op *op = &t->op[i];
        if (op->name_len == len && op->name[0] == name[0] && memcmp(op->name, name, len) == 0)
            return &t->op[i];
    }
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
