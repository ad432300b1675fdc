/* rds_config.h: the Redis backend's keys of ferryd.conf (redis_*). */
#ifndef FERRY_RDS_CONFIG_H
#define FERRY_RDS_CONFIG_H

#include "config.h"

struct rds_config {
    char *url;                /* owns; may hold a password, never logged raw */
    long pool;
    long connect_timeout_ms;
    long backoff_min_ms;
    long backoff_max_ms;
    long max_pending;
    char *deny;               /* owns */
    char *query_text;         /* owns: sanitized, full or off */
};

extern const struct cfg_section rds_config_section;

/* The Redis values of c. */
static inline const struct rds_config *rds_config_of(const struct config *c)
{
    return config_section(c, &rds_config_section);
}

#endif
