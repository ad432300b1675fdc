/* backoff.c: see backoff.h. */
#include "backoff.h"

uint64_t backoff_ms(uint32_t *rng, unsigned failures, uint64_t min_ms, uint64_t max_ms)
{
    uint64_t d = min_ms;
    for (unsigned i = 1; i < failures && d < max_ms; i++)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    /* xorshift32: jitter needs spread, not secrecy. */
    uint32_t x = *rng ? *rng : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *rng = x;
    uint64_t half = d / 2;
    return d - half + (half ? x % (half + 1) : 0);
}
