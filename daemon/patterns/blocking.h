/* blocking.h: the redis.blocking op: one blocking command (BLPOP, XREAD
 * BLOCK, WAIT ...) on a connection of the dedicated pool (dedpool.h),
 * its timeout capped at the request's deadline (blocking_timeout.h). */
#ifndef FERRY_BLOCKING_H
#define FERRY_BLOCKING_H

#include "rds_module.h"

extern const struct rds_module blocking_module;

#endif
