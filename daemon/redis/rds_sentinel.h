/* rds_sentinel.h: Redis Sentinel: which server is the primary. ferryd
 * asks the sentinels (SENTINEL get-master-addr-by-name), listens for
 * +switch-master on one of them, points the backend's target at the new
 * primary when it changes, and confirms with ROLE on a connection of its
 * own that the server there is a primary before the backend serves.
 *
 *   sentinel (query conn) --get-master-addr--> t->addr --switched-->
 *   backend reconnects --> probe conn: ROLE == master --> confirmed
 *   sentinel (subscriber conn) --+switch-master--> the same, at once
 */
#ifndef FERRY_RDS_SENTINEL_H
#define FERRY_RDS_SENTINEL_H

#include <stdbool.h>
#include <stddef.h>

#include "cbuf.h"
#include "rds_conn.h"

struct rds_sentinel;

struct rds_sentinel_host {
    struct rds_target *t;         /* refers: the backend's; its address follows the primary */
    void *arg;
    /* t's address changed (or is known for the first time): connect the
     * backend's connections there. */
    void (*switched)(void *arg);
    /* Whether the primary is confirmed changed: the backend's health. */
    void (*changed)(void *arg);
};

/* NULL with err when the keys do not parse. */
struct rds_sentinel *rds_sentinel_new(const struct rds_sentinel_host *h, char *err, size_t errlen);
void rds_sentinel_start(struct rds_sentinel *s);
/* Whether the server at t's address said ROLE master since it was
 * chosen: until then the backend refuses requests ('unavailable'). */
bool rds_sentinel_confirmed(const struct rds_sentinel *s);
/* Why not confirmed, for errors and health. */
const char *rds_sentinel_why(const struct rds_sentinel *s);
/* Appends one map: the primary, whether confirmed, the sentinel used,
 * switches seen. */
void rds_sentinel_stats(const struct rds_sentinel *s, struct cbuf *o);
void rds_sentinel_stop(struct rds_sentinel *s);
void rds_sentinel_free(struct rds_sentinel *s);

#endif
