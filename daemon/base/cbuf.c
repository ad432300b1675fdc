/* cbuf.c: the buffer and CBOR writer of cbuf.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>

#include "cbuf.h"

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("ferry: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fputs("ferry: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fputs("ferry: out of memory\n", stderr);
        abort();
    }
    return p;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

void cbuf_init(struct cbuf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void cbuf_free(struct cbuf *b)
{
    free(b->data);
    cbuf_init(b);
}

void cbuf_reset(struct cbuf *b, size_t keep)
{
    b->len = 0;
    if (b->cap > keep) {
        free(b->data);
        cbuf_init(b);
    }
}

void cbuf_grow(struct cbuf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void cbuf_put(struct cbuf *b, const void *p, size_t n)
{
    cbuf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

void cbuf_consume(struct cbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* Every libcbor header encoder needs at most 9 bytes. */
#define HDR 9

void cbuf_uint(struct cbuf *b, uint64_t v)
{
    cbuf_reserve(b, HDR);
    b->len += cbor_encode_uint(v, b->data + b->len, HDR);
}

void cbuf_int(struct cbuf *b, int64_t v)
{
    cbuf_reserve(b, HDR);
    if (v >= 0)
        b->len += cbor_encode_uint((uint64_t)v, b->data + b->len, HDR);
    else
        b->len += cbor_encode_negint((uint64_t)(-(v + 1)), b->data + b->len, HDR);
}

void cbuf_bytes(struct cbuf *b, const void *p, size_t n)
{
    cbuf_reserve(b, HDR + n);
    b->len += cbor_encode_bytestring_start(n, b->data + b->len, HDR);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

void cbuf_text(struct cbuf *b, const char *p, size_t n)
{
    cbuf_reserve(b, HDR + n);
    b->len += cbor_encode_string_start(n, b->data + b->len, HDR);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

void cbuf_str(struct cbuf *b, const char *s) { cbuf_text(b, s, strlen(s)); }

void cbuf_array(struct cbuf *b, size_t n)
{
    cbuf_reserve(b, HDR);
    b->len += cbor_encode_array_start(n, b->data + b->len, HDR);
}

void cbuf_map(struct cbuf *b, size_t n)
{
    cbuf_reserve(b, HDR);
    b->len += cbor_encode_map_start(n, b->data + b->len, HDR);
}

void cbuf_null(struct cbuf *b)
{
    cbuf_reserve(b, 1);
    b->len += cbor_encode_null(b->data + b->len, 1);
}

void cbuf_bool(struct cbuf *b, bool v)
{
    cbuf_reserve(b, 1);
    b->len += cbor_encode_bool(v, b->data + b->len, 1);
}

void cbuf_double(struct cbuf *b, double v)
{
    cbuf_reserve(b, HDR);
    b->len += cbor_encode_double(v, b->data + b->len, HDR);
}

void cbuf_patch_len(struct cbuf *b, size_t at)
{
    size_t n = b->len - at - 4;
    b->data[at] = (uint8_t)(n >> 24);
    b->data[at + 1] = (uint8_t)(n >> 16);
    b->data[at + 2] = (uint8_t)(n >> 8);
    b->data[at + 3] = (uint8_t)n;
}
