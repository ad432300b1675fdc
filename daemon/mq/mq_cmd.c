/* mq_cmd.c: making and freeing what crosses between the threads; see
 * mq_cmd.h. */
#include <stdlib.h>
#include <time.h>

#include "mq_cmd.h"

uint64_t mq_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct mq_cmd *mq_cmd_new(enum mq_cmd_kind kind, uint64_t seq, uint64_t deadline)
{
    struct mq_cmd *c = xcalloc(1, sizeof(*c));
    c->kind = kind;
    c->seq = seq;
    c->deadline = deadline;
    init_amqp_pool(&c->pool, 4096);
    c->name = c->type = c->exchange = c->routing_key = amqp_empty_bytes;
    c->arguments = amqp_empty_table;
    dlist_init(&c->node);
    return c;
}

void mq_cmd_free(struct mq_cmd *c)
{
    if (!c)
        return;
    empty_amqp_pool(&c->pool);
    free(c);
}

void mq_event_free(struct mq_event *e)
{
    cbuf_free(&e->data);
    free(e);
}
