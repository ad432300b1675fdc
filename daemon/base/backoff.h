/* backoff.h: the delay before a reconnect, for every backend. Pure, for
 * unit tests. */
#ifndef FERRY_BACKOFF_H
#define FERRY_BACKOFF_H

#include <stdint.h>

/* Backoff delay for the given number of consecutive failures: doubling
 * from min to max, then a random point in its upper half ("equal
 * jitter"), so a fleet of sidecars does not reconnect in lock-step. rng is
 * the caller's generator state (xorshift32). */
uint64_t backoff_ms(uint32_t *rng, unsigned failures, uint64_t min_ms, uint64_t max_ms);

#endif
