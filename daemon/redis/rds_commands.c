/* rds_commands.c: the server's command table, and finding keys in a
 * command's arguments the way the server itself does (key specs, else the
 * legacy first/last/step). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cbuf.h"
#include "rds_commands.h"

static bool is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static bool str_is(const redisReply *r, const char *s)
{
    return is_str(r) && r->len == strlen(s) && strncasecmp(r->str, s, r->len) == 0;
}

/* ASCII letters folded to lower case (command names are ASCII; other
 * bytes are left as they are, and so match only themselves). Inline,
 * since a policed request looks its command up. */
static inline unsigned char fold(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* FNV-1a over the folded name. */
static uint64_t hash_name(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ fold((unsigned char)s[i])) * 1099511628211ull;
    return h;
}

/* Whether name (len bytes, any case) is c's name, which is lower case. */
static bool same_name(const struct rds_cmd *c, const char *name, size_t len)
{
    if (c->name_len != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)c->name[i] != fold((unsigned char)name[i]))
            return false;
    return true;
}

size_t rds_commands_names(const redisReply *list, char ***names)
{
    *names = NULL;
    if (!list || list->type != REDIS_REPLY_ARRAY)
        return 0;
    char **out = xcalloc(list->elements ? list->elements : 1, sizeof(*out));
    size_t n = 0;
    for (size_t i = 0; i < list->elements; i++) {
        const redisReply *e = list->element[i];
        if (!is_str(e) || e->len == 0 || e->len >= RDS_CMD_NAME)
            continue;
        /* A container: some other name is "<this>|...". */
        bool container = false;
        for (size_t j = 0; j < list->elements && !container; j++) {
            const redisReply *f = list->element[j];
            container = is_str(f) && f->len > e->len && f->str[e->len] == '|' &&
                        strncasecmp(f->str, e->str, e->len) == 0;
        }
        if (container)
            continue;
        out[n] = xmalloc(e->len + 1);
        for (size_t k = 0; k < e->len; k++)
            out[n][k] = (char)tolower((unsigned char)e->str[k]);
        out[n][e->len] = '\0';
        n++;
    }
    *names = out;
    return n;
}

static int cat_bit(struct rds_commands *t, const char *name, size_t len, bool add)
{
    if (len && name[0] == '@') {
        name++;
        len--;
    }
    for (unsigned i = 0; i < t->ncats; i++)
        if (strlen(t->cat[i]) == len && strncasecmp(t->cat[i], name, len) == 0)
            return (int)i;
    if (!add || t->ncats == RDS_MAX_CATS || len == 0 || len >= sizeof(t->cat[0]))
        return -1;
    for (size_t k = 0; k < len; k++)
        t->cat[t->ncats][k] = (char)tolower((unsigned char)name[k]);
    t->cat[t->ncats][len] = '\0';
    return (int)t->ncats++;
}

int rds_commands_cat(const struct rds_commands *t, const char *name)
{
    return cat_bit((struct rds_commands *)t, name, strlen(name), false);
}

/* The value after key in a flat key/value array, or NULL. */
static const redisReply *kv(const redisReply *a, const char *key)
{
    if (!a || a->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < a->elements; i += 2)
        if (str_is(a->element[i], key))
            return a->element[i + 1];
    return NULL;
}

static int kv_int(const redisReply *a, const char *key, int *out)
{
    const redisReply *v = kv(a, key);
    if (!v || v->type != REDIS_REPLY_INTEGER || v->integer < -1000000 || v->integer > 1000000)
        return -1;
    *out = (int)v->integer;
    return 0;
}

/* Reads one key spec; false when some part of it is not understood. */
static bool read_spec(const redisReply *s, struct rds_keyspec *k)
{
    memset(k, 0, sizeof(*k));
    const redisReply *bs = kv(s, "begin_search"), *fk = kv(s, "find_keys");
    const redisReply *bt = kv(bs, "type"), *bsp = kv(bs, "spec");
    const redisReply *ft = kv(fk, "type"), *fsp = kv(fk, "spec");
    if (str_is(bt, "index")) {
        k->bs = BS_INDEX;
        if (kv_int(bsp, "index", &k->bs_index) != 0)
            return false;
    } else if (str_is(bt, "keyword")) {
        const redisReply *w = kv(bsp, "keyword");
        if (!is_str(w) || w->len >= sizeof(k->bs_keyword) || kv_int(bsp, "startfrom", &k->bs_startfrom) != 0)
            return false;
        k->bs = BS_KEYWORD;
        memcpy(k->bs_keyword, w->str, w->len);
    } else {
        return false;
    }
    if (str_is(ft, "range")) {
        k->fk = FK_RANGE;
        if (kv_int(fsp, "lastkey", &k->fk_lastkey) || kv_int(fsp, "keystep", &k->fk_keystep) ||
            kv_int(fsp, "limit", &k->fk_limit))
            return false;
    } else if (str_is(ft, "keynum")) {
        k->fk = FK_KEYNUM;
        if (kv_int(fsp, "keynumidx", &k->fk_keynumidx) || kv_int(fsp, "firstkey", &k->fk_firstkey) ||
            kv_int(fsp, "keystep", &k->fk_keystep))
            return false;
    } else {
        return false;
    }
    return k->fk_keystep > 0 || k->fk == FK_RANGE;
}

/* Reads one COMMAND INFO entry. Returns false when it is not one. */
static bool read_cmd(struct rds_commands *t, const redisReply *e, struct rds_cmd *c)
{
    memset(c, 0, sizeof(*c));
    if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 7 || !is_str(e->element[0]) ||
        e->element[0]->len >= RDS_CMD_NAME)
        return false;
    const redisReply *const *f = (const redisReply *const *)e->element;
    for (size_t k = 0; k < f[0]->len; k++)
        c->name[k] = (char)tolower((unsigned char)f[0]->str[k]);
    c->name_len = f[0]->len;
    const char *bar = strchr(c->name, '|');
    c->parent_len = bar ? (size_t)(bar - c->name) : 0;
    if (f[1]->type != REDIS_REPLY_INTEGER || f[3]->type != REDIS_REPLY_INTEGER ||
        f[4]->type != REDIS_REPLY_INTEGER || f[5]->type != REDIS_REPLY_INTEGER)
        return false;
    c->arity = (int)f[1]->integer;
    c->first = (int)f[3]->integer;
    c->last = (int)f[4]->integer;
    c->step = (int)f[5]->integer;
    if (f[6]->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < f[6]->elements; i++)
            if (is_str(f[6]->element[i])) {
                int b = cat_bit(t, f[6]->element[i]->str, f[6]->element[i]->len, true);
                if (b >= 0)
                    c->cats |= 1ull << b;
            }
    c->specs_complete = true;
    if (e->elements > 8 && f[8]->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < f[8]->elements; i++) {
            if (c->nspecs == RDS_MAX_SPECS || !read_spec(f[8]->element[i], &c->spec[c->nspecs])) {
                c->specs_complete = false;
                continue;
            }
            c->nspecs++;
        }
    } else {
        c->specs_complete = false;
    }
    return true;
}

static void insert(struct rds_commands *t, size_t index)
{
    const char *name = t->cmd[index].name;
    size_t h = (size_t)hash_name(name, strlen(name)) & (t->nslots - 1);
    while (t->slot[h])
        h = (h + 1) & (t->nslots - 1);
    t->slot[h] = index + 1;
}

static const struct rds_cmd *lookup(const struct rds_commands *t, const char *name, size_t len)
{
    if (!t->nslots || len >= RDS_CMD_NAME)
        return NULL;
    size_t h = (size_t)hash_name(name, len) & (t->nslots - 1);
    while (t->slot[h]) {
        const struct rds_cmd *c = &t->cmd[t->slot[h] - 1];
        if (same_name(c, name, len))
            return c;
        h = (h + 1) & (t->nslots - 1);
    }
    return NULL;
}

int rds_commands_build(struct rds_commands *t, const redisReply *info, char *why, size_t len)
{
    unsigned version = t->version;
    rds_commands_free(t);
    t->version = version + 1;
    if (!info || info->type != REDIS_REPLY_ARRAY) {
        snprintf(why, len, "COMMAND INFO did not answer with an array");
        return -1;
    }
    t->cmd = xcalloc(2 * info->elements + 1, sizeof(*t->cmd)); /* and a container per subcommand, at most */
    for (size_t i = 0; i < info->elements; i++)
        if (read_cmd(t, info->element[i], &t->cmd[t->n]))
            t->n++;
    /* The containers, which were not asked about: known by their
     * subcommands, and found only to reach them. */
    for (size_t i = 0; i < t->n; i++) {
        const struct rds_cmd *s = &t->cmd[i];
        if (!s->parent_len)
            continue;
        bool have = false;
        for (size_t j = 0; j < t->n && !have; j++)
            have = t->cmd[j].container && strlen(t->cmd[j].name) == s->parent_len &&
                   !memcmp(t->cmd[j].name, s->name, s->parent_len);
        if (!have) {
            struct rds_cmd *c = &t->cmd[t->n++];
            memset(c, 0, sizeof(*c));
            memcpy(c->name, s->name, s->parent_len);
            c->name_len = s->parent_len;
            c->container = true;
            c->specs_complete = true;
        }
    }
    t->nslots = 64;
    while (t->nslots < t->n * 2)
        t->nslots *= 2;
    t->slot = xcalloc(t->nslots, sizeof(*t->slot));
    for (size_t i = 0; i < t->n; i++) {
        t->cmd[i].index = i;
        insert(t, i);
    }
    return 0;
}

void rds_commands_free(struct rds_commands *t)
{
    free(t->cmd);
    free(t->slot);
    unsigned v = t->version;
    memset(t, 0, sizeof(*t));
    t->version = v;
}

const struct rds_cmd *rds_commands_find(const struct rds_commands *t, int argc, const char *const *argv,
                                         const size_t *lens)
{
    if (argc < 1)
        return NULL;
    const struct rds_cmd *c = lookup(t, argv[0], lens[0]);
    if (!c || !c->container || argc < 2)
        return c;
    char sub[RDS_CMD_NAME];
    size_t n = lens[0] + 1 + lens[1];
    if (n >= sizeof(sub))
        return NULL;
    memcpy(sub, argv[0], lens[0]);
    sub[lens[0]] = '|';
    memcpy(sub + lens[0] + 1, argv[1], lens[1]);
    return lookup(t, sub, n);
}

static int add_range(int first, int last, int step, int argc, int *pos, int max, int n)
{
    if (first < 1 || step < 1)
        return n;
    for (int i = first; i <= last && i < argc; i += step) {
        if (n < max)
            pos[n] = i;
        n++;
    }
    return n;
}

int rds_commands_keys(const struct rds_cmd *c, int argc, const char *const *argv, const size_t *lens, int *pos,
                      int max)
{
    int n = 0;
    /* The common shape (GET, SET, HSET ...): one key at a fixed place. */
    if (c->nspecs == 1 && c->specs_complete && c->spec[0].bs == BS_INDEX && c->spec[0].fk == FK_RANGE &&
        c->spec[0].fk_lastkey == 0) {
        if (c->spec[0].bs_index < 1 || c->spec[0].bs_index >= argc)
            return 0;
        if (max > 0)
            pos[0] = c->spec[0].bs_index;
        return 1;
    }
    if (!c->specs_complete || c->nspecs == 0) {
        if (c->first == 0)
            return 0;
        int last = c->last < 0 ? argc + c->last : c->last;
        return add_range(c->first, last, c->step, argc, pos, max, 0);
    }
    for (int s = 0; s < c->nspecs; s++) {
        const struct rds_keyspec *k = &c->spec[s];
        int first = -1;
        if (k->bs == BS_INDEX) {
            first = k->bs_index;
        } else {
            size_t kl = strlen(k->bs_keyword);
            int from = k->bs_startfrom > 0 ? k->bs_startfrom : argc + k->bs_startfrom;
            int step = k->bs_startfrom > 0 ? 1 : -1;
            for (int i = from; i >= 1 && i < argc; i += step)
                if (lens[i] == kl && strncasecmp(argv[i], k->bs_keyword, kl) == 0) {
                    first = i + 1;
                    break;
                }
        }
        if (first < 1 || first >= argc)
            continue;
        if (k->fk == FK_RANGE) {
            int last;
            if (k->fk_lastkey >= 0)
                last = first + k->fk_lastkey;
            else if (!k->fk_limit)
                last = argc + k->fk_lastkey;
            else
                last = first + ((argc - first) / k->fk_limit + k->fk_lastkey);
            n = add_range(first, last, k->fk_keystep ? k->fk_keystep : 1, argc, pos, max, n);
        } else {
            int idx = first + k->fk_keynumidx;
            if (idx >= argc)
                return -1;
            char num[24];
            if (lens[idx] == 0 || lens[idx] >= sizeof(num))
                return -1;
            memcpy(num, argv[idx], lens[idx]);
            num[lens[idx]] = '\0';
            char *end;
            long nk = strtol(num, &end, 10);
            if (*end || nk < 0 || nk > 1000000)
                return -1;
            int f = first + k->fk_firstkey;
            if (nk > 0)
                n = add_range(f, f + ((int)nk - 1) * k->fk_keystep, k->fk_keystep, argc, pos, max, n);
        }
    }
    return n;
}
