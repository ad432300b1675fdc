/* pargs.h: the patterns' ops' arguments: one CBOR map, read in place.
 *
 * Each op lists the keys it takes; unknown keys are refused (a typo is
 * an error, not a silent default), as are wrong types. Pure: unit tests
 * and fuzzers drive it without sockets. */
#ifndef FERRY_PARGS_H
#define FERRY_PARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum parg_type {
    PA_STR,   /* text or byte string: p, n */
    PA_UINT,  /* unsigned integer: u */
    PA_BOOL,  /* b */
    PA_NUM,   /* integer or float: f */
    PA_ARRAY, /* an array, kept raw: p, n (the whole item), u (its length) */
    PA_ANY,   /* any item, kept raw: p, n */
};

struct parg {
    const char *name;
    enum parg_type type;
    bool required;
    /* Set by pargs_read: */
    bool present;
    const uint8_t *p;   /* refers into the request's frame */
    size_t n;
    uint64_t u;
    double f;
    bool b;
};

/* Reads args (the raw CBOR of "args", NULL when absent) against the n
 * specs. Returns NULL, or what is wrong, in msg. */
const char *pargs_read(const uint8_t *args, size_t len, struct parg *spec, size_t n, char *msg, size_t msglen);

/* Reads an array of strings (a PA_ARRAY's bytes) into argv/lens, at most
 * max of them. Returns the count, or -1 with msg set. */
int pargs_strings(const uint8_t *p, size_t n, const char **argv, size_t *lens, int max, char *msg,
                  size_t msglen);

#endif
