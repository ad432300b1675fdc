/* stream.h: Redis streams with consumer groups: the ops xadd,
 * group.create, stream.consume, stream.ack and stream.cancel, and the
 * module state they share. The subscriptions of stream.consume live in
 * stream_sub.c; entries are encoded in stream_entry.c. */
#ifndef FERRY_STREAM_H
#define FERRY_STREAM_H

#include "rds_module.h"

extern const struct rds_module stream_module;

#endif
