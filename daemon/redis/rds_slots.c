/* rds_slots.c: see rds_slots.h. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rds_slots.h"

/* CRC16-CCITT (XMODEM), the variant Redis Cluster uses (polynomial
 * 0x1021, initial value 0), a byte at a time through a table that is
 * computed from the polynomial at first use rather than written out:
 * the bitwise loop, at eight steps a byte, was a tenth of ferryd's time
 * routing GETs. */
static uint16_t crc_table[256];
static bool crc_ready;

static void crc_init(void)
{
    for (int i = 0; i < 256; i++) {
        uint16_t crc = (uint16_t)(i << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
        crc_table[i] = crc;
    }
    crc_ready = true;
}

uint16_t rds_slots_crc16(const char *p, size_t len)
{
    if (!crc_ready)
        crc_init();
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc_table[((crc >> 8) ^ (uint8_t)p[i]) & 0xff]);
    return crc;
}

int rds_slots_of(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(key + from, '}', len - from);
        if (close && close > key + from)
            return rds_slots_crc16(key + from, (size_t)(close - (key + from))) & (RDS_SLOTS - 1);
    }
    return rds_slots_crc16(key, len) & (RDS_SLOTS - 1);
}

/* One node entry of CLUSTER SLOTS: [host, port, id, (metadata)]. */
static int parse_node(const redisReply *e, const char *fallback, struct rds_slots_node *n)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[1]->type != REDIS_REPLY_INTEGER)
        return -1;
    const redisReply *h = e->element[0];
    if (h->len == 0 || (h->len == 1 && h->str[0] == '?'))
        snprintf(n->host, sizeof(n->host), "%s", fallback);
    else if (h->len < sizeof(n->host))
        snprintf(n->host, sizeof(n->host), "%.*s", (int)h->len, h->str);
    else
        return -1;
    if (e->element[1]->integer <= 0 || e->element[1]->integer > 65535)
        return -1;
    n->port = (int)e->element[1]->integer;
    n->id[0] = '\0';
    if (e->elements > 2 && e->element[2]->type == REDIS_REPLY_STRING && e->element[2]->len < sizeof(n->id))
        snprintf(n->id, sizeof(n->id), "%.*s", (int)e->element[2]->len, e->element[2]->str);
    return 0;
}

int rds_slots_parse(const redisReply *reply, const char *fallback_host, struct rds_slots_map *m, char *why,
                    size_t len)
{
    m->range = NULL;
    m->n = 0;
    if (reply->type != REDIS_REPLY_ARRAY) {
        snprintf(why, len, "CLUSTER SLOTS did not answer an array");
        return -1;
    }
    if (reply->elements == 0) {
        snprintf(why, len, "no slot is assigned yet");
        return -1;
    }
    m->range = calloc(reply->elements, sizeof(*m->range));
    if (!m->range)
        abort();
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        struct rds_slots_range *r = &m->range[m->n];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER) {
            snprintf(why, len, "entry %zu of CLUSTER SLOTS is malformed", i);
            goto bad;
        }
        long long a = e->element[0]->integer, b = e->element[1]->integer;
        if (a < 0 || b < a || b >= RDS_SLOTS) {
            snprintf(why, len, "entry %zu of CLUSTER SLOTS has the range %lld-%lld", i, a, b);
            goto bad;
        }
        r->start = (int)a;
        r->end = (int)b;
        if (parse_node(e->element[2], fallback_host, &r->primary) != 0) {
            snprintf(why, len, "entry %zu of CLUSTER SLOTS has a malformed primary", i);
            goto bad;
        }
        for (size_t k = 3; k < e->elements && r->nreplicas < RDS_SLOTS_MAX_REPLICAS; k++)
            if (parse_node(e->element[k], fallback_host, &r->replica[r->nreplicas]) == 0)
                r->nreplicas++;
        m->n++;
    }
    return 0;
bad:
    rds_slots_free(m);
    return -1;
}

void rds_slots_free(struct rds_slots_map *m)
{
    free(m->range);
    m->range = NULL;
    m->n = 0;
}

enum rds_redirect rds_slots_redirect(const char *err, size_t len, int *slot, char *host, size_t hostlen,
                                     int *port)
{
    enum rds_redirect kind;
    size_t at;
    if (len > 6 && !memcmp(err, "MOVED ", 6)) {
        kind = RDS_REDIRECT_MOVED;
        at = 6;
    } else if (len > 4 && !memcmp(err, "ASK ", 4)) {
        kind = RDS_REDIRECT_ASK;
        at = 4;
    } else {
        return RDS_REDIRECT_NONE;
    }
    long s = 0;
    size_t digits = 0;
    while (at < len && err[at] >= '0' && err[at] <= '9' && digits < 6) {
        s = s * 10 + (err[at++] - '0');
        digits++;
    }
    if (!digits || s >= RDS_SLOTS || at >= len || err[at] != ' ')
        return RDS_REDIRECT_NONE;
    at++;
    /* host:port, the port after the last colon (an IPv6 host has more). */
    size_t end = len;
    size_t colon = end;
    for (size_t i = at; i < end; i++)
        if (err[i] == ':')
            colon = i;
    if (colon == end || colon - at >= hostlen)
        return RDS_REDIRECT_NONE;
    long p = 0;
    for (size_t i = colon + 1; i < end; i++) {
        if (err[i] < '0' || err[i] > '9' || p > 65535)
            return RDS_REDIRECT_NONE;
        p = p * 10 + (err[i] - '0');
    }
    if (p <= 0 || p > 65535)
        return RDS_REDIRECT_NONE;
    memcpy(host, err + at, colon - at);
    host[colon - at] = '\0';
    *slot = (int)s;
    *port = (int)p;
    return kind;
}
