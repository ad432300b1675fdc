/* blocking_timeout.c: the timeout argument of blocking commands
 * (blocking_timeout.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "blocking_timeout.h"

static bool is(const char *a, size_t n, const char *word)
{
    return strlen(word) == n && !strncasecmp(a, word, n);
}

/* Where the timeout sits, by command: last for the classic list and zset
 * pops, second for the B*MPOPs, third for WAIT. */
enum where { W_NONE, W_LAST, W_SECOND, W_WAIT, W_XREAD, W_XREADGROUP };

static enum where where_of(const char *name, size_t n)
{
    static const char *const last[] = {"BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BZPOPMIN", "BZPOPMAX"};
    for (size_t i = 0; i < sizeof(last) / sizeof(last[0]); i++)
        if (is(name, n, last[i]))
            return W_LAST;
    if (is(name, n, "BLMPOP") || is(name, n, "BZMPOP"))
        return W_SECOND;
    if (is(name, n, "WAIT"))
        return W_WAIT;
    if (is(name, n, "XREAD"))
        return W_XREAD;
    if (is(name, n, "XREADGROUP"))
        return W_XREADGROUP;
    return W_NONE;
}

bool blocking_timeout_is_blocking(const char *name, size_t len)
{
    return where_of(name, len) != W_NONE || is(name, len, "WAITAOF");
}

/* Parses a timeout as Redis does (a decimal, not negative), into ms. */
static const char *parse(const char *p, size_t n, enum blocking_unit u, struct blocking_timeout *t)
{
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp))
        return "the timeout is not a number";
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    char *end;
    double v;
    if (u == BU_MILLIS) {
        /* Redis takes whole milliseconds here. */
        for (size_t i = 0; i < n; i++)
            if (tmp[i] < '0' || tmp[i] > '9')
                return "the timeout must be a whole, non-negative number of milliseconds";
        v = strtod(tmp, &end);
    } else {
        v = strtod(tmp, &end);
        if (*end || !isfinite(v))
            return "the timeout is not a number";
        if (v < 0)
            return "the timeout is negative";
        v *= 1000.0;
    }
    t->forever = v == 0;
    t->ms = v;
    return NULL;
}

/* XREAD [COUNT n] [BLOCK ms] STREAMS ..., XREADGROUP GROUP g c [COUNT n]
 * [BLOCK ms] [NOACK] STREAMS ...: the BLOCK option's value, if any. */
static const char *find_block(int argc, const char *const *argv, const size_t *lens, int from, int *at)
{
    *at = -1;
    for (int i = from; i < argc; i++) {
        if (is(argv[i], lens[i], "STREAMS"))
            return NULL;
        if (is(argv[i], lens[i], "COUNT") || is(argv[i], lens[i], "BLOCK")) {
            if (i + 1 >= argc)
                return "an option lacks its value";
            if (is(argv[i], lens[i], "BLOCK"))
                *at = i + 1;
            i++;
        } else if (!is(argv[i], lens[i], "NOACK")) {
            return "unexpected argument before STREAMS";
        }
    }
    return "STREAMS is missing";
}

const char *blocking_timeout_find(int argc, const char *const *argv, const size_t *lens,
                                  struct blocking_timeout *t)
{
    if (argc < 1)
        return "the command is empty";
    int at = -1;
    enum blocking_unit u = BU_SECONDS;
    const char *bad;
    switch (where_of(argv[0], lens[0])) {
    case W_NONE:
        return "not a blocking command: send it with the redis op";
    case W_LAST:
        if (argc < 3)
            return "wrong number of arguments";
        at = argc - 1;
        break;
    case W_SECOND:
        if (argc < 5)
            return "wrong number of arguments";
        at = 1;
        break;
    case W_WAIT:
        if (argc != 3)
            return "wrong number of arguments";
        at = 2;
        u = BU_MILLIS;
        break;
    case W_XREAD:
    case W_XREADGROUP: {
        int from = 1;
        if (where_of(argv[0], lens[0]) == W_XREADGROUP) {
            if (argc < 4 || !is(argv[1], lens[1], "GROUP"))
                return "XREADGROUP needs GROUP group consumer";
            from = 4;
        }
        if ((bad = find_block(argc, argv, lens, from, &at)))
            return bad;
        if (at < 0)
            return "not a blocking command without BLOCK: send it with the redis op";
        u = BU_MILLIS;
        break;
    }
    }
    t->index = at;
    t->unit = u;
    return parse(argv[at], lens[at], u, t);
}

size_t blocking_timeout_cap(const struct blocking_timeout *t, uint64_t cap_ms, char *buf, size_t len)
{
    if (cap_ms < 1)
        cap_ms = 1;
    if (!t->forever && t->ms <= (double)cap_ms)
        return 0;
    int n;
    if (t->unit == BU_MILLIS)
        n = snprintf(buf, len, "%llu", (unsigned long long)cap_ms);
    else
        n = snprintf(buf, len, "%llu.%03u", (unsigned long long)(cap_ms / 1000), (unsigned)(cap_ms % 1000));
    return n > 0 && (size_t)n < len ? (size_t)n : 0;
}
