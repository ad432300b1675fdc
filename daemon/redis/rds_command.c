/* rds_command.c: see rds_command.h.
 *
 * Why not hiredis's redisFormatCommandArgv: measured, it was the largest
 * single cost in ferryd (docs/performance.md), nearly all in sprintf() for
 * the length headers, plus a malloc, a copy into our buffer and a free per
 * command. The RESP array of bulk strings is the simplest part of the
 * protocol; writing it in place costs little. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "rds_command.h"

/* Writes "<prefix><n>\r\n" at p and returns the end. */
static char *put_header(char *p, char prefix, size_t n)
{
    char digits[24];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    *p++ = prefix;
    while (k)
        *p++ = digits[--k];
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

void rds_command_format(struct cbuf *out, int argc, const char *const *argv, const size_t *lens)
{
    size_t need = 24;
    for (int i = 0; i < argc; i++)
        need += lens[i] + 26;
    cbuf_reserve(out, need);
    char *start = (char *)out->data + out->len;
    char *p = put_header(start, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        p = put_header(p, '$', lens[i]);
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    out->len += (size_t)(p - start);
}

const char *rds_command_parse(const uint8_t *args, size_t len, int *argc, const char ***argv, size_t **lens,
                              const char **small, size_t *small_lens)
{
    *argv = NULL;
    *lens = NULL;
    *argc = 0;
    if (!args)
        return "redis needs args: the command as an array of byte strings";
    struct cursor c = {.buf = args, .len = len, .pos = 0};
    struct tok t;
    if (cursor_next(&c, &t) != 0 || t.type != TOK_ARRAY)
        return "redis args must be an array of byte strings";
    if (t.u == 0)
        return "redis args must not be empty";
    if (t.u > INT_MAX)
        return "too many arguments";
    int n = (int)t.u;
    if (n <= RDS_COMMAND_SMALL) {
        *argv = small;
        *lens = small_lens;
    } else {
        *argv = xmalloc((size_t)n * sizeof(**argv));
        *lens = xmalloc((size_t)n * sizeof(**lens));
    }
    *argc = n;
    for (int i = 0; i < n; i++) {
        struct tok a;
        if (cursor_next(&c, &a) != 0 || (a.type != TOK_BYTES && a.type != TOK_TEXT))
            return "redis args must be byte strings (or text strings)";
        (*argv)[i] = (const char *)a.p;
        (*lens)[i] = a.n;
    }
    return NULL;
}
