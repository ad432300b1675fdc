/* stream.h: Redis streams with consumer groups: the ops xadd,
 * group.create, stream.consume, stream.ack and stream.cancel, and the
 * module state they share. The subscriptions of stream.consume live in
 * stream_sub.c; entries are encoded in stream_entry.c. */
#ifndef FERRY_STREAM_H
#define FERRY_STREAM_H

#include <stdint.h>

#include "cbuf.h"
#include "evalsha.h"
#include "list.h"
#include "rds_module.h"

struct stream_mod {
    struct rds_backend *rb;       /* refers */
    struct dlist subs;            /* owns: struct stream_sub, open or ending */
    size_t nsubs;                 /* of those, the open ones */
    struct evalsha_script claim;  /* the reclaim and dead-letter script */
    struct cbuf scratch;          /* owns: a push's data while it is built */
    /* Counters for stats. */
    uint64_t pushed, reclaimed, acked, dead_lettered, groups_recreated, read_errors;
};

extern const struct rds_module stream_module;

#endif
