/* rds_command.c: see rds_command.h.
 *
 * Why not hiredis's redisFormatCommandArgv: measured, it was the largest
 * single cost in ferryd (docs/performance.md), nearly all in sprintf() for
 * the length headers, plus a malloc, a copy into our buffer and a free per
 * command. The RESP array of bulk strings is the simplest part of the
 * protocol; writing it in place costs little. */
#include <string.h>

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
