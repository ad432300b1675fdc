/* span.h: the span model, the bottom layer of telemetry: one span's
 * record (struct span and its span_data), its attributes, and shapes.
 * Recording a span here touches no exporter, no settings and no loop, so
 * the request-facing layer (reqtrace.c), the batcher (tracer.c) and the
 * encoder (otlp_batch.c) all build on it, and it on nothing of theirs. */
#ifndef FERRY_SPAN_H
#define FERRY_SPAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trace_context.h"

#define SPAN_MAX_ATTRS 20
#define SPAN_ARENA 768
#define SPAN_NAME_MAX 96

enum span_kind { SK_INTERNAL = 1, SK_SERVER = 2, SK_CLIENT = 3, SK_PRODUCER = 4, SK_CONSUMER = 5 };
enum span_attr_type { SA_STR, SA_INT, SA_BOOL };

struct span_attr {
    const char *key;      /* refers: a static string */
    uint8_t type;
    int64_t i;            /* SA_INT, SA_BOOL */
    uint16_t off, len;    /* SA_STR: bytes in the span's arena */
};

/* What most spans never touch: a span that uses a shape keeps its
 * attributes there, and a status message or trace state is rare. Kept
 * apart from struct span so that the records every span touches are small
 * and dense: the pool runs to megabytes, and cache and TLB misses on
 * large records dominate what recording a span costs. */
struct span_data {
    char name[SPAN_NAME_MAX];
    struct span_attr attrs[SPAN_MAX_ATTRS];
    char arena[SPAN_ARENA];
    char status_msg[160];
    char trace_state[512];
};

struct span_shape;

/* One span, recorded in place. */
struct span {
    /* refers: when set, the span's name, kind and attributes are the
     * shape's, and its own are unused (see span_use_shape) */
    const struct span_shape *shape;
    struct span_data *d;  /* refers: this record's data, in the pool */
    const char *name;     /* refers: a static string, or d->name */
    struct trace_ctx ctx; /* its trace id, its own span id, its flags */
    uint8_t parent_id[8];
    bool has_parent;
    bool error;           /* then d->status_msg holds the status message */
    uint8_t kind;
    uint8_t nattrs;       /* in d->attrs, values in d->arena */
    uint16_t arena_used;
    uint16_t trace_state_len; /* 0: no trace state (d->trace_state is stale) */
    uint64_t start_ns, end_ns; /* Unix time */
};

void span_set_name(struct span *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Names s with the first n bytes of name (copied). */
void span_copy_name(struct span *s, const char *name, size_t n);
/* Attributes: key is a static string, set at most once per span. String
 * values are copied (up to the span's arena). */
void span_attr_str(struct span *s, const char *key, const char *v, size_t n);
void span_attr_cstr(struct span *s, const char *key, const char *v);
void span_attr_int(struct span *s, const char *key, int64_t v);
void span_attr_bool(struct span *s, const char *key, bool v);
/* Marks s failed: error.type is error_type, and the status message is
 * message, or error_type when message is NULL. */
void span_set_error(struct span *s, const char *error_type, const char *message);
/* The traceparent naming s as the parent, for propagation. */
void span_traceparent(const struct span *s, char out[TRACEPARENT_LEN + 1]);

/* Shapes. Many spans share their name, kind and attributes (a Redis GET
 * to one server, say); recording a shape by reference instead of copying
 * the attributes, and packing it once for export, is most of what makes
 * tracing cheap. span_use_shape() gives s a shape; setting a name or an
 * attribute on s afterwards first copies the shape's into s
 * (span_materialize), so an error can still be added. */
void span_use_shape(struct span *s, const struct span_shape *shape);
void span_materialize(struct span *s);

#define SPAN_SHAPE_BUCKETS 256

/* The interned shapes: bounded, since names and attributes can come from
 * clients. Shapes live until span_shapes_free, so the encoder may key its
 * templates by a shape's address. */
struct span_shapes {
    struct span_shape *b[SPAN_SHAPE_BUCKETS]; /* owns: chained */
    size_t n;
};
/* The shape of what s has recorded so far (its own when it has one),
 * interned in h; NULL when the table is full. */
const struct span_shape *span_shapes_intern(struct span_shapes *h, const struct span *s);
void span_shapes_free(struct span_shapes *h);

#endif
