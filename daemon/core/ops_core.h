/* ops_core.h: registers ping, hello, stats and health. */
#ifndef FERRY_OPS_CORE_H
#define FERRY_OPS_CORE_H

struct server;
int ops_core_register(struct server *s) __attribute__((warn_unused_result));

#endif
