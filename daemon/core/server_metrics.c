/* server_metrics.c: see server_metrics.h. */
#include "backend.h"
#include "server.h"
#include "server_metrics.h"

static void requests(void *ctx, const struct metrics_requests *v)
{
    struct server *s = ctx;
    for (size_t i = 0; i < s->ops.n; i++) {
        const struct op *op = &s->ops.op[i];
        if (v->outcome)
            for (int j = 0; j < NOUTCOMES; j++)
                if (op->outcomes[j])
                    v->outcome(v->ctx, op->name, ops_outcome_name(j), op->outcomes[j]);
        if (v->duration && op->duration.counts)
            v->duration(v->ctx, op->name, &op->duration);
    }
}

static uint64_t clients(void *ctx)
{
    struct server *s = ctx;
    return s->clients.n;
}

static void backends(void *ctx, const struct metric_emit *e)
{
    struct server *s = ctx;
    for (size_t i = 0; i < s->nbackends; i++)
        if (s->backends[i]->ops->metrics)
            s->backends[i]->ops->metrics(s->backends[i], e);
}

void server_metrics_source(struct server *s, struct metrics_source *src)
{
    *src = (struct metrics_source){.ctx = s, .requests = requests, .clients = clients, .backends = backends};
}
