/* rds_deny.c: see rds_deny.h. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>

#include "cbuf.h"
#include "rds_deny.h"

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

static void build_index(struct rds_deny *d)
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

/* Parses one rule from [a, b). Returns 0 or -1. */
static int parse_rule(const char *a, const char *b, struct deny_rule *r)
{
    memset(r, 0, sizeof(*r));
    bool first = true, had_option = false;
    size_t tl = 0;
    while (a < b) {
        while (a < b && isspace((unsigned char)*a))
            a++;
        const char *e = a;
        while (e < b && !isspace((unsigned char)*e))
            e++;
        if (a == e)
            break;
        if (first) {
            if (copy_word(r->cmd, sizeof(r->cmd), a, (size_t)(e - a)) != 0)
                return -1;
            r->cmd_len = strlen(r->cmd);
            first = false;
        } else {
            /* After an option, one word may follow: the one that ends
             * the options. */
            if (r->nwords == DENY_MAX_WORDS || (had_option && r->words[r->nwords - 1].option == false))
                return -1;
            struct deny_word *w = &r->words[r->nwords];
            const char *wa = a, *we = e;
            if (*wa == '[') {
                if (we - wa < 3 || we[-1] != ']' || had_option)
                    return -1;
                wa++;
                we--;
                w->option = had_option = true;
            }
            if (copy_word(w->w, sizeof(w->w), wa, (size_t)(we - wa)) != 0 || strchr(w->w, '[') ||
                strchr(w->w, ']') || (w->option && strcmp(w->w, "*") == 0))
                return -1;
            w->len = strlen(w->w);
            r->nwords++;
        }
        int n = snprintf(r->text + tl, sizeof(r->text) - tl, "%s%.*s", tl ? " " : "", (int)(e - a), a);
        if (n < 0 || (size_t)n >= sizeof(r->text) - tl)
            return -1;
        tl += (size_t)n;
        a = e;
    }
    if (first)
        return -1;
    for (char *t = r->text; *t; t++)
        *t = (char)toupper((unsigned char)*t);
    return 0;
}

int rds_deny_parse(const char *spec, struct rds_deny *out, char *err, size_t errlen)
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
            if (parse_rule(a, b, &r) != 0) {
                snprintf(err, errlen,
                         "key 'redis_deny': bad entry '%.*s' (want CMD, CMD SUBCOMMAND, or words, * and "
                         "one [OPTION] followed by at most the word that ends the options)",
                         (int)(b - a), a);
                rds_deny_free(out);
                return -1;
            }
            if (out->n == cap) {
                cap = cap ? cap * 2 : 32;
                out->rules = xrealloc(out->rules, cap * sizeof(*out->rules));
            }
            out->rules[out->n++] = r;
        }
        p = *end ? end + 1 : end;
    }
    build_index(out);
    return 0;
}

void rds_deny_free(struct rds_deny *d)
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

static bool word_eq(const struct deny_word *w, const char *arg, size_t len)
{
    return (w->len == 1 && w->w[0] == '*') || eq_nocase(w->w, w->len, arg, len);
}

static bool rule_matches(const struct deny_rule *r, int argc, const char *const *argv, const size_t *lens)
{
    int pos = 1;
    for (unsigned k = 0; k < r->nwords; k++) {
        const struct deny_word *w = &r->words[k];
        if (w->option) {
            const struct deny_word *stop = k + 1 < r->nwords ? &r->words[k + 1] : NULL;
            for (int j = pos; j < argc; j++) {
                if (eq_nocase(w->w, w->len, argv[j], lens[j]))
                    return true;
                if (stop && word_eq(stop, argv[j], lens[j]))
                    return false;
            }
            return false;
        }
        if (pos >= argc || !word_eq(w, argv[pos], lens[pos]))
            return false;
        pos++;
    }
    return true;
}

const struct deny_rule *rds_deny_match(const struct rds_deny *d, int argc, const char *const *argv,
                                         const size_t *lens)
{
    if (argc < 1 || lens[0] == 0)
        return NULL;
    unsigned char b = (unsigned char)toupper((unsigned char)argv[0][0]);
    for (size_t i = d->start[b]; i < d->start[b + 1]; i++) {
        const struct deny_rule *r = &d->rules[i];
        if (eq_nocase(r->cmd, r->cmd_len, argv[0], lens[0]) && rule_matches(r, argc, argv, lens))
            return r;
    }
    return NULL;
}
