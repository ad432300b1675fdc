/* reqring.h: requests awaiting a backend's answer, by sequence number.
 *
 * A ring of request pointers: push gives a sequence number; an answer
 * takes its slot back by number (or, for an in-order protocol like RESP,
 * from the head); a cancelled request leaves NULL in its slot, so that a
 * late answer finds nobody and the order is kept. */
#ifndef FERRY_REQRING_H
#define FERRY_REQRING_H

#include <stddef.h>
#include <stdint.h>

struct request;

struct reqring {
    struct request **slots; /* owns the array, refers to the requests */
    size_t cap;             /* a power of two */
    uint64_t head, tail;    /* oldest live sequence number, next to give */
};

void reqring_init(struct reqring *q);
void reqring_free(struct reqring *q);
uint64_t reqring_push(struct reqring *q, struct request *r);
/* Takes the oldest slot (which may be NULL). The ring must not be empty. */
struct request *reqring_pop(struct reqring *q);
/* Takes the request with sequence number seq, or NULL if it is gone. */
struct request *reqring_take(struct reqring *q, uint64_t seq);
/* Forgets r, if it still holds slot seq. */
void reqring_cancel(struct reqring *q, uint64_t seq, const struct request *r);
static inline size_t reqring_size(const struct reqring *q) { return (size_t)(q->tail - q->head); }

#endif
