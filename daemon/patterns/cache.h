/* cache.h: cache-aside without stampedes: cache.get, cache.fill and
 * cache.invalidate (docs/patterns.md, "Cache-aside without stampedes").
 *
 * A miss hands out a lease (a token in the lease key, SET NX PX in the
 * same script as a second GET) to one caller among all concurrent ones,
 * across ferryd instances; the others wait for the value:
 *
 *   cache.get ──> GET ── value ─────────────────────> {hit: true, value}
 *                  └ nil ─> script ── value ─────────> {hit: true, value}
 *                             │ ─ lease taken by us ─> {hit: false, lease}
 *                             └ ─ held by another ─> waiters of the key
 *                                                     │
 *   cache.fill (this ferryd) ─ stored ─> each waiter gets the value,
 *                                        with no round trip
 *   cache.invalidate (this ferryd) ───> the waiters run the script again
 *   timer: lease held by another ferryd ─> again every CACHE_POLL_MS;
 *          held here ─> again when it expires (its holder died)
 *
 * The waiters of one key share each retry (one script run per key): the
 * value answers them all, a lease goes to the one waiting longest. */
#ifndef FERRY_CACHE_H
#define FERRY_CACHE_H

#include "rds_module.h"

/* How often waiters poll while the lease is another ferryd's. */
#define CACHE_POLL_MS 50

extern const struct rds_module cache_module;

#endif
