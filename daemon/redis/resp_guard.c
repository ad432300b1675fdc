/* resp_guard.c: see resp_guard.h.
 *
 * A reply is a tree of items; `need` counts the items still to start before
 * the reply is complete (one at first, plus each aggregate's count), which
 * is all skipping needs, at any depth. While not skipping, `left` also keeps
 * the children still to start of each open aggregate, so the guard knows
 * the depth at which the next item opens. */
#include <string.h>

#include "resp_guard.h"

/* Header numbers past this are saturated: no real count or length gets
 * near it, and a reply announcing one is refused on its size anyway. */
#define NUM_CAP ((uint64_t)1 << 50)

void resp_guard_init(struct resp_guard *g, size_t max_bytes, size_t max_elements)
{
    memset(g, 0, sizeof(*g));
    g->max_bytes = max_bytes;
    g->max_elements = max_elements;
    resp_guard_reset(g);
}

void resp_guard_reset(struct resp_guard *g)
{
    size_t mb = g->max_bytes, me = g->max_elements;
    resp_guard_wanted_fn w = g->wanted;
    void *ctx = g->ctx;
    memset(g, 0, sizeof(*g));
    g->max_bytes = mb;
    g->max_elements = me;
    g->wanted = w;
    g->ctx = ctx;
    g->phase = RG_TYPE;
    g->why = RESP_GUARD_OK;
}

const char *resp_guard_reason(enum resp_guard_why why)
{
    switch (why) {
    case RESP_GUARD_TOO_DEEP:
        return "too deep";
    case RESP_GUARD_TOO_LARGE:
        return "too large";
    case RESP_GUARD_PROTOCOL:
        return "not RESP2";
    case RESP_GUARD_UNWANTED:
        return "unwanted";
    default:
        return "ok";
    }
}

static size_t refuse(struct resp_guard *g, enum resp_guard_why why, size_t at)
{
    g->skipping = true;
    g->why = why;
    return at;
}

/* An item has ended. Returns true when it ended its reply. */
static bool item_done(struct resp_guard *g)
{
    g->phase = RG_TYPE;
    if (!g->skipping)
        while (g->depth && g->left[g->depth - 1] == 0)
            g->depth--;
    if (g->need)
        return false;
    g->bytes = 0;
    g->elements = 0;
    g->depth = 0;
    g->skipping = false;
    g->why = RESP_GUARD_OK;
    return true;
}

static size_t broken(struct resp_guard *g, size_t n)
{
    g->skipping = false;
    g->why = RESP_GUARD_PROTOCOL;
    return n;
}

/* The common case in one pass with no state kept: a whole reply that is
 * not an array (GET's bulk string or nil, SET's +OK, INCR's integer) lies
 * in the buffer. Returns its length, or 0 to take the general path, which
 * also refuses what must be refused. */
static size_t whole_simple_reply(struct resp_guard *g, const char *p, size_t n)
{
    size_t total;
    if (p[0] == '$') {
        size_t j = 1;
        uint64_t len = 0;
        bool nil = j < n && p[j] == '-';
        j += nil;
        size_t digits = j;
        while (j < n && (unsigned)(unsigned char)p[j] - '0' <= 9 && len < NUM_CAP)
            len = len * 10 + (uint64_t)((unsigned char)p[j++] - '0');
        if (j == digits || j + 1 >= n || p[j] != '\r' || p[j + 1] != '\n')
            return 0;
        total = nil ? j + 2 : j + 2 + len + 2;
        if (!nil && len > n)
            return 0;
    } else if (p[0] == '+' || p[0] == ':' || p[0] == '-') {
        /* Ends at "\r\n", as hiredis's reader has it: a bare '\n' is part
         * of the line. */
        const char *nl = memchr(p, '\n', n);
        while (nl && (nl == p || nl[-1] != '\r'))
            nl = memchr(nl + 1, '\n', n - (size_t)(nl + 1 - p));
        if (!nl)
            return 0;
        total = (size_t)(nl - p) + 1;
    } else {
        return 0;
    }
    if (total > n || total > g->max_bytes || (g->wanted && !g->wanted(g->ctx, g->replies)))
        return 0;
    g->replies++;
    return total;
}

size_t resp_guard_scan(struct resp_guard *g, const char *p, size_t n)
{
    if (g->why == RESP_GUARD_PROTOCOL)
        return n;
    const bool was_skipping = g->skipping;
    size_t i = 0;
    while (i < n) {
        if (g->phase == RG_PAYLOAD) {
            uint64_t k = g->payload_left < n - i ? g->payload_left : n - i;
            i += (size_t)k;
            g->bytes += k;
            g->payload_left -= k;
            if (g->payload_left == 0 && item_done(g) && was_skipping)
                return i;
            continue;
        }
        if (g->phase == RG_TYPE) {
            if (g->need == 0 && !g->skipping) {
                size_t k = whole_simple_reply(g, p + i, n - i);
                if (k) {
                    i += k;
                    continue;
                }
            }
            char t = p[i];
            if (t != '$' && t != '*' && t != ':' && t != '+' && t != '-')
                return broken(g, n);
            if (g->need == 0) { /* a new reply */
                g->need = 1;
                if (!g->skipping && g->wanted && !g->wanted(g->ctx, g->replies++))
                    return refuse(g, RESP_GUARD_UNWANTED, i);
            }
            if (!g->skipping) {
                if (t == '*' && g->depth == RESP_GUARD_MAX_NESTING)
                    return refuse(g, RESP_GUARD_TOO_DEEP, i);
                if (g->bytes + 1 > g->max_bytes)
                    return refuse(g, RESP_GUARD_TOO_LARGE, i);
                if (g->depth)
                    g->left[g->depth - 1]--;
            }
            g->need--;
            g->type = t;
            g->neg = g->digits = g->cr = false;
            g->num = 0;
            g->phase = RG_LINE;
            i++;
            g->bytes++;
            continue;
        }
        /* RG_LINE */
        if (g->type == '+' || g->type == '-' || g->type == ':') {
            /* The line ends at "\r\n", the '\r' perhaps in an earlier
             * chunk (g->cr). */
            const char *nl = memchr(p + i, '\n', n - i);
            while (nl && !(nl == p + i ? g->cr : nl[-1] == '\r'))
                nl = memchr(nl + 1, '\n', n - (size_t)(nl + 1 - p));
            size_t k = nl ? (size_t)(nl - (p + i)) + 1 : n - i;
            if (!nl)
                g->cr = p[n - 1] == '\r';
            if (!g->skipping && g->bytes + k > g->max_bytes)
                return refuse(g, RESP_GUARD_TOO_LARGE, i);
            i += k;
            g->bytes += k;
            if (nl && item_done(g) && was_skipping)
                return i;
            continue;
        }
        /* A '$' or '*' header: its number, in a tight loop, since every
         * reply has one. */
        size_t from = i;
        uint64_t num = g->num;
        while (i < n) {
            unsigned d = (unsigned)(unsigned char)p[i] - '0';
            if (d > 9)
                break;
            num = num >= NUM_CAP ? NUM_CAP : num * 10 + d;
            i++;
        }
        if (i > from)
            g->digits = true;
        g->num = num;
        g->bytes += i - from;
        if (i == n)
            break;
        char ch = p[i];
        if (ch == '\r' || (ch == '-' && !g->digits && !g->neg)) {
            g->neg |= ch == '-';
            i++;
            g->bytes++;
            continue;
        }
        if (ch != '\n')
            return broken(g, n);
        if (!g->digits)
            return broken(g, n);
        if (!g->skipping && !g->neg) {
            /* Refused before the reader sees the line's end, so it never
             * allocates what the header announces. */
            if (g->type == '$' && g->bytes + 1 + num + 2 > g->max_bytes)
                return refuse(g, RESP_GUARD_TOO_LARGE, i);
            if (g->type == '*' &&
                (g->elements + num > g->max_elements || g->bytes + 1 + 3 * num > g->max_bytes))
                return refuse(g, RESP_GUARD_TOO_LARGE, i);
        }
        i++;
        g->bytes++;
        if (g->neg || (g->type == '*' && num == 0)) {
            if (item_done(g) && was_skipping)
                return i;
        } else if (g->type == '$') {
            g->payload_left = num + 2;
            g->phase = RG_PAYLOAD;
        } else {
            g->need = g->need + num > NUM_CAP ? NUM_CAP : g->need + num;
            g->elements += num;
            if (!g->skipping)
                g->left[g->depth++] = (int64_t)num;
            g->phase = RG_TYPE;
        }
    }
    return i;
}
