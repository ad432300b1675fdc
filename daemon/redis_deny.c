/* redis_deny.c: see redis_deny.h. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>

#include "cbuf.h"
#include "redis_deny.h"

static int copy_word(char *dst, size_t cap, const char *src, size_t n)
{
    if (n == 0 || n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isgraph((unsigned char)src[i]))
            return -1;
        dst[i] = (char)toupper((unsigned char)src[i]);
    }
    dst[n] = '\0';
    return 0;
}

static int by_first_byte(const void *a, const void *b)
{
    return (unsigned char)((const struct deny_rule *)a)->cmd[0] -
           (unsigned char)((const struct deny_rule *)b)->cmd[0];
}

static void build_index(struct redis_deny *d)
{
    if (d->n)
        qsort(d->rules, d->n, sizeof(*d->rules), by_first_byte);
    size_t k = 0;
    for (unsigned b = 0; b < 256; b++) {
        d->start[b] = (unsigned)k;
        while (k < d->n && (unsigned char)d->rules[k].cmd[0] == b)
            k++;
    }
    d->start[256] = (unsigned)d->n;
}

int redis_deny_parse(const char *spec, struct redis_deny *out, char *err, size_t errlen)
{
    out->rules = NULL;
    out->n = 0;
    memset(out->start, 0, sizeof(out->start));
    size_t cap = 0;
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (a < b) {
            struct deny_rule r;
            memset(&r, 0, sizeof(r));
            const char *sp = a;
            while (sp < b && !isspace((unsigned char)*sp))
                sp++;
            const char *w = sp;
            while (w < b && isspace((unsigned char)*w))
                w++;
            const char *wend = w;
            while (wend < b && !isspace((unsigned char)*wend))
                wend++;
            if (copy_word(r.cmd, sizeof(r.cmd), a, (size_t)(sp - a)) != 0 || wend != b ||
                (w < b && copy_word(r.word, sizeof(r.word), w, (size_t)(wend - w)) != 0)) {
                snprintf(err, errlen, "key 'redis_deny': bad entry '%.*s' (want CMD or CMD WORD)",
                         (int)(b - a), a);
                redis_deny_free(out);
                return -1;
            }
            if (out->n == cap) {
                cap = cap ? cap * 2 : 32;
                out->rules = xrealloc(out->rules, cap * sizeof(*out->rules));
            }
            r.cmd_len = strlen(r.cmd);
            r.word_len = strlen(r.word);
            out->rules[out->n++] = r;
        }
        p = *end ? end + 1 : end;
    }
    build_index(out);
    return 0;
}

void redis_deny_free(struct redis_deny *d)
{
    free(d->rules);
    d->rules = NULL;
    d->n = 0;
    memset(d->start, 0, sizeof(d->start));
}

/* rule is upper case; the length test rejects most rules cheaply. */
static int eq_nocase(const char *rule, size_t rule_len, const char *arg, size_t len)
{
    return rule_len == len && strncasecmp(rule, arg, len) == 0;
}

const struct deny_rule *redis_deny_match(const struct redis_deny *d, int argc, const char *const *argv,
                                         const size_t *lens)
{
    if (argc < 1 || lens[0] == 0)
        return NULL;
    unsigned char b = (unsigned char)toupper((unsigned char)argv[0][0]);
    for (size_t i = d->start[b]; i < d->start[b + 1]; i++) {
        const struct deny_rule *r = &d->rules[i];
        if (!eq_nocase(r->cmd, r->cmd_len, argv[0], lens[0]))
            continue;
        if (r->word[0] == '\0')
            return r;
        for (int j = 1; j < argc; j++)
            if (eq_nocase(r->word, r->word_len, argv[j], lens[j]))
                return r;
    }
    return NULL;
}
