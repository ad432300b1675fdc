/* pubsub_clients.h: the subscriptions of each client, found by the
 * client: a hash table from a client to the list of its subscriptions, so
 * that a client closing, or naming one of its subscriptions, costs what it
 * holds and not what every client holds. Pure: no I/O. */
#ifndef FERRY_PUBSUB_CLIENTS_H
#define FERRY_PUBSUB_CLIENTS_H

#include <stddef.h>

#include "list.h"

/* One client that holds subscriptions. */
struct ps_client {
    struct ps_client *next; /* refers: the next in its hash chain */
    const void *client;     /* refers: the client (struct client), only compared */
    struct dlist subs;      /* refers: its subscriptions (pubsub.c's cnode) */
};

struct pubsub_clients {
    struct ps_client **slots; /* owns: the chains, and the entries on them */
    size_t cap;               /* a power of two, or 0 */
    size_t n;
};

struct ps_client *pubsub_clients_find(const struct pubsub_clients *t, const void *client);
/* Finds the client's entry, or adds one with no subscriptions. */
struct ps_client *pubsub_clients_add(struct pubsub_clients *t, const void *client);
/* Unlinks e and frees it. */
void pubsub_clients_remove(struct pubsub_clients *t, struct ps_client *e);
void pubsub_clients_free(struct pubsub_clients *t);

#endif
