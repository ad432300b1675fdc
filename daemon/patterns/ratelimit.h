/* ratelimit.h: the ratelimit op, GCRA in one script on Redis's clock. */
#ifndef FERRY_RATELIMIT_H
#define FERRY_RATELIMIT_H

#include "rds_module.h"

extern const struct rds_module ratelimit_module;

#endif
