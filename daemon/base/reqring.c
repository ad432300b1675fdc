/* reqring.c: see reqring.h. */
#include <stdlib.h>

#include "cbuf.h"
#include "reqring.h"

void reqring_init(struct reqring *q)
{
    q->slots = NULL;
    q->cap = 0;
    q->head = q->tail = 0;
}

void reqring_free(struct reqring *q)
{
    free(q->slots);
    reqring_init(q);
}

uint64_t reqring_push(struct reqring *q, struct request *r)
{
    if (q->tail - q->head == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 64;
        struct request **n = xmalloc(ncap * sizeof(*n));
        for (uint64_t s = q->head; s < q->tail; s++)
            n[s & (ncap - 1)] = q->slots[s & (q->cap - 1)];
        free(q->slots);
        q->slots = n;
        q->cap = ncap;
    }
    uint64_t seq = q->tail++;
    q->slots[seq & (q->cap - 1)] = r;
    return seq;
}

struct request *reqring_pop(struct reqring *q)
{
    struct request **slot = &q->slots[q->head & (q->cap - 1)];
    struct request *r = *slot;
    *slot = NULL;
    q->head++;
    return r;
}

/* Moves head past slots that are already empty, so the ring does not grow
 * behind one slow request more than it must. */
static void trim(struct reqring *q)
{
    while (q->head < q->tail && q->slots[q->head & (q->cap - 1)] == NULL)
        q->head++;
}

struct request *reqring_take(struct reqring *q, uint64_t seq)
{
    if (seq < q->head || seq >= q->tail)
        return NULL;
    struct request **slot = &q->slots[seq & (q->cap - 1)];
    struct request *r = *slot;
    *slot = NULL;
    trim(q);
    return r;
}

void reqring_cancel(struct reqring *q, uint64_t seq, const struct request *r)
{
    if (seq < q->head || seq >= q->tail)
        return;
    struct request **slot = &q->slots[seq & (q->cap - 1)];
    if (*slot == r)
        *slot = NULL;
}
