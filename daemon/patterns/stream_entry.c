/* stream_entry.c: stream entries between CBOR and Redis (stream_entry.h). */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "stream_entry.h"

static bool is_str(const struct tok *t)
{
    return t->type == TOK_TEXT || t->type == TOK_BYTES;
}

/* Walks the fields item, storing each pair when argv is not NULL.
 * Returns the number of pairs, or -1 with msg set. */
static int walk(const uint8_t *p, size_t n, const char **argv, size_t *lens, char *msg, size_t msglen)
{
    static const char shape[] = "'fields' must be a map of strings to strings, or an array of [name, value] "
                                "string pairs";
    struct cursor c = {p, n, 0};
    struct tok t;
    if (cursor_next(&c, &t) || (t.type != TOK_MAP && t.type != TOK_ARRAY)) {
        snprintf(msg, msglen, "%s", shape);
        return -1;
    }
    if (t.u == 0) {
        snprintf(msg, msglen, "'fields' must hold at least one field");
        return -1;
    }
    if (t.u > STREAM_ENTRY_MAX_PAIRS) {
        snprintf(msg, msglen, "'fields' may hold at most %d fields", STREAM_ENTRY_MAX_PAIRS);
        return -1;
    }
    bool pairs = t.type == TOK_ARRAY;
    for (uint64_t i = 0; i < t.u; i++) {
        struct tok k, v, pair;
        if (pairs && (cursor_next(&c, &pair) || pair.type != TOK_ARRAY || pair.u != 2)) {
            snprintf(msg, msglen, "%s", shape);
            return -1;
        }
        if (cursor_next(&c, &k) || !is_str(&k) || cursor_next(&c, &v) || !is_str(&v)) {
            snprintf(msg, msglen, "%s", shape);
            return -1;
        }
        if (argv) {
            argv[2 * i] = (const char *)k.p;
            lens[2 * i] = k.n;
            argv[2 * i + 1] = (const char *)v.p;
            lens[2 * i + 1] = v.n;
        }
    }
    return (int)t.u;
}

int stream_entry_count(const uint8_t *p, size_t n, char *msg, size_t msglen)
{
    return walk(p, n, NULL, NULL, msg, msglen);
}

void stream_entry_fields(const uint8_t *p, size_t n, const char **argv, size_t *lens)
{
    char msg[8];
    (void)walk(p, n, argv, lens, msg, sizeof(msg));
}

static bool is_bulk(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

/* Text when it is UTF-8 (what clients expect of names), bytes otherwise. */
static void put_name(struct cbuf *o, const char *p, size_t n)
{
    if (utf8_valid((const uint8_t *)p, n))
        cbuf_text(o, p, n);
    else
        cbuf_bytes(o, p, n);
}

/* Whether a field name occurs twice among the pairs of f. */
static bool repeats(const redisReply *f)
{
    for (size_t i = 0; i < f->elements; i += 2)
        for (size_t j = i + 2; j < f->elements; j += 2)
            if (f->element[i]->len == f->element[j]->len &&
                !memcmp(f->element[i]->str, f->element[j]->str, f->element[i]->len))
                return true;
    return false;
}

int stream_entry_encode(struct cbuf *o, const char *stream, size_t slen, const redisReply *e,
                        uint64_t deliveries)
{
    if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 2 || !is_bulk(e->element[0]))
        return -1;
    const redisReply *f = e->element[1];
    if (!f || f->type != REDIS_REPLY_ARRAY || f->elements % 2)
        return -1;
    for (size_t i = 0; i < f->elements; i++)
        if (!is_bulk(f->element[i]))
            return -1;
    cbuf_map(o, 4);
    cbuf_str(o, "stream");
    put_name(o, stream, slen);
    cbuf_str(o, "id");
    cbuf_text(o, e->element[0]->str, e->element[0]->len);
    cbuf_str(o, "fields");
    bool as_pairs = repeats(f);
    if (as_pairs)
        cbuf_array(o, f->elements / 2);
    else
        cbuf_map(o, f->elements / 2);
    for (size_t i = 0; i < f->elements; i += 2) {
        if (as_pairs)
            cbuf_array(o, 2);
        put_name(o, f->element[i]->str, f->element[i]->len);
        cbuf_bytes(o, f->element[i + 1]->str, f->element[i + 1]->len);
    }
    cbuf_str(o, "deliveries");
    cbuf_uint(o, deliveries);
    return 0;
}
