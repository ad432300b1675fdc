/* lock_holds.h: which client holds which lock, as far as this ferryd
 * knows: every lock acquired through it, until released, found not held
 * (expired), or its client goes. When a client's connection drops, the
 * locks it held are released at once (lock.c), instead of blocking the
 * others until the TTL runs out.
 *
 * Two indexes over the same entries: by token (a release or extend, from
 * any client, forgets the entry) and by client (a client that goes takes
 * its entries with it). Pure: no I/O. */
#ifndef FERRY_LOCK_HOLDS_H
#define FERRY_LOCK_HOLDS_H

#include <stddef.h>
#include <stdint.h>

#include "list.h"

struct client;

#define LOCK_HOLDS_TOKEN_BUCKETS 1024
#define LOCK_HOLDS_CLIENT_BUCKETS 256

struct lock_hold {
    struct lock_hold *next_tok;  /* refers: the next in its token bucket */
    struct dlist by_client;      /* in its holder's list */
    struct client *c;            /* refers: the holder; only compared, never followed */
    char token[33];              /* 32 hex digits and a NUL */
    uint64_t expires;            /* loop time (ms) after which Redis has surely dropped it */
    size_t keylen;
    char key[];                  /* owns: the lock's key (lock.c), not NUL-terminated */
};

/* One client that holds locks. */
struct lock_holder {
    struct lock_holder *next;    /* refers: the next in its bucket */
    struct client *c;            /* refers; only compared */
    struct dlist holds;          /* owns: its struct lock_hold */
};

struct lock_holds {
    struct lock_hold *tok[LOCK_HOLDS_TOKEN_BUCKETS];       /* owns the entries */
    struct lock_holder *cli[LOCK_HOLDS_CLIENT_BUCKETS];    /* owns the holders */
    size_t n;                                              /* entries */
    size_t sweep_at;                                       /* n at which expired entries are swept */
};

/* Records that c holds the lock of key with token (32 hex digits) until
 * expires (loop ms). Entries whose lock expired unreleased would pile up
 * on a long-lived connection: adding sweeps them, each time the count
 * has doubled since the last sweep (amortised O(1)). now: loop ms. */
void lock_holds_add(struct lock_holds *h, struct client *c, const char *token, const char *key, size_t keylen,
                    uint64_t expires, uint64_t now);
/* Moves the expiry of token's entry (an extend). */
void lock_holds_touch(struct lock_holds *h, const char *token, uint64_t expires);
/* Forgets the entry of token, if any. */
void lock_holds_forget(struct lock_holds *h, const char *token);
/* Calls fn for each lock c holds, then forgets them all. */
void lock_holds_drop_client(struct lock_holds *h, struct client *c,
                            void (*fn)(void *arg, const struct lock_hold *e), void *arg);
/* Frees every entry. */
void lock_holds_free(struct lock_holds *h);

#endif
