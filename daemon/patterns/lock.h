/* lock.h: distributed locks with fencing (lock.acquire, lock.release,
 * lock.extend); see lock.c for their keys and path, and docs/patterns.md
 * for what they guarantee. */
#ifndef FERRY_LOCK_H
#define FERRY_LOCK_H

#include "rds_module.h"

extern const struct rds_module lock_module;

#endif
