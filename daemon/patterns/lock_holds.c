/* lock_holds.c: the locks each client holds (lock_holds.h). */
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "lock_holds.h"

/* Tokens are random: their first hex digits spread them well. */
static size_t tok_bucket(const char *token)
{
    size_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v * 16 + (size_t)(token[i] <= '9' ? token[i] - '0' : token[i] - 'a' + 10);
    return v % LOCK_HOLDS_TOKEN_BUCKETS;
}

static size_t cli_bucket(const struct client *c)
{
    uint64_t v = (uint64_t)(uintptr_t)c;
    return (size_t)((v * 0x9e3779b97f4a7c15ull) >> 56) % LOCK_HOLDS_CLIENT_BUCKETS;
}

static struct lock_holder **holder_slot(struct lock_holds *h, const struct client *c)
{
    struct lock_holder **p = &h->cli[cli_bucket(c)];
    while (*p && (*p)->c != c)
        p = &(*p)->next;
    return p;
}

static void drop(struct lock_holds *h, struct lock_hold *e);

static void sweep(struct lock_holds *h, uint64_t now)
{
    for (size_t b = 0; b < LOCK_HOLDS_TOKEN_BUCKETS; b++) {
        struct lock_hold *e = h->tok[b];
        while (e) {
            struct lock_hold *next = e->next_tok;
            if (e->expires < now)
                drop(h, e);
            e = next;
        }
    }
    h->sweep_at = h->n * 2 > 1024 ? h->n * 2 : 1024;
}

void lock_holds_add(struct lock_holds *h, struct client *c, const char *token, const char *key, size_t keylen,
                    uint64_t expires, uint64_t now)
{
    if (h->n >= h->sweep_at)
        sweep(h, now);
    struct lock_hold *e = xmalloc(sizeof(*e) + keylen);
    e->c = c;
    e->expires = expires;
    memcpy(e->token, token, 32);
    e->token[32] = '\0';
    e->keylen = keylen;
    memcpy(e->key, key, keylen);
    size_t b = tok_bucket(token);
    e->next_tok = h->tok[b];
    h->tok[b] = e;
    struct lock_holder **p = holder_slot(h, c);
    if (!*p) {
        *p = xcalloc(1, sizeof(**p));
        (*p)->c = c;
        dlist_init(&(*p)->holds);
    }
    dlist_push_tail(&(*p)->holds, &e->by_client);
    h->n++;
}

/* Unlinks e from its token bucket and its holder (freeing the holder
 * once empty), and frees it. */
static void drop(struct lock_holds *h, struct lock_hold *e)
{
    struct lock_hold **t = &h->tok[tok_bucket(e->token)];
    while (*t != e)
        t = &(*t)->next_tok;
    *t = e->next_tok;
    dlist_remove(&e->by_client);
    struct lock_holder **p = holder_slot(h, e->c);
    if (*p && dlist_empty(&(*p)->holds)) {
        struct lock_holder *gone = *p;
        *p = gone->next;
        free(gone);
    }
    free(e);
    h->n--;
}

static struct lock_hold *find(struct lock_holds *h, const char *token)
{
    for (struct lock_hold *e = h->tok[tok_bucket(token)]; e; e = e->next_tok)
        if (!memcmp(e->token, token, 32))
            return e;
    return NULL;
}

void lock_holds_touch(struct lock_holds *h, const char *token, uint64_t expires)
{
    struct lock_hold *e = find(h, token);
    if (e)
        e->expires = expires;
}

void lock_holds_forget(struct lock_holds *h, const char *token)
{
    struct lock_hold *e = find(h, token);
    if (e)
        drop(h, e);
}

void lock_holds_drop_client(struct lock_holds *h, struct client *c,
                            void (*fn)(void *arg, const struct lock_hold *e), void *arg)
{
    struct lock_holder **p = holder_slot(h, c);
    while (*p) {
        struct lock_hold *e = container_of((*p)->holds.next, struct lock_hold, by_client);
        fn(arg, e);
        drop(h, e); /* frees the holder with its last entry, which ends the loop */
        p = holder_slot(h, c);
    }
}

void lock_holds_free(struct lock_holds *h)
{
    for (size_t b = 0; b < LOCK_HOLDS_TOKEN_BUCKETS; b++)
        while (h->tok[b])
            drop(h, h->tok[b]);
}
