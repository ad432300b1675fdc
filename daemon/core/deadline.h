/* deadline.h: every request's deadline, on one timer.
 *
 * A uv_timer_t per request would need a uv_close and a loop iteration to
 * free; instead requests sit in a list sorted by expiry, and one timer is
 * armed for the earliest. Most requests use the default deadline, so a new
 * one almost always belongs at the tail: insertion walks back from the tail
 * and is O(1) in the common case. */
#ifndef FERRY_DEADLINE_H
#define FERRY_DEADLINE_H

#include <stdint.h>
#include <uv.h>

#include "list.h"

struct deadline {
    struct dlist node;  /* in deadlines->list */
    uint64_t at;        /* loop time (ms) when it expires */
};

struct deadlines;
typedef void (*deadline_cb)(struct deadlines *d, struct deadline *expired);

struct deadlines {
    uv_timer_t timer;
    struct dlist list;  /* sorted by at, earliest first */
    uint64_t armed_at;  /* expiry the timer is set for, or 0 */
    deadline_cb expire; /* called once per expired entry, already removed */
};

void deadlines_init(struct deadlines *d, uv_loop_t *loop, deadline_cb expire);
void deadlines_close(struct deadlines *d);
void deadline_add(struct deadlines *d, struct deadline *e, uint64_t at);
void deadline_remove(struct deadlines *d, struct deadline *e);

#endif
