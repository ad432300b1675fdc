/* mq_tagset.c: see mq_tagset.h. */
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "mq_tagset.h"

void mq_tagset_reset(struct mq_tagset *s)
{
    s->off = s->n = 0;
    s->last = 0;
}

void mq_tagset_free(struct mq_tagset *s)
{
    free(s->tags);
    memset(s, 0, sizeof(*s));
}

/* The index (from off) of the first open tag >= tag; n if none. */
static size_t lower_bound(const struct mq_tagset *s, uint64_t tag)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->tags[s->off + mid] < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool mq_tagset_add(struct mq_tagset *s, uint64_t tag, size_t limit)
{
    if (s->off + s->n == s->cap) {
        if (s->off > 0) {
            memmove(s->tags, s->tags + s->off, s->n * sizeof(*s->tags));
            s->off = 0;
        } else {
            /* Grow towards limit, not past it: a consumer with a large
             * prefetch that is acked promptly stays small. */
            size_t cap = s->cap ? s->cap * 2 : 8;
            if (cap > limit && limit > s->cap)
                cap = limit;
            if (cap <= s->cap)
                cap = s->cap + 1;
            s->tags = xrealloc(s->tags, cap * sizeof(*s->tags));
            s->cap = cap;
        }
    }
    s->tags[s->off + s->n++] = tag;
    s->last = tag;
    return s->n <= limit;
}

enum mq_tagset_state mq_tagset_check(const struct mq_tagset *s, uint64_t tag, bool multiple)
{
    if (tag == 0 || tag > s->last)
        return MQ_TAGSET_UNKNOWN;
    size_t i = lower_bound(s, tag);
    if (!multiple)
        return i < s->n && s->tags[s->off + i] == tag ? MQ_TAGSET_OPEN : MQ_TAGSET_SETTLED;
    bool up_to = i > 0 || (i < s->n && s->tags[s->off + i] == tag); /* something to settle */
    bool at_or_above = i < s->n;                                    /* the broker knows where to stop */
    return !up_to ? MQ_TAGSET_SETTLED : at_or_above ? MQ_TAGSET_OPEN : MQ_TAGSET_STRANDED;
}

size_t mq_tagset_settle(struct mq_tagset *s, uint64_t tag, bool multiple)
{
    size_t i = lower_bound(s, tag);
    bool hit = i < s->n && s->tags[s->off + i] == tag;
    if (multiple) {
        size_t k = i + hit; /* every open tag <= tag is at the front */
        s->off += k;
        s->n -= k;
        if (s->n == 0)
            s->off = 0;
        return k;
    }
    if (!hit)
        return 0;
    if (i == 0) {
        s->off++;
    } else {
        memmove(s->tags + s->off + i, s->tags + s->off + i + 1, (s->n - i - 1) * sizeof(*s->tags));
    }
    if (--s->n == 0)
        s->off = 0;
    return 1;
}
