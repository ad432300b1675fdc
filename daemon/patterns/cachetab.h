/* cachetab.h: a table of byte-string keys to the caller's entries, for
 * the patterns that gather requests by Redis key (the cache's waiters,
 * single flight's followers).
 *
 * Intrusive, like list.h: an entry embeds a struct cachetab_node, and
 * its key bytes are the caller's (they must stay put while it is in the
 * table). Lookups are by content; inserting never copies. */
#ifndef FERRY_CACHETAB_H
#define FERRY_CACHETAB_H

#include <stddef.h>
#include <stdint.h>

struct cachetab_node {
    struct cachetab_node *next; /* refers: the next in its bucket */
    const char *key;            /* refers: the entry's own copy */
    size_t keylen;
    uint64_t hash;
};

struct cachetab {
    struct cachetab_node **buckets; /* owns the array, not the nodes */
    size_t nbuckets;                /* a power of two, or 0 before the first insert */
    size_t n;
};

void cachetab_init(struct cachetab *t);
/* Frees the buckets; the entries are the caller's. */
void cachetab_free(struct cachetab *t);
struct cachetab_node *cachetab_find(const struct cachetab *t, const char *key, size_t keylen);
/* Adds n (key and keylen set, not in the table; no other entry has its key). */
void cachetab_add(struct cachetab *t, struct cachetab_node *n);
void cachetab_remove(struct cachetab *t, struct cachetab_node *n);

#endif
