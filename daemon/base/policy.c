/* policy.c: parsing policy files and matching peers and names. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbuf.h"
#include "text.h"
#include "policy.h"

/* A policy file is small; a larger one is a mistake, not a policy. */
#define POLICY_MAX_BYTES (1 << 20)
#define POLICY_MAX 64

static const char *const list_keys[PL_NLISTS] = {
    [PL_REDIS_RULES] = "redis_commands", [PL_REDIS_KEYS] = "redis_keys",
    [PL_AMQP_CONFIGURE] = "amqp_configure", [PL_AMQP_WRITE] = "amqp_write", [PL_AMQP_READ] = "amqp_read",
};

const char *policy_list_key(enum policy_list l)
{
    return list_keys[l];
}

static void free_words(char **w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(w[i]);
    free(w);
}

static void policy_clear(struct policy *p)
{
    free(p->peers);
    free_words(p->ops, p->nops);
    for (int l = 0; l < PL_NLISTS; l++) {
        free_words(p->list[l], p->nlist[l]);
        free(p->glob[l]);
    }
}

static struct policy_glob classify(const char *g)
{
    size_t n = strlen(g), meta = strcspn(g, "*?[\\");
    if (n == 1 && g[0] == '*')
        return (struct policy_glob){PG_ALL, 0};
    if (meta == n)
        return (struct policy_glob){PG_EXACT, n};
    if (meta == n - 1 && g[n - 1] == '*')
        return (struct policy_glob){PG_PREFIX, n - 1};
    return (struct policy_glob){PG_GLOB, 0};
}

void policy_free(struct policy_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        policy_clear(&set->p[i]);
    free(set->p);
    set->p = NULL;
    set->n = 0;
    set->fallback = NULL;
}

/* Splits a value into words at spaces and commas. */
static size_t split(const char *v, char ***out)
{
    size_t n = 0, cap = 0;
    char **w = NULL;
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        if (!*v)
            break;
        size_t len = strcspn(v, " \t,");
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            w = xrealloc(w, cap * sizeof(*w));
        }
        w[n] = xmalloc(len + 1);
        memcpy(w[n], v, len);
        w[n][len] = '\0';
        n++;
        v += len;
    }
    *out = w;
    return n;
}

/* Reads a number that must fit 32 bits. */
static int parse_id(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > 0xffffffffUL || s[0] == '-')
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* "uid:1000", "user:alice", "gid:2000", "group:apps". */
static int parse_peer(const char *w, struct policy_peer *pp, char *why, size_t len)
{
    const char *colon = strchr(w, ':');
    if (!colon || !colon[1]) {
        snprintf(why, len, "peer '%.64s' is not uid:N, user:NAME, gid:N or group:NAME", w);
        return -1;
    }
    size_t kl = (size_t)(colon - w);
    const char *v = colon + 1;
    if (kl == 3 && !memcmp(w, "uid", 3)) {
        pp->kind = PP_UID;
        if (parse_id(v, &pp->id) == 0)
            return 0;
    } else if (kl == 3 && !memcmp(w, "gid", 3)) {
        pp->kind = PP_GID;
        if (parse_id(v, &pp->id) == 0)
            return 0;
    } else if (kl == 4 && !memcmp(w, "user", 4)) {
        struct passwd *pw = getpwnam(v);
        if (pw) {
            pp->kind = PP_UID;
            pp->id = pw->pw_uid;
            return 0;
        }
        snprintf(why, len, "no user named '%.64s'", v);
        return -1;
    } else if (kl == 5 && !memcmp(w, "group", 5)) {
        struct group *gr = getgrnam(v);
        if (gr) {
            pp->kind = PP_GID;
            pp->id = gr->gr_gid;
            return 0;
        }
        snprintf(why, len, "no group named '%.64s'", v);
        return -1;
    }
    snprintf(why, len, "peer '%.64s' is not uid:N, user:NAME, gid:N or group:NAME", w);
    return -1;
}

/* Checks one Redis rule's shape: +@cat, -@cat, +cmd, -cmd, +cmd|sub. */
static int check_rule(const char *w, char *why, size_t len)
{
    const char *p = w + 1;
    if ((w[0] != '+' && w[0] != '-') || !*p || (*p == '@' && !p[1])) {
        snprintf(why, len, "Redis rule '%.64s' is not +@category, -@category, +command or -command", w);
        return -1;
    }
    for (const char *q = *p == '@' ? p + 1 : p; *q; q++)
        if (!isalnum((unsigned char)*q) && *q != '_' && *q != '-' && *q != '|' && *q != '.') {
            snprintf(why, len, "Redis rule '%.64s' has a character a command cannot", w);
            return -1;
        }
    return 0;
}

static int set_key(struct policy *p, const char *key, const char *value, policy_op_index_fn op_index, void *ctx,
                   char *why, size_t len)
{
    char **w;
    size_t n = split(value, &w);
    if (!strcmp(key, "peers")) {
        if (p->peers || n == 0) {
            free_words(w, n);
            snprintf(why, len, n ? "'peers' given twice" : "'peers' names nobody");
            return -1;
        }
        p->peers = xcalloc(n ? n : 1, sizeof(*p->peers));
        for (size_t i = 0; i < n; i++)
            if (parse_peer(w[i], &p->peers[p->npeers++], why, len) != 0) {
                free_words(w, n);
                return -1;
            }
        free_words(w, n);
        return 0;
    }
    if (!strcmp(key, "ops")) {
        if (p->ops || p->all_ops) {
            free_words(w, n);
            snprintf(why, len, "'ops' given twice");
            return -1;
        }
        p->ops = w;
        p->nops = n;
        for (size_t i = 0; i < n; i++) {
            if (!strcmp(w[i], "*")) {
                p->all_ops = true;
                continue;
            }
            if (!op_index)
                continue;
            int k = op_index(ctx, w[i]);
            if (k < 0 || k >= 64) {
                snprintf(why, len, "no op named '%.64s' (hello lists them)", w[i]);
                return -1;
            }
            p->op_bits |= 1ull << k;
        }
        return 0;
    }
    for (int l = 0; l < PL_NLISTS; l++) {
        if (strcmp(key, list_keys[l]))
            continue;
        if (p->has_list[l]) {
            free_words(w, n);
            snprintf(why, len, "'%s' given twice", key);
            return -1;
        }
        p->has_list[l] = true;
        p->list[l] = w;
        p->nlist[l] = n;
        p->glob[l] = xcalloc(n ? n : 1, sizeof(*p->glob[l]));
        for (size_t i = 0; i < n; i++)
            p->glob[l][i] = classify(w[i]);
        for (size_t i = 0; l == PL_REDIS_RULES && i < n; i++)
            if (check_rule(w[i], why, len) != 0)
                return -1;
        return 0;
    }
    free_words(w, n);
    snprintf(why, len, "unknown key '%.64s' (peers, ops, redis_commands, redis_keys, amqp_configure, amqp_write, "
                       "amqp_read)", key);
    return -1;
}

int policy_parse(struct policy_set *set, const char *path, const char *text, policy_op_index_fn op_index,
                 void *ctx, char *err, size_t errlen)
{
    memset(set, 0, sizeof(*set));
    char *copy = xstrdup(text);
    char why[256];
    int lineno = 0, rc = 0;
    struct policy *cur = NULL;
    for (char *line = copy, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = text_trim(line);
        if (!*s)
            continue;
        if (*s == '[') {
            size_t l = strlen(s);
            if (l < 3 || s[l - 1] != ']') {
                snprintf(why, sizeof(why), "a policy starts with [name]");
                rc = -1;
                break;
            }
            s[l - 1] = '\0';
            char *name = text_trim(s + 1);
            if (!*name || strlen(name) >= sizeof(cur->name) || strcspn(name, " \t[]") != strlen(name)) {
                snprintf(why, sizeof(why), "a policy name is 1 to 63 characters without spaces or brackets");
                rc = -1;
                break;
            }
            for (size_t i = 0; i < set->n; i++)
                if (!strcmp(set->p[i].name, name)) {
                    snprintf(why, sizeof(why), "policy '%s' is defined twice", name);
                    rc = -1;
                }
            if (rc)
                break;
            if (set->n == POLICY_MAX) {
                snprintf(why, sizeof(why), "more than %d policies", POLICY_MAX);
                rc = -1;
                break;
            }
            set->p = xrealloc(set->p, (set->n + 1) * sizeof(*set->p));
            cur = &set->p[set->n];
            memset(cur, 0, sizeof(*cur));
            snprintf(cur->name, sizeof(cur->name), "%s", name);
            cur->index = (unsigned)set->n++;
            cur->line = lineno;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(why, sizeof(why), "expected 'key = value' or [name]");
            rc = -1;
            break;
        }
        if (!cur) {
            snprintf(why, sizeof(why), "a key before the first [policy]");
            rc = -1;
            break;
        }
        *eq = '\0';
        if (set_key(cur, text_trim(s), text_trim(eq + 1), op_index, ctx, why, sizeof(why)) != 0) {
            rc = -1;
            break;
        }
    }
    free(copy);
    for (size_t i = 0; rc == 0 && i < set->n; i++) {
        struct policy *p = &set->p[i];
        if (!strcmp(p->name, "*")) {
            if (p->npeers) {
                snprintf(why, sizeof(why), "the default policy [*] covers every other peer: no 'peers'");
                lineno = p->line;
                rc = -1;
            }
            set->fallback = p;
        } else if (!p->npeers) {
            snprintf(why, sizeof(why), "policy '%s' names no peers", p->name);
            lineno = p->line;
            rc = -1;
        }
    }
    if (rc) {
        snprintf(err, errlen, "%s line %d: %s", path, lineno, why);
        policy_free(set);
        return -1;
    }
    return 0;
}

int policy_load(struct policy_set *set, const char *path, policy_op_index_fn op_index, void *ctx, char *err,
                size_t errlen)
{
    /* A regular file only: a FIFO or a device would block the loop on a
     * reload, or never end. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "policy file %s: %s", path, fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        snprintf(err, errlen, "policy file %s: %s", path, strerror(errno));
        return -1;
    }
    char *text = xmalloc(POLICY_MAX_BYTES + 1);
    size_t n = fread(text, 1, POLICY_MAX_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > POLICY_MAX_BYTES || memchr(text, '\0', n)) {
        snprintf(err, errlen, "policy file %s: %s", path,
                 bad ? "read error" : n > POLICY_MAX_BYTES ? "larger than 1 MiB" : "holds a NUL byte");
        free(text);
        return -1;
    }
    text[n] = '\0';
    int rc = policy_parse(set, path, text, op_index, ctx, err, errlen);
    free(text);
    return rc;
}

void policy_carry_counts(struct policy_set *set, const struct policy_set *old)
{
    set->refused_peers = old->refused_peers;
    for (size_t i = 0; i < set->n; i++)
        for (size_t j = 0; j < old->n; j++)
            if (!strcmp(set->p[i].name, old->p[j].name)) {
                set->p[i].requests = old->p[j].requests;
                set->p[i].denied = old->p[j].denied;
            }
}

struct policy *policy_find(const struct policy_set *set, uint32_t uid, uint32_t gid)
{
    for (size_t i = 0; i < set->n; i++) {
        struct policy *p = &set->p[i];
        for (size_t j = 0; j < p->npeers; j++)
            if ((p->peers[j].kind == PP_UID && p->peers[j].id == uid) ||
                (p->peers[j].kind == PP_GID && p->peers[j].id == gid))
                return p;
    }
    return set->fallback;
}

/* memcmp for the short prefixes and names of a policy, without a call. */
static inline bool same_bytes(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

bool policy_allows_name(const struct policy *p, enum policy_list l, const char *name, size_t len)
{
    bool generic = false;
    const struct policy_glob *g = p->glob[l];
    char *const *pat = p->list[l];
    for (size_t i = 0, n = p->nlist[l]; i < n; i++) {
        switch (g[i].kind) {
        case PG_ALL:
            return true;
        case PG_PREFIX:
            if (len >= g[i].len && same_bytes(name, pat[i], g[i].len))
                return true;
            break;
        case PG_EXACT:
            if (len == g[i].len && same_bytes(name, pat[i], len))
                return true;
            break;
        default:
            generic = true;
        }
    }
    if (!generic)
        return false;
    char small[256];
    char *s = len < sizeof(small) ? small : xmalloc(len + 1);
    memcpy(s, name, len);
    s[len] = '\0';
    bool ok = false;
    /* A name with a NUL in it matches nothing but "*". */
    bool nul = memchr(name, '\0', len) != NULL;
    for (size_t i = 0; i < p->nlist[l] && !ok && !nul; i++)
        ok = p->glob[l][i].kind == PG_GLOB && fnmatch(p->list[l][i], s, 0) == 0;
    if (s != small)
        free(s);
    return ok;
}
