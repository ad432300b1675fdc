/* pubsub_names.c: the table of subscribed names (pubsub_names.h). */
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "pubsub_names.h"

/* FNV-1a, with the kind mixed in: a channel and a pattern of the same
 * text are different names. */
static uint32_t hash_of(bool pattern, const char *p, size_t len)
{
    uint32_t h = pattern ? 0x811c9dc5u ^ 0x5bd1e995u : 0x811c9dc5u;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)p[i];
        h *= 16777619u;
    }
    return h;
}

struct ps_name *pubsub_names_find(const struct pubsub_names *t, bool pattern, const char *p, size_t len)
{
    if (!t->cap)
        return NULL;
    uint32_t h = hash_of(pattern, p, len);
    for (struct ps_name *e = t->slots[h & (t->cap - 1)]; e; e = e->next)
        if (e->hash == h && e->pattern == pattern && e->len == len && !memcmp(e->text, p, len))
            return e;
    return NULL;
}

static void grow(struct pubsub_names *t)
{
    size_t cap = t->cap ? t->cap * 2 : 64;
    struct ps_name **slots = xcalloc(cap, sizeof(*slots));
    for (size_t i = 0; i < t->cap; i++) {
        for (struct ps_name *e = t->slots[i], *next; e; e = next) {
            next = e->next;
            e->next = slots[e->hash & (cap - 1)];
            slots[e->hash & (cap - 1)] = e;
        }
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
}

struct ps_name *pubsub_names_add(struct pubsub_names *t, bool pattern, const char *p, size_t len)
{
    struct ps_name *e = pubsub_names_find(t, pattern, p, len);
    if (e)
        return e;
    if (t->n >= t->cap / 2)
        grow(t);
    e = xcalloc(1, sizeof(*e) + len + 1);
    e->hash = hash_of(pattern, p, len);
    e->pattern = pattern;
    e->len = len;
    memcpy(e->text, p, len);
    dlist_init(&e->members);
    e->next = t->slots[e->hash & (t->cap - 1)];
    t->slots[e->hash & (t->cap - 1)] = e;
    t->n++;
    return e;
}

void pubsub_names_remove(struct pubsub_names *t, struct ps_name *e)
{
    struct ps_name **pp = &t->slots[e->hash & (t->cap - 1)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    t->n--;
    free(e);
}

void pubsub_names_each(struct pubsub_names *t, void (*fn)(struct ps_name *e, void *arg), void *arg)
{
    for (size_t i = 0; i < t->cap; i++) {
        for (struct ps_name *e = t->slots[i], *next; e; e = next) {
            next = e->next;
            fn(e, arg);
        }
    }
}

void pubsub_names_free(struct pubsub_names *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        for (struct ps_name *e = t->slots[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(t->slots);
    t->slots = NULL;
    t->cap = t->n = 0;
}
