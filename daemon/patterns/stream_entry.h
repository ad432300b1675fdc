/* stream_entry.h: stream entries between CBOR and Redis: the fields an
 * xadd sends, and the data of an `entry` push built from a reply. Pure
 * (no I/O), so that unit tests and fuzzers can drive it. */
#ifndef FERRY_STREAM_ENTRY_H
#define FERRY_STREAM_ENTRY_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>

#include "cbuf.h"

/* The most field/value pairs one entry may carry through xadd. */
#define STREAM_ENTRY_MAX_PAIRS 4096

/* Counts the pairs of xadd's "fields" (the raw CBOR item p, n: a map of
 * strings to strings, or an array of [name, value] pairs). Returns the
 * count (at least 1), or -1 with msg saying what is wrong. */
int stream_entry_count(const uint8_t *p, size_t n, char *msg, size_t msglen);
/* Stores those pairs as name, value, name ... into argv/lens (room for
 * twice the count). Call only after stream_entry_count accepted p. */
void stream_entry_fields(const uint8_t *p, size_t n, const char **argv, size_t *lens);

/* Appends the data of an `entry` push: {stream, id, fields, deliveries}.
 * e is an entry as Redis answers it: [id, [name, value, ...]] (a third
 * element, if any, is ignored). fields is a map whose names are text
 * (bytes when not UTF-8) and values bytes; when a name repeats, an
 * array of [name, value] pairs instead, since a CBOR map may not.
 * Returns 0, or -1 (nothing appended) when e is not an entry. */
int stream_entry_encode(struct cbuf *o, const char *stream, size_t slen, const redisReply *e,
                        uint64_t deliveries);

#endif
