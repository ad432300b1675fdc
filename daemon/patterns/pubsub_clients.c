/* pubsub_clients.c: the subscriptions of each client (pubsub_clients.h). */
#include <stdint.h>
#include <stdlib.h>

#include "cbuf.h"
#include "pubsub_clients.h"

/* Clients are heap blocks: their low bits say nothing, the rest mixed. */
static size_t slot_of(const struct pubsub_clients *t, const void *client)
{
    uint64_t h = (uint64_t)(uintptr_t)client >> 4;
    h *= 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (t->cap - 1);
}

struct ps_client *pubsub_clients_find(const struct pubsub_clients *t, const void *client)
{
    if (!t->cap)
        return NULL;
    for (struct ps_client *e = t->slots[slot_of(t, client)]; e; e = e->next)
        if (e->client == client)
            return e;
    return NULL;
}

static void grow(struct pubsub_clients *t)
{
    struct pubsub_clients bigger = {xcalloc(t->cap ? t->cap * 2 : 64, sizeof(struct ps_client *)),
                                    t->cap ? t->cap * 2 : 64, t->n};
    for (size_t i = 0; i < t->cap; i++) {
        for (struct ps_client *e = t->slots[i], *next; e; e = next) {
            next = e->next;
            size_t k = slot_of(&bigger, e->client);
            e->next = bigger.slots[k];
            bigger.slots[k] = e;
        }
    }
    free(t->slots);
    *t = bigger;
}

struct ps_client *pubsub_clients_add(struct pubsub_clients *t, const void *client)
{
    struct ps_client *e = pubsub_clients_find(t, client);
    if (e)
        return e;
    if (t->n >= t->cap / 2)
        grow(t);
    e = xcalloc(1, sizeof(*e));
    e->client = client;
    dlist_init(&e->subs);
    size_t k = slot_of(t, client);
    e->next = t->slots[k];
    t->slots[k] = e;
    t->n++;
    return e;
}

void pubsub_clients_remove(struct pubsub_clients *t, struct ps_client *e)
{
    struct ps_client **pp = &t->slots[slot_of(t, e->client)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    t->n--;
    free(e);
}

void pubsub_clients_free(struct pubsub_clients *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        for (struct ps_client *e = t->slots[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(t->slots);
    t->slots = NULL;
    t->cap = t->n = 0;
}
