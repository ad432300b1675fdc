/* list.h: an intrusive doubly linked list, so that objects carry their own
 * links and joining or leaving a list never allocates. */
#ifndef FERRY_LIST_H
#define FERRY_LIST_H

#include <stddef.h>

#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

struct dlist {
    struct dlist *prev; /* refers */
    struct dlist *next; /* refers */
};

static inline void dlist_init(struct dlist *l) { l->prev = l->next = l; }
static inline int dlist_empty(const struct dlist *l) { return l->next == l; }

/* Links n before pos (so before the head means "at the tail"). */
static inline void dlist_insert_before(struct dlist *pos, struct dlist *n)
{
    n->prev = pos->prev;
    n->next = pos;
    pos->prev->next = n;
    pos->prev = n;
}

static inline void dlist_push_tail(struct dlist *head, struct dlist *n)
{
    dlist_insert_before(head, n);
}

/* Unlinks n and leaves it self-linked, so that a second remove is harmless
 * and dlist_linked() tells whether it is on a list. */
static inline void dlist_remove(struct dlist *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

static inline int dlist_linked(const struct dlist *n) { return n->next != n; }

#define dlist_foreach(pos, head) \
    for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

#define dlist_foreach_safe(pos, tmp, head) \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); \
         (pos) = (tmp), (tmp) = (pos)->next)

#endif
