/* rds_policy.c: Redis commands and keys under an access policy.
 *
 * The rules read as Redis's own ACL rules do: from nothing allowed, each
 * +@category, -@category, +command or -command in order allows or
 * removes what it names, so the last rule that names a command decides.
 * A container's name (+client) covers its subcommands; +client|kill one
 * of them. Categories and keys come from the server (COMMAND INFO), so a
 * policy holds for commands a hand-written table would not know. */
#include <string.h>
#include <strings.h>

#include "cbuf.h"
#include "errors.h"
#include "log.h"
#include "rds_policy.h"

#define MAX_KEYS 256

static bool rule_matches(const struct rds_rule *r, const struct rds_cmd *c)
{
    if (r->all)
        return true;
    if (r->cat >= 0)
        return (c->cats >> r->cat) & 1;
    if (!r->cmd[0])
        return false;
    if (!strcmp(r->cmd, c->name))
        return true;
    /* A container's rule covers its subcommands. */
    return c->parent_len && strlen(r->cmd) == c->parent_len && !memcmp(r->cmd, c->name, c->parent_len);
}

/* Reads p's rules and decides every command of t once. */
static void compile(struct rds_acl *a, const struct policy *p, const struct rds_commands *t)
{
    free(a->allowed);
    a->p = p;
    a->gen = p->gen;
    a->version = t->version;
    size_t n = p->nlist[PL_REDIS_RULES];
    struct rds_rule *rules = xcalloc(n ? n : 1, sizeof(*rules));
    for (size_t i = 0; i < n; i++) {
        const char *w = p->list[PL_REDIS_RULES][i];
        struct rds_rule *r = &rules[i];
        r->allow = w[0] == '+';
        r->cat = -1;
        if (w[1] == '@') {
            r->all = strcasecmp(w + 2, "all") == 0;
            if (!r->all && (r->cat = rds_commands_cat(t, w + 2)) < 0)
                log_warn("policy '%s': the server has no category '%s'; the rule matches nothing", p->name, w + 1);
        } else {
            size_t k = strlen(w + 1) < sizeof(r->cmd) - 1 ? strlen(w + 1) : sizeof(r->cmd) - 1;
            for (size_t q = 0; q < k; q++)
                r->cmd[q] = (char)(w[1 + q] | (w[1 + q] >= 'A' && w[1 + q] <= 'Z' ? 0x20 : 0));
        }
    }
    a->allowed = xcalloc(t->n ? t->n : 1, sizeof(*a->allowed));
    for (size_t c = 0; c < t->n; c++)
        for (size_t i = 0; i < n; i++)
            if (rule_matches(&rules[i], &t->cmd[c]))
                a->allowed[c] = rules[i].allow;
    free(rules);
}

int rds_policy_check(struct rds_policy *rp, const struct rds_commands *t, const struct policy *p, int argc,
                     const char *const *argv, const size_t *lens, char *msg, size_t len)
{
    if (!t->n) {
        snprintf(msg, len, "the Redis server's command table is not known yet (policy '%s' needs it)", p->name);
        return FE_UNAVAILABLE;
    }
    const struct rds_cmd *c;
    if (rp->last_cmd && rp->last_version == t->version && lens[0] == rp->last_len &&
        !memcmp(argv[0], rp->last, lens[0]) && !rp->last_cmd->container) {
        c = rp->last_cmd;
    } else {
        c = rds_commands_find(t, argc, argv, lens);
        if (c && !c->container && !c->parent_len && lens[0] <= sizeof(rp->last)) {
            memcpy(rp->last, argv[0], lens[0]);
            rp->last_len = lens[0];
            rp->last_version = t->version;
            rp->last_cmd = c;
        }
    }
    if (!c) {
        snprintf(msg, len, "policy '%s': '%.*s' is not a command this Redis server has", p->name,
                 (int)(lens[0] > 40 ? 40 : lens[0]), argv[0]);
        return FE_DENIED;
    }
    struct rds_acl *a = &rp->acl[p->index % 64];
    if (a->p != p || a->gen != p->gen || a->version != t->version)
        compile(a, p, t);
    if (!a->allowed[c->index]) {
        snprintf(msg, len, "policy '%s' does not allow '%s' (redis_commands)", p->name, c->name);
        return FE_DENIED;
    }
    int pos[MAX_KEYS];
    int n = rds_commands_keys(c, argc, argv, lens, pos, MAX_KEYS);
    if (n < 0 || n > MAX_KEYS) {
        snprintf(msg, len, "policy '%s': cannot check the keys of this '%s' (%s)", p->name, c->name,
                 n < 0 ? "a malformed key count" : "more than 256 keys");
        return FE_DENIED;
    }
    for (int i = 0; i < n; i++)
        if (!policy_allows_name(p, PL_REDIS_KEYS, argv[pos[i]], lens[pos[i]])) {
            snprintf(msg, len, "policy '%s' does not allow key '%.*s' (redis_keys)", p->name,
                     (int)(lens[pos[i]] > 64 ? 64 : lens[pos[i]]), argv[pos[i]]);
            return FE_DENIED;
        }
    /* Redis names no keys in PUBLISH and SPUBLISH (a channel is no key to
     * its command table), yet security.md treats channels as keys, as the
     * pub/sub ops do: the channel is held to redis_keys too. */
    if (argc >= 2 && (!strcasecmp(c->name, "publish") || !strcasecmp(c->name, "spublish")) &&
        !policy_allows_name(p, PL_REDIS_KEYS, argv[1], lens[1])) {
        snprintf(msg, len, "policy '%s' does not allow channel '%.*s' (redis_keys)", p->name,
                 (int)(lens[1] > 64 ? 64 : lens[1]), argv[1]);
        return FE_DENIED;
    }
    return 0;
}

void rds_policy_free(struct rds_policy *rp)
{
    for (size_t i = 0; i < 64; i++)
        free(rp->acl[i].allowed);
}
