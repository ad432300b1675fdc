/* blocking_timeout.h: which argument of a blocking Redis command is its
 * timeout, and how to cap it at the time a request has left. Pure: the
 * unit test (tests/unit/test_blocking_timeout.c) drives it without Redis.
 *
 * The cap is why a client of redis.blocking normally gets Redis's own
 * "timed out" answer (nil) rather than ferryd's 'timeout' error: the
 * command ends inside its request's deadline. */
#ifndef FERRY_BLOCKING_TIMEOUT_H
#define FERRY_BLOCKING_TIMEOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum blocking_unit {
    BU_SECONDS, /* B*POP, B*MOVE, B*MPOP: seconds, decimals allowed */
    BU_MILLIS,  /* XREAD/XREADGROUP BLOCK, WAIT: whole milliseconds */
};

/* The timeout of one blocking command, as the client gave it. */
struct blocking_timeout {
    int index;               /* its position in argv */
    enum blocking_unit unit;
    bool forever;            /* 0: block until served */
    double ms;               /* the value in milliseconds, when not forever */
};

/* Finds the timeout argument of argv. Returns NULL, or what is wrong: not
 * a blocking command (one that belongs on the redis op), a missing or
 * malformed timeout. */
const char *blocking_timeout_find(int argc, const char *const *argv, const size_t *lens,
                                  struct blocking_timeout *t);

/* Whether argv[0] names a command that can block a connection (whatever
 * its arguments): one that must not run on a shared connection. */
bool blocking_timeout_is_blocking(const char *name, size_t len);

/* The value the timeout argument must take so that the command ends
 * within cap_ms (at least 1 ms: 0 would mean forever): written to buf
 * (NUL-terminated) and its length returned; 0 when the client's own
 * timeout is already shorter and stays as it is. */
size_t blocking_timeout_cap(const struct blocking_timeout *t, uint64_t cap_ms, char *buf, size_t len);

#endif
