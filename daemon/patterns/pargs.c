/* pargs.c: the patterns' ops' argument maps, read through the codec's
 * cursors. */
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "pargs.h"

/* Skips the item whose first header is t (already read). */
static int skip(struct cursor *c, const struct tok *t)
{
    return cursor_skip_rest(c, t);
}

static const char *type_name(enum parg_type t)
{
    switch (t) {
    case PA_STR: return "a string";
    case PA_UINT: return "an unsigned integer";
    case PA_BOOL: return "a boolean";
    case PA_NUM: return "a number";
    case PA_ARRAY: return "an array";
    default: return "a value";
    }
}

const char *pargs_read(const uint8_t *args, size_t len, struct parg *spec, size_t n, char *msg, size_t msglen)
{
    for (size_t i = 0; i < n; i++)
        spec[i].present = false;
    if (args) {
        struct cursor c = {args, len, 0};
        struct tok t;
        if (cursor_next(&c, &t) || t.type != TOK_MAP) {
            snprintf(msg, msglen, "args must be a map");
            return msg;
        }
        for (uint64_t k = 0; k < t.u; k++) {
            struct tok key, v;
            if (cursor_next(&c, &key) || key.type != TOK_TEXT) {
                snprintf(msg, msglen, "args' keys must be text strings");
                return msg;
            }
            struct parg *a = NULL;
            for (size_t i = 0; i < n && !a; i++)
                if (strlen(spec[i].name) == key.n && !memcmp(spec[i].name, key.p, key.n))
                    a = &spec[i];
            if (!a) {
                snprintf(msg, msglen, "unknown argument '%.*s'", (int)(key.n > 40 ? 40 : key.n), key.p);
                return msg;
            }
            size_t start = c.pos;
            if (cursor_next(&c, &v)) {
                snprintf(msg, msglen, "args are malformed");
                return msg;
            }
            bool ok = false;
            switch (a->type) {
            case PA_STR:
                ok = v.type == TOK_TEXT || v.type == TOK_BYTES;
                a->p = v.p;
                a->n = v.n;
                break;
            case PA_UINT:
                ok = v.type == TOK_UINT;
                a->u = v.u;
                break;
            case PA_BOOL:
                ok = v.type == TOK_BOOL;
                a->b = v.u != 0;
                break;
            case PA_NUM:
                ok = v.type == TOK_UINT || v.type == TOK_FLOAT;
                a->f = v.type == TOK_UINT ? (double)v.u : v.f;
                break;
            case PA_ARRAY:
                ok = v.type == TOK_ARRAY;
                a->u = v.u;
                break;
            case PA_ANY:
                ok = true;
                break;
            }
            if (!ok) {
                snprintf(msg, msglen, "'%s' must be %s", a->name, type_name(a->type));
                return msg;
            }
            if ((v.type == TOK_ARRAY || v.type == TOK_MAP || v.type == TOK_TAG) && skip(&c, &v)) {
                snprintf(msg, msglen, "args are malformed");
                return msg;
            }
            if (a->type == PA_ARRAY || a->type == PA_ANY) {
                a->p = args + start;
                a->n = c.pos - start;
            }
            a->present = true;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (spec[i].required && !spec[i].present) {
            snprintf(msg, msglen, "'%s' is required", spec[i].name);
            return msg;
        }
    return NULL;
}

int pargs_strings(const uint8_t *p, size_t n, const char **argv, size_t *lens, int max, char *msg, size_t msglen)
{
    struct cursor c = {p, n, 0};
    struct tok t;
    if (cursor_next(&c, &t) || t.type != TOK_ARRAY) {
        snprintf(msg, msglen, "expected an array of strings");
        return -1;
    }
    if (t.u > (uint64_t)max) {
        snprintf(msg, msglen, "at most %d strings are accepted here", max);
        return -1;
    }
    for (uint64_t i = 0; i < t.u; i++) {
        struct tok s;
        if (cursor_next(&c, &s) || (s.type != TOK_TEXT && s.type != TOK_BYTES)) {
            snprintf(msg, msglen, "expected an array of strings");
            return -1;
        }
        argv[i] = (const char *)s.p;
        lens[i] = s.n;
    }
    return (int)t.u;
}
