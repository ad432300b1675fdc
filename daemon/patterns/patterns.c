/* patterns.c: the table of the Redis patterns' modules (rds_module.h):
 * each row a module of this folder, with its ops. Adding a pattern is
 * adding its row here; the Redis backend takes the rest from the table. */
#include <stddef.h>

#include "blocking.h"
#include "dedpool.h"
#include "lock.h"
#include "ratelimit.h"
#include "scripts.h"
#include "cache.h"
#include "flight.h"
#include "pubsub.h"
#include "rds_module.h"
#include "stream.h"
#include "txn.h"

const struct rds_module *const rds_modules[] = {
    &dedpool_module,
    &pubsub_module,
    &blocking_module,
    &txn_module,
    &stream_module,
    &lock_module,
    &ratelimit_module,
    &scripts_module,
    &cache_module,
    &flight_module,
};

const size_t rds_nmodules = sizeof(rds_modules) / sizeof(rds_modules[0]);
