/* stream_sub.h: one stream.consume subscription: XREADGROUP in a loop on
 * a dedicated connection, at most `prefetch` entries unacked, idle
 * entries of the group reclaimed (XAUTOCLAIM) and poison ones moved to a
 * dead-letter stream, by one script on a pooled connection.
 *
 *   consume ──> take a dedicated connection ──> XREADGROUP (no BLOCK)
 *                  answer {"sub"} <── entries, or nil ──┘
 *   tick / ack ──> step(): claim due?  ──> claim script (pool)
 *                          free slots? ──> XREADGROUP ... BLOCK ms
 *   entries ──> push "entry" (each id kept until stream.ack)
 *   NOGROUP ──> XGROUP CREATE ... 0 MKSTREAM, push "gap"
 *   lost connection ──> next tick reads again
 *
 * A subscription ends by stream.cancel, its client leaving, or shutdown;
 * its connection goes back to the pool then, and it is freed once no
 * reply is awaited any more. */
#ifndef FERRY_STREAM_SUB_H
#define FERRY_STREAM_SUB_H

#include <stddef.h>
#include <stdint.h>

#include "cbuf.h"
#include "evalsha.h"
#include "list.h"

/* The module's state: its subscriptions, and what they share. */
struct stream_subs {
    struct rds_backend *rb;       /* refers */
    struct dlist subs;            /* owns: struct stream_sub, open or ending */
    size_t nsubs;                 /* of those, the open ones */
    struct evalsha_script claim;  /* the reclaim and dead-letter script */
    struct cbuf scratch;          /* owns: a push's data while it is built */
    /* Counters for stats. */
    uint64_t pushed, reclaimed, acked, dead_lettered, groups_recreated, read_errors;
};

struct client;
struct request;
struct stream_sub;

/* What stream.consume asked for. The strings refer into the request and
 * are copied. */
struct stream_sub_args {
    const char *stream, *group, *consumer, *dead;
    size_t stream_len, group_len, consumer_len, dead_len;
    unsigned prefetch;
    uint64_t claim_idle_ms;
    uint64_t max_deliveries;
};

/* Starts a subscription for r (whose client it belongs to): r is
 * answered {"sub": r->id} once the first read answered, before the
 * first push. Returns 0, or a negative fe code with nothing started. */
int stream_sub_start(struct stream_subs *m, struct request *r, const struct stream_sub_args *a);
/* c's open subscription whose pushes carry sub, or NULL. */
struct stream_sub *stream_sub_find(struct stream_subs *m, const struct client *c, uint64_t sub);
/* stream.ack on s: every id must be outstanding on s (else bad_request,
 * with msg, and nothing is acked). Answers r when XACK answers. */
int stream_sub_ack(struct stream_sub *s, struct request *r, int n, const char *const *ids, const size_t *lens,
                   char *msg, size_t msglen);
/* Ends s: no push follows. */
void stream_sub_end(struct stream_sub *s);
/* Ends every subscription of c (c NULL: all of them). */
void stream_sub_end_all(struct stream_subs *m, const struct client *c);
/* Frees what is left at destroy. */
void stream_sub_free_all(struct stream_subs *m);
/* Entries pushed and not yet acked, over all subscriptions (for stats). */
uint64_t stream_sub_unacked(struct stream_subs *m);

#endif
