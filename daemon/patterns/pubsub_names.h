/* pubsub_names.h: the channels and patterns ferryd's subscriber connection
 * is subscribed to, each once however many subscriptions name it: a hash
 * table of names with their reference counts and the state of their
 * (P)SUBSCRIBE on Redis. Pure: no I/O. */
#ifndef FERRY_PUBSUB_NAMES_H
#define FERRY_PUBSUB_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"

/* One channel, or one pattern. */
struct ps_name {
    struct ps_name *next;   /* refers: the next in its hash chain */
    struct dlist members;   /* refers: the subscriptions' members on it (pubsub.c) */
    size_t refs;            /* members on it */
    unsigned inflight;      /* (UN)SUBSCRIBEs sent whose confirmation has not come */
    bool pattern;           /* a PSUBSCRIBE pattern, not a channel */
    bool want;              /* the last command sent (or due at reconnect) subscribes */
    bool confirmed;         /* Redis confirmed the subscription: messages flow */
    uint32_t hash;
    size_t len;
    char text[];            /* owns: the name's bytes */
};

struct pubsub_names {
    struct ps_name **slots; /* owns: the chains, and the names on them */
    size_t cap;             /* a power of two, or 0 */
    size_t n;
};

struct ps_name *pubsub_names_find(const struct pubsub_names *t, bool pattern, const char *p, size_t len);
/* Finds the name, or adds it with no refs and nothing sent. */
struct ps_name *pubsub_names_add(struct pubsub_names *t, bool pattern, const char *p, size_t len);
/* Unlinks e and frees it. */
void pubsub_names_remove(struct pubsub_names *t, struct ps_name *e);
/* Calls fn on every name; fn may remove the one it is given. */
void pubsub_names_each(struct pubsub_names *t, void (*fn)(struct ps_name *e, void *arg), void *arg);
void pubsub_names_free(struct pubsub_names *t);

#endif
