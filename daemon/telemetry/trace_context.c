/* trace_context.c: see trace_context.h. */
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "trace_context.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is invalid by the spec */
}

static bool hex_decode(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
        if (h < 0 || l < 0)
            return false;
        out[i] = (uint8_t)(h << 4 | l);
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

bool trace_ctx_parse(const char *s, size_t len, struct trace_ctx *out)
{
    uint8_t version;
    if (len < TRACEPARENT_LEN || !hex_decode(s, 1, &version) || version == 0xff)
        return false;
    if (version == 0 && len != TRACEPARENT_LEN)
        return false;
    if (len > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != '-')
        return false;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return false;
    if (!hex_decode(s + 3, 16, out->trace_id) || !hex_decode(s + 36, 8, out->span_id) ||
        !hex_decode(s + 53, 1, &out->flags))
        return false;
    return !all_zero(out->trace_id, 16) && !all_zero(out->span_id, 8);
}

void hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void trace_ctx_format(const struct trace_ctx *c, char *out)
{
    memcpy(out, "00-", 3);
    hex_encode(c->trace_id, 16, out + 3);
    out[35] = '-';
    hex_encode(c->span_id, 8, out + 36);
    out[52] = '-';
    hex_encode(&c->flags, 1, out + 53);
}

/* wyrand (Wang Yi's generator), seeded once from getrandom(): ids need
 * to be unique and unpredictable enough not to collide, not secret; a
 * syscall per id would cost more than the span. One multiply per word:
 * xorshift128+ made the ids the largest single cost of adding a span. */
static uint64_t state;
static bool seeded;

static void seed(void)
{
    uint64_t seed[2] = {0, 0};
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
        seed[1] = (uint64_t)ts.tv_sec * 0x9e3779b97f4a7c15ull;
    }
    state = seed[0] ^ seed[1];
    seeded = true;
}

/* Works on a copy of the state, so that a span's three words cost three
 * steps in registers, not loads and stores of the global. */
static inline uint64_t next(uint64_t *s)
{
    *s += 0xa0761d6478bd642full;
    __uint128_t m = (__uint128_t)*s * (*s ^ 0xe7037ed1a0b428dbull);
    return (uint64_t)(m >> 64) ^ (uint64_t)m;
}

void trace_new_ids(uint8_t *trace_id, uint8_t *span_id)
{
    if (__builtin_expect(!seeded, 0))
        seed();
    uint64_t s = state, a, b, c;
    /* An all-zero id is invalid; with 64 random bits per word, retrying
     * is the whole cost of ruling it out. */
    if (trace_id) {
        do {
            a = next(&s);
            b = next(&s);
        } while (!(a | b));
        memcpy(trace_id, &a, 8);
        memcpy(trace_id + 8, &b, 8);
    }
    do
        c = next(&s);
    while (!c);
    state = s;
    memcpy(span_id, &c, 8);
}

void trace_random_id(uint8_t *p, size_t n)
{
    uint8_t span[8];
    while (n >= 16) {
        trace_new_ids(p, span);
        p += 16;
        n -= 16;
    }
    while (n) {
        trace_new_ids(NULL, span);
        size_t k = n < 8 ? n : 8;
        memcpy(p, span, k);
        p += k;
        n -= k;
    }
}
