/* otlp_body.c: see otlp_body.h. */
#include <stdlib.h>
#include <string.h>

#include "otlp_body.h"
#include "otlp_pb.h"

/* Frees t once neither the cache nor a body holds it. */
void otlp_body_tpl_release(struct span_tpl *t, bool from_cache)
{
    if (!t)
        return;
    if (from_cache)
        t->cached = false;
    else
        t->refs--;
    if (!t->cached && !t->refs) {
        free(t->bytes);
        free(t);
    }
}

/* ids: a root span's ids are new random ones that nothing has seen
 * before it is exported, so instead of drawing them as it ends and
 * keeping them in its entry, the i-th entry's three words are a
 * bijective mix of i plus the body's three random seeds. They come out
 * the same on every reading of the body (curl reads it again for a
 * retry), are unique within the body, and are never zero: each seed is
 * below 2^63 with its low bit set, so seed + i is not zero for any i, and
 * the mix (MurmurHash3's finalizer) maps only zero to zero. Drawing them
 * at add time and carrying them in the entry cost more per span (see
 * docs/performance.md, "root span ids drawn at write-out"). */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ x >> 33;
}


static inline void put_entry_values(uint8_t *p, const struct span_tpl *t, const struct otlp_entry *e,
                                    const uint64_t *seed, size_t i)
{
    if (e->v.draw) {
        uint64_t w[3] = {mix64(seed[0] + i), mix64(seed[1] + i), mix64(seed[2] + i)};
        memcpy(p + t->at[AT_TRACE], w, 16);
        memcpy(p + t->at[AT_SPAN], w + 2, 8);
    } else {
        memcpy(p + t->at[AT_TRACE], e->v.trace_id, 16);
        memcpy(p + t->at[AT_SPAN], e->v.span_id, 8);
    }
    if (t->has_parent)
        memcpy(p + t->at[AT_PARENT], e->v.parent_id, 8);
    otlp_body_put_le64(p + t->at[AT_START], e->v.start);
    otlp_body_put_le64(p + t->at[AT_END], e->v.end);
    otlp_body_put_le32(p + t->at[AT_FLAGS], e->v.flags);
}

static size_t entry_len(const struct otlp_entry *e) { return e->t ? e->t->len : e->w.len; }

void otlp_body_init(struct otlp_body *b) { memset(b, 0, sizeof(*b)); }

void otlp_body_from(struct otlp_body *b, struct cbuf *bytes)
{
    otlp_body_init(b);
    b->head = *bytes;
    b->len = bytes->len;
    cbuf_init(bytes);
}

size_t otlp_body_read(const struct otlp_body *b, struct otlp_cursor *c, uint8_t *dst, size_t cap)
{
    size_t n = 0;
    if (c->pos < b->head.len) {
        n = b->head.len - c->pos < cap ? b->head.len - c->pos : cap;
        memcpy(dst, b->head.data + c->pos, n);
        c->pos += n;
    }
    while (n < cap && c->i < b->ne) {
        /* Whole templated spans that fit, the common case, without the
         * bookkeeping of the cases below. */
        if (c->in == 0) {
            size_t i = c->i, from = n;
            for (; i < b->ne; i++) {
                const struct otlp_entry *e = &b->e[i];
                const struct span_tpl *t = e->t;
                if (!t || t->len > cap - n)
                    break;
                memcpy(dst + n, t->bytes, t->len);
                put_entry_values(dst + n, t, e, b->id_seed, i);
                n += t->len;
            }
            c->i = i;
            c->pos += n - from;
            if (n == cap || i == b->ne)
                break;
        }
        /* A span packed whole, or a templated one cut across two reads. */
        const struct otlp_entry *e = &b->e[c->i];
        size_t len = entry_len(e), take = len - c->in < cap - n ? len - c->in : cap - n;
        if (!e->t) {
            memcpy(dst + n, b->whole.data + e->w.off + c->in, take);
        } else { /* written out whole here, then cut */
            uint8_t one[TPL_MAX];
            memcpy(one, e->t->bytes, len);
            put_entry_values(one, e->t, e, b->id_seed, c->i);
            memcpy(dst + n, one + c->in, take);
        }
        n += take;
        c->pos += take;
        c->in += take;
        if (c->in == len) {
            c->i++;
            c->in = 0;
        }
    }
    return n;
}

bool otlp_body_seek(const struct otlp_body *b, struct otlp_cursor *c, size_t off)
{
    memset(c, 0, sizeof(*c));
    if (off > b->len)
        return false;
    c->pos = off;
    if (off <= b->head.len)
        return true;
    off -= b->head.len;
    while (c->i < b->ne && off >= entry_len(&b->e[c->i]))
        off -= entry_len(&b->e[c->i++]);
    c->in = off;
    return true;
}

void otlp_body_flatten(struct otlp_body *b)
{
    if (!b->ne)
        return;
    struct cbuf flat;
    cbuf_init(&flat);
    cbuf_reserve(&flat, b->len);
    struct otlp_cursor c = {0};
    flat.len = otlp_body_read(b, &c, flat.data, b->len);
    size_t len = b->len;
    otlp_body_free(b);
    otlp_body_from(b, &flat);
    if (b->len != len)
        abort(); /* the entries' lengths do not add up: a bug */
}

int otlp_body_gzip(struct otlp_body *b)
{
    otlp_body_flatten(b);
    if (otlp_pb_gzip(&b->head) != 0)
        return -1;
    b->len = b->head.len;
    b->gzip = true;
    return 0;
}

void otlp_body_clear(struct otlp_body *b)
{
    for (size_t i = 0; i < b->ntpls; i++)
        otlp_body_tpl_release(b->tpls[i], false);
    b->ntpls = 0;
    b->ne = 0;
    b->len = 0;
    b->gzip = false;
    b->head.len = 0;
    b->whole.len = 0;
    /* Keep the memory a batch of ordinary spans needs, not that of one
     * that carried unusually large ones. */
    if (b->whole.cap > ((size_t)1 << 20))
        cbuf_reset(&b->whole, 0);
}

void otlp_body_free(struct otlp_body *b)
{
    otlp_body_clear(b);
    cbuf_free(&b->head);
    cbuf_free(&b->whole);
    free(b->e);
    free(b->tpls);
    otlp_body_init(b);
}

