/* cbuf.h: a growable byte buffer, and CBOR writing into it with libcbor's
 * encoders. Responses are encoded straight into a client's output buffer,
 * so building one allocates nothing once the buffer has grown. */
#ifndef FERRY_CBUF_H
#define FERRY_CBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cbuf {
    uint8_t *data; /* owns */
    size_t len;    /* bytes in use */
    size_t cap;    /* bytes allocated */
};

void cbuf_init(struct cbuf *b);
void cbuf_free(struct cbuf *b);
/* Empties b and returns memory above keep bytes, so an idle connection that
 * once carried a large value does not hold on to it. */
void cbuf_reset(struct cbuf *b, size_t keep);
/* Makes room for n more bytes; aborts on out-of-memory like the rest of
 * ferryd, since a daemon that cannot allocate a few bytes cannot recover.
 * Inline, since every item written checks for room and almost always has
 * it; cbuf_grow is the rare rest. */
void cbuf_grow(struct cbuf *b, size_t n);
static inline void cbuf_reserve(struct cbuf *b, size_t n)
{
    if (b->cap - b->len < n)
        cbuf_grow(b, n);
}
void cbuf_put(struct cbuf *b, const void *p, size_t n);
/* Drops the first n bytes. */
void cbuf_consume(struct cbuf *b, size_t n);

void cbuf_uint(struct cbuf *b, uint64_t v);
void cbuf_int(struct cbuf *b, int64_t v);
void cbuf_bytes(struct cbuf *b, const void *p, size_t n);
void cbuf_text(struct cbuf *b, const char *p, size_t n);
void cbuf_str(struct cbuf *b, const char *s);
void cbuf_array(struct cbuf *b, size_t n);
void cbuf_map(struct cbuf *b, size_t n);
void cbuf_null(struct cbuf *b);
void cbuf_bool(struct cbuf *b, bool v);
void cbuf_double(struct cbuf *b, double v);

/* Writes the 4-byte big-endian length prefix at offset at, for a frame whose
 * body runs from at+4 to the end of b. */
void cbuf_patch_len(struct cbuf *b, size_t at);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

#endif
