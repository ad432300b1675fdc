/* mq_tagset.h: the delivery tags a consumer has been given and not yet
 * settled (acked, nacked or rejected).
 *
 * A second ack of a tag, or an ack of a tag never delivered, makes the
 * broker close the consumer's channel (406 PRECONDITION_FAILED), and with
 * it every other unacknowledged delivery comes again. Knowing which tags
 * are open lets ferryd refuse such an ack before the broker sees it.
 *
 * The broker numbers a channel's deliveries upwards, so the open tags are
 * kept ascending in an array; settling in order (the common case) takes
 * from the front in O(1). The broker delivers no more than prefetch
 * unsettled messages to a consumer, so the array never holds more than
 * prefetch tags. Pure: no I/O, driven by unit tests. */
#ifndef FERRY_MQ_TAGSET_H
#define FERRY_MQ_TAGSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mq_tagset {
    uint64_t *tags;   /* owns: open tags, ascending, at [off, off + n) */
    size_t off, n, cap;
    uint64_t last;    /* the highest tag added since the last reset; 0: none */
};

enum mq_tagset_state {
    MQ_TAGSET_OPEN,      /* settling it is what the broker expects */
    MQ_TAGSET_SETTLED,   /* delivered, but already settled */
    MQ_TAGSET_UNKNOWN,   /* never delivered (0, or above the highest) */
    MQ_TAGSET_STRANDED,  /* multiple: settled, and above every open tag, which the
                       * broker refuses although open tags lie below it */
};

/* Forgets every tag (a new channel numbers from 1 again); keeps the memory. */
void mq_tagset_reset(struct mq_tagset *s);
void mq_tagset_free(struct mq_tagset *s);
/* Records a delivery. tag must be above every tag added since the reset.
 * Returns false (and records it all the same) when that makes more than
 * limit open tags, which a broker honouring prefetch never does. */
bool mq_tagset_add(struct mq_tagset *s, uint64_t tag, size_t limit);
/* What settling tag would do. With multiple, the broker settles every open
 * tag up to tag, and accepts a tag it no longer holds only while a higher
 * one is open (else STRANDED); one that would settle nothing counts as
 * SETTLED. */
enum mq_tagset_state mq_tagset_check(const struct mq_tagset *s, uint64_t tag, bool multiple);
/* Settles tag (with multiple, every open tag up to it). Returns how many
 * were open. */
size_t mq_tagset_settle(struct mq_tagset *s, uint64_t tag, bool multiple);
/* The lowest open tag, or 0 when none is open. */
static inline uint64_t mq_tagset_lowest(const struct mq_tagset *s)
{
    return s->n ? s->tags[s->off] : 0;
}

#endif
