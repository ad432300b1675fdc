/* cachetab.c: see cachetab.h. Chained buckets, doubled when the load
 * passes one entry per bucket; never shrunk (the table holds only keys
 * with requests waiting, so it stays small). */
#include <stdlib.h>
#include <string.h>

#include "cachetab.h"
#include "cbuf.h"

/* FNV-1a: keys are short, and a client choosing colliding keys slows
 * only the lookups of keys it waits on. */
static uint64_t hash_of(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

void cachetab_init(struct cachetab *t)
{
    memset(t, 0, sizeof(*t));
}

void cachetab_free(struct cachetab *t)
{
    free(t->buckets);
    memset(t, 0, sizeof(*t));
}

struct cachetab_node *cachetab_find(const struct cachetab *t, const char *key, size_t keylen)
{
    if (!t->nbuckets)
        return NULL;
    uint64_t h = hash_of(key, keylen);
    for (struct cachetab_node *n = t->buckets[h & (t->nbuckets - 1)]; n; n = n->next)
        if (n->hash == h && n->keylen == keylen && !memcmp(n->key, key, keylen))
            return n;
    return NULL;
}

static void grow(struct cachetab *t)
{
    size_t nb = t->nbuckets ? t->nbuckets * 2 : 16;
    struct cachetab_node **b = xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct cachetab_node *n = t->buckets[i];
        while (n) {
            struct cachetab_node *next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

void cachetab_add(struct cachetab *t, struct cachetab_node *n)
{
    if (t->n >= t->nbuckets)
        grow(t);
    n->hash = hash_of(n->key, n->keylen);
    struct cachetab_node **b = &t->buckets[n->hash & (t->nbuckets - 1)];
    n->next = *b;
    *b = n;
    t->n++;
}

void cachetab_remove(struct cachetab *t, struct cachetab_node *n)
{
    struct cachetab_node **p = &t->buckets[n->hash & (t->nbuckets - 1)];
    while (*p != n)
        p = &(*p)->next;
    *p = n->next;
    n->next = NULL;
    t->n--;
}
