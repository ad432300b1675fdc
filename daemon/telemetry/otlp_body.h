/* otlp_body.h: an OTLP request body, ready to send, and how it is read
 * out (by the HTTP client, possibly more than once). Its entries and
 * templates are written by otlp_trace_encode.c, so their layout is here
 * too. Pure: no I/O. */
#ifndef FERRY_OTLP_BODY_H
#define FERRY_OTLP_BODY_H

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cbuf.h"

/* Bytes of a template at most: a span that packs larger is packed whole
 * (its reader keeps one on the stack when it is split across reads). */
#define TPL_MAX 4096

/* Where a template's fixed-width fields sit, in the order of struct
 * span_vars: trace id, span id, parent span id, start, end, flags. */
enum { AT_TRACE, AT_SPAN, AT_PARENT, AT_START, AT_END, AT_FLAGS, AT_N };

/* A span packed once with sentinel ids, times and flags: the packed bytes
 * of every span of the same shape (name, kind, status, attributes), with
 * those fixed-width fields overwritten. Batches refer to templates until
 * their bodies are sent, so a template is counted: the cache's slot holds
 * it, and so does each body that uses it (see otlp_body_tpl_release). */
struct span_tpl {
    uint8_t *bytes;      /* owns */
    size_t len;          /* at most TPL_MAX */
    uint32_t at[AT_N];
    bool has_parent;
    bool cached;         /* a cache slot holds it */
    unsigned refs;       /* bodies that hold it */
    uint64_t last_batch; /* the last batch that took a reference */
};

/* Drops a reference on t (from_cache: the cache's) and frees t once
 * neither the cache nor a body holds it. */
void otlp_body_tpl_release(struct span_tpl *t, bool from_cache);

/* One span of a body: from a template and its values, or packed whole. */
struct otlp_entry {
    struct span_tpl *t;      /* refers (the body holds a reference); NULL: packed whole */
    union {
        struct {             /* t: written over its sentinels, in the order of enum AT_ */
            uint8_t trace_id[16], span_id[8], parent_id[8]; /* unset when draw */
            uint64_t start, end;
            uint32_t flags;
            bool draw;       /* a root span's ids are drawn as it is written out */
        } v;
        struct {             /* !t: its bytes in the body's whole buffer */
            size_t off, len;
        } w;
    };
};

/* fixed64 and fixed32 are little-endian on the wire. */
static inline void otlp_body_put_le64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}

static inline void otlp_body_put_le32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

/* A request body, ready to send. Flat (head alone: metrics, gzip), or a
 * batch of spans: head holds the envelope, and the spans are written out
 * as the body is read (otlp_body_read), each from its template and the
 * few values that differ, straight into the HTTP client's buffer. See
 * "batches" in otlp_trace_encode.c. */
struct otlp_body {
    struct cbuf head;        /* the body's first bytes */
    struct cbuf whole;       /* spans packed whole (framed), which entries point into */
    struct otlp_entry *e;    /* owns: the spans in order, e[0..ne) */
    size_t ne, cap;
    struct span_tpl **tpls;  /* owns the array and a reference on each template in it */
    size_t ntpls, ctpls;
    size_t len;              /* bytes of the whole body */
    bool gzip;               /* head is the body gzip-compressed */
    uint64_t id_seed[3];     /* random: the ids of entries that draw them (see "ids") */
};
/* Where a reader of a body is. Zeroed: at the start. */
struct otlp_cursor {
    size_t pos;              /* bytes read */
    size_t i;                /* the entry being read */
    size_t in;               /* bytes of it read */
};
void otlp_body_init(struct otlp_body *b);
/* A flat body of bytes (taken). */
void otlp_body_from(struct otlp_body *b, struct cbuf *bytes);
/* Writes up to cap of b's next bytes to dst; returns how many (0 at the
 * end). */
size_t otlp_body_read(const struct otlp_body *b, struct otlp_cursor *c, uint8_t *dst, size_t cap);
/* Places c at byte off of b; false past the end. */
bool otlp_body_seek(const struct otlp_body *b, struct otlp_cursor *c, size_t off);
/* Makes b flat: every byte in head. */
void otlp_body_flatten(struct otlp_body *b);
/* Makes b flat and gzip-compressed. Returns 0, or -1 (b is then flat
 * and uncompressed). */
int otlp_body_gzip(struct otlp_body *b) __attribute__((warn_unused_result));
/* Empties b, keeping its memory for another batch. */
void otlp_body_clear(struct otlp_body *b);
void otlp_body_free(struct otlp_body *b);

#endif
