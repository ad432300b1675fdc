/* txn.h: redis.pipeline (many commands in one request, on a shared
 * pipelined connection) and redis.multi (MULTI/EXEC, on a shared
 * connection; with WATCH, and optionally values expected after it, on a
 * dedicated one from dedpool.h). */
#ifndef FERRY_TXN_H
#define FERRY_TXN_H

#include "rds_module.h"

extern const struct rds_module txn_module;

#endif
