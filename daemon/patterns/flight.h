/* flight.h: single flight for the redis op (redis_single_flight = yes):
 * identical GETs in flight at once in one ferryd share one round trip.
 *
 *   GET k ──> intercept ── no flight for k ──> a flight: one GET sent
 *                │                               (rds_backend_call)
 *                └─ a flight for k ──> attach     │
 *                                                 ▼ reply
 *                     encoded once (rds_reply_encode), copied to each
 *                     member still there; errors to each as backend_error
 *
 * Every member (the one that started it too) is an rds_job: a member that
 * goes away (deadline, client left) leaves the flight, which lands all the
 * same for the others. A flight leaves the table when its reply arrives,
 * so a GET arriving after that starts a new one. */
#ifndef FERRY_FLIGHT_H
#define FERRY_FLIGHT_H

#include "rds_module.h"

extern const struct rds_module flight_module;

#endif
