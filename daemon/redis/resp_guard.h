/* resp_guard.h: decides, ahead of hiredis's reader, which Redis replies the
 * reader may see.
 *
 * On a connection shared by every client, a reply the reader cannot take
 * must cost only the request that asked for it. hiredis 0.14's reader fails
 * (and with it the connection, and every other client's requests) on a reply
 * nested deeper than it supports, and it holds a whole reply in memory
 * before handing it over, however large. The guard walks the RESP byte
 * stream itself, item headers only (a bulk string's payload is stepped over,
 * not read), and marks the point where a reply becomes one to refuse: too
 * deep, more bytes than max_bytes, or more elements than max_elements. The
 * caller feeds the reader everything before that point, drops everything
 * after it until the refused reply ends, and fails that reply's request.
 *
 * A reply that nobody waits for any more (its request timed out, or its
 * client left) is dropped the same way, unread, when the caller's `wanted`
 * says so as it begins.
 *
 * The guard never buffers: a reply of any size passes through in O(1)
 * memory. It knows RESP2 only, which is all ferryd speaks (RESP3's HELLO 3
 * is denied), and leaves any other type byte to the reader to report.
 *
 * Pure: no I/O, for unit tests and fuzzing. */
#ifndef FERRY_RESP_GUARD_H
#define FERRY_RESP_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* hiredis 0.14's reader refuses an aggregate opened inside 8 open
 * aggregates ("No support for nested multi bulk replies with depth > 7"). */
#define RESP_GUARD_MAX_NESTING 8

enum resp_guard_why {
    RESP_GUARD_OK,
    RESP_GUARD_TOO_DEEP,  /* nested deeper than the reader supports */
    RESP_GUARD_TOO_LARGE, /* over max_bytes or max_elements */
    RESP_GUARD_PROTOCOL,  /* not RESP2: the reader will say so */
    RESP_GUARD_UNWANTED,  /* nobody waits for it */
};

/* Whether the nth reply since the last reset (counting from 0) is still
 * awaited. */
typedef bool (*resp_guard_wanted_fn)(void *ctx, uint64_t nth);

struct resp_guard {
    size_t max_bytes;     /* a reply with more bytes than this is refused */
    size_t max_elements;  /* ... or with more elements (all levels) */
    resp_guard_wanted_fn wanted; /* may be NULL: every reply is wanted */
    void *ctx;
    uint64_t replies;     /* replies begun since the last reset */

    /* The reply being scanned. */
    uint64_t bytes;       /* its bytes so far */
    uint64_t elements;    /* elements announced by its aggregates */
    uint64_t need;        /* items still to start before it is complete */
    unsigned depth;       /* aggregates open (tracked while not skipping) */
    int64_t left[RESP_GUARD_MAX_NESTING]; /* children not yet started, per open aggregate */

    /* Where in an item the scan stands. */
    enum { RG_TYPE, RG_LINE, RG_PAYLOAD } phase;
    char type;            /* the item's type byte, in RG_LINE */
    bool neg;             /* a '-' opened the header's number */
    bool digits;          /* the header's number has a digit */
    bool cr;              /* a simple line's last byte so far was '\r' */
    uint64_t num;         /* the header's number so far (saturating) */
    uint64_t payload_left;/* bulk bytes (with CRLF) still to step over */

    bool skipping;        /* the reply is refused: its bytes are dropped */
    enum resp_guard_why why; /* why the reply being skipped was refused */
};

void resp_guard_init(struct resp_guard *g, size_t max_bytes, size_t max_elements);
/* Forgets any reply in progress (a new connection). */
void resp_guard_reset(struct resp_guard *g);

/* Scans up to n bytes at p and returns how many it consumed. If g was
 * skipping on entry, those bytes belong to the refused reply and must be
 * dropped; the scan stops where that reply ends (skipping is then false).
 * Otherwise they may be fed to the reader; the scan stops where a reply is
 * refused (skipping is then true and why says why), so that the refused
 * reply's remaining bytes, from the returned offset on, are never fed. A
 * header is refused before its line ends, so the reader never acts on it.
 * RESP_GUARD_PROTOCOL is reported with skipping false and the whole input
 * consumed, and from then on every scan consumes everything: the stream is
 * not RESP2, the guard can no longer tell where replies end, and the
 * caller must drop the connection rather than feed the reader. Lines end
 * where hiredis's reader ends them, at "\r\n" (a bare '\n' is part of a
 * simple string), so that the two never disagree on where an item ends. */
size_t resp_guard_scan(struct resp_guard *g, const char *p, size_t n);

const char *resp_guard_reason(enum resp_guard_why why);

#endif
