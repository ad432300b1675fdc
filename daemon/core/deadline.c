/* deadline.c: see deadline.h. */
#include "deadline.h"

static void rearm(struct deadlines *d);

static void on_timer(uv_timer_t *t)
{
    struct deadlines *d = container_of(t, struct deadlines, timer);
    uint64_t now = uv_now(t->loop);
    d->armed_at = 0;
    while (!dlist_empty(&d->list)) {
        struct deadline *e = container_of(d->list.next, struct deadline, node);
        if (e->at > now)
            break;
        dlist_remove(&e->node);
        d->expire(d, e);
    }
    rearm(d);
}

static void rearm(struct deadlines *d)
{
    if (dlist_empty(&d->list)) {
        if (d->armed_at) {
            uv_timer_stop(&d->timer);
            d->armed_at = 0;
        }
        return;
    }
    struct deadline *first = container_of(d->list.next, struct deadline, node);
    if (d->armed_at == first->at)
        return;
    uint64_t now = uv_now(d->timer.loop);
    uv_timer_start(&d->timer, on_timer, first->at > now ? first->at - now : 0, 0);
    d->armed_at = first->at;
}

void deadlines_init(struct deadlines *d, uv_loop_t *loop, deadline_cb expire)
{
    uv_timer_init(loop, &d->timer);
    dlist_init(&d->list);
    d->armed_at = 0;
    d->expire = expire;
}

void deadlines_close(struct deadlines *d) { uv_close((uv_handle_t *)&d->timer, NULL); }

void deadline_add(struct deadlines *d, struct deadline *e, uint64_t at)
{
    e->at = at;
    struct dlist *pos = d->list.prev;
    while (pos != &d->list && container_of(pos, struct deadline, node)->at > at)
        pos = pos->prev;
    dlist_insert_before(pos->next, &e->node);
    if (d->armed_at == 0 || at < d->armed_at)
        rearm(d);
}

void deadline_remove(struct deadlines *d, struct deadline *e)
{
    if (!dlist_linked(&e->node))
        return;
    {
        int was_first = d->list.next == &e->node;
        dlist_remove(&e->node);
        /* Leaving the timer armed for a removed entry costs one spurious
         * wake-up; re-arming on every removal would cost a heap operation
         * per request, so only an empty list stops the timer. */
        if (was_first && dlist_empty(&d->list))
            rearm(d);
    }
}
