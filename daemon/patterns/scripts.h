/* scripts.h: Lua scripts registered by name (script.load, script.call),
 * run by digest and loaded again whenever Redis has lost them. */
#ifndef FERRY_SCRIPTS_H
#define FERRY_SCRIPTS_H

#include "rds_module.h"

extern const struct rds_module scripts_module;

#endif
