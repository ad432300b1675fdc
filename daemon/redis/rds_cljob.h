/* rds_cljob.h: a request's command on Redis Cluster (its "job"): routed
 * by its keys' slot, split per slot for MGET, MSET, DEL, UNLINK, EXISTS
 * and TOUCH and merged back, sent again after MOVED, ASK, TRYAGAIN and
 * CLUSTERDOWN (at most RDS_CLJOB_MAX_REDIRECTS times each part).
 *
 *   rds_cljob_submit --> parts (one per slot) --rds_conn_call--> node
 *        ^                                                        |
 *        +-- MOVED: slot moved, map refreshed; ASK: ASKING first --+
 *        +-- TRYAGAIN/CLUSTERDOWN: retry list (backoff) ----------+
 *                                   else: merge; the last part completes r
 */
#ifndef FERRY_RDS_CLJOB_H
#define FERRY_RDS_CLJOB_H

#include "rds_cluster.h"

#define RDS_CLJOB_MAX_REDIRECTS 5

struct request;

/* Routes and sends a 'redis' request's command (argv points into
 * r->v.args); completes r at once, or holds it (rds_job) until its
 * replies are in. */
void rds_cljob_submit(struct rds_cluster *cl, struct request *r, int argc, const char *const *argv,
                      const size_t *lens);
/* rds_backend_call on a cluster: by key's slot (any node when key is
 * NULL), following MOVED and ASK; fn gets the final reply. Returns 0 or a
 * negative fe code. */
int rds_cljob_call(struct rds_cluster *cl, const char *key, size_t keylen, int argc, const char *const *argv,
                   const size_t *lens, void (*fn)(void *arg, const redisReply *reply), void *arg);
/* At shutdown, before rds_cluster_stop: frees the parts still waiting to
 * be retried (their requests are gone by then). */
void rds_cljob_stop(struct rds_cluster *cl);

#endif
