/* span.c: recording one span in place, and interning shapes (span.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbuf.h" /* xcalloc */
#include "span.h"

/* Past this many distinct shapes, spans carry their attributes
 * themselves. */
#define MAX_SHAPES 1024

void span_set_name(struct span *s, const char *fmt, ...)
{
    span_materialize(s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->d->name, sizeof(s->d->name), fmt, ap);
    va_end(ap);
    s->name = s->d->name;
}

void span_copy_name(struct span *s, const char *name, size_t n)
{
    span_materialize(s);
    if (n >= sizeof(s->d->name))
        n = sizeof(s->d->name) - 1;
    memcpy(s->d->name, name, n);
    s->d->name[n] = '\0';
    s->name = s->d->name;
}

/* Appends an attribute. Each key is set at most once per span (every
 * caller names its attributes once), so there is no search for an earlier
 * value: spans are recorded on the request path. */
static struct span_attr *attr_slot(struct span *s, const char *key)
{
    span_materialize(s);
    if (s->nattrs == SPAN_MAX_ATTRS)
        return NULL;
    struct span_attr *a = &s->d->attrs[s->nattrs++];
    a->key = key;
    return a;
}

void span_attr_str(struct span *s, const char *key, const char *v, size_t n)
{
    span_materialize(s);
    size_t room = (size_t)SPAN_ARENA - s->arena_used;
    if (n > room)
        n = room;
    struct span_attr *a = attr_slot(s, key);
    if (!a)
        return;
    a->type = SA_STR;
    a->off = s->arena_used;
    a->len = (uint16_t)n;
    memcpy(s->d->arena + s->arena_used, v, n);
    s->arena_used += (uint16_t)n;
}

void span_attr_cstr(struct span *s, const char *key, const char *v) { span_attr_str(s, key, v, strlen(v)); }

void span_attr_int(struct span *s, const char *key, int64_t v)
{
    struct span_attr *a = attr_slot(s, key);
    if (a) {
        a->type = SA_INT;
        a->i = v;
    }
}

void span_attr_bool(struct span *s, const char *key, bool v)
{
    struct span_attr *a = attr_slot(s, key);
    if (a) {
        a->type = SA_BOOL;
        a->i = v;
    }
}

void span_set_error(struct span *s, const char *error_type, const char *message)
{
    s->error = true;
    snprintf(s->d->status_msg, sizeof(s->d->status_msg), "%s", message ? message : error_type);
    span_attr_cstr(s, "error.type", error_type);
}

/* ---- shapes ---- */

struct span_shape {
    struct span_shape *next;  /* in its bucket of span_shapes */
    uint64_t hash;
    uint8_t kind, nattrs;
    uint16_t arena_used;
    char name[SPAN_NAME_MAX];
    struct span_attr attrs[SPAN_MAX_ATTRS];
    char arena[];             /* arena_used bytes */
};

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x9e3779b97f4a7c15ull; }

static uint64_t shape_hash(const struct span *s)
{
    uint64_t h = mix(0x243f6a8885a308d3ull, (uint64_t)s->kind << 8 | s->nattrs);
    for (const char *p = s->name; *p; p++)
        h = mix(h, (uint8_t)*p);
    for (size_t i = 0; i < s->nattrs; i++) {
        const struct span_attr *a = &s->d->attrs[i];
        h = mix(h, (uint64_t)(uintptr_t)a->key ^ a->type);
        h = mix(h, a->type == SA_STR ? a->len : (uint64_t)a->i);
    }
    for (size_t i = 0; i < s->arena_used; i++)
        h = mix(h, (uint8_t)s->d->arena[i]);
    return h ^ h >> 29;
}

/* Keys are static strings: the same key is the same pointer. */
static bool shape_equal(const struct span_shape *sh, const struct span *s)
{
    if (sh->kind != s->kind || sh->nattrs != s->nattrs || sh->arena_used != s->arena_used ||
        strcmp(sh->name, s->name) || memcmp(sh->arena, s->d->arena, s->arena_used))
        return false;
    for (size_t i = 0; i < s->nattrs; i++) {
        const struct span_attr *a = &sh->attrs[i], *b = &s->d->attrs[i];
        if (a->key != b->key || a->type != b->type || a->off != b->off || a->len != b->len ||
            (a->type != SA_STR && a->i != b->i))
            return false;
    }
    return true;
}

const struct span_shape *span_shapes_intern(struct span_shapes *t, const struct span *s)
{
    if (s->shape)
        return s->shape;
    uint64_t h = shape_hash(s);
    struct span_shape **b = &t->b[h % SPAN_SHAPE_BUCKETS];
    for (struct span_shape *sh = *b; sh; sh = sh->next)
        if (sh->hash == h && shape_equal(sh, s))
            return sh;
    if (t->n == MAX_SHAPES)
        return NULL;
    struct span_shape *sh = xcalloc(1, sizeof(*sh) + s->arena_used);
    sh->hash = h;
    sh->kind = s->kind;
    sh->nattrs = s->nattrs;
    sh->arena_used = s->arena_used;
    snprintf(sh->name, sizeof(sh->name), "%s", s->name);
    memcpy(sh->attrs, s->d->attrs, s->nattrs * sizeof(sh->attrs[0]));
    memcpy(sh->arena, s->d->arena, s->arena_used);
    sh->next = *b;
    *b = sh;
    t->n++;
    return sh;
}

void span_use_shape(struct span *s, const struct span_shape *shape)
{
    s->shape = shape;
    s->kind = shape->kind;
    s->nattrs = 0;
    s->arena_used = 0;
}

void span_materialize(struct span *s)
{
    const struct span_shape *sh = s->shape;
    if (!sh)
        return;
    s->shape = NULL;
    s->kind = sh->kind;
    memcpy(s->d->name, sh->name, sizeof(s->d->name));
    s->name = s->d->name;
    s->nattrs = sh->nattrs;
    memcpy(s->d->attrs, sh->attrs, sh->nattrs * sizeof(sh->attrs[0]));
    s->arena_used = sh->arena_used;
    memcpy(s->d->arena, sh->arena, sh->arena_used);
}

void span_traceparent(const struct span *s, char out[TRACEPARENT_LEN + 1]) { trace_ctx_format(&s->ctx, out); }

void span_shapes_free(struct span_shapes *t)
{
    for (size_t i = 0; i < SPAN_SHAPE_BUCKETS; i++)
        while (t->b[i]) {
            struct span_shape *sh = t->b[i];
            t->b[i] = sh->next;
            free(sh);
        }
    t->n = 0;
}
