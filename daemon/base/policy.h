/* policy.h: who may do what, by the peer's credentials.
 *
 * A policy file (key 'policy_file') names policies; each says which peers
 * it covers (uid, user, gid, group: the kernel's SO_PEERCRED, nothing a
 * client can claim) and what they may do: which ops, which Redis commands
 * (rules in Redis's ACL terms: +@category, -@category, +command,
 * -command|subcommand, evaluated by the Redis backend against the
 * server's own COMMAND INFO), which Redis keys (glob patterns), and which
 * RabbitMQ exchanges and queues, in RabbitMQ's configure / write / read
 * terms. A peer gets the first policy that covers it, else the default
 * ("[*]"), else it is refused. Without a file, every peer may do
 * everything the socket's mode lets it reach.
 *
 * Pure apart from reading the file and resolving names (at load, never
 * per request): the parser is unit-tested and fuzzed. */
#ifndef FERRY_POLICY_H
#define FERRY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The op table's index of an op name, or -1 (given at load, so that an
 * op name is checked against what this daemon serves). */
typedef int (*policy_op_index_fn)(void *ctx, const char *name);

/* The kinds of name a policy grants. */
enum policy_list {
    PL_REDIS_RULES,     /* "+@read", "-flushall", ... in order */
    PL_REDIS_KEYS,      /* key globs */
    PL_AMQP_CONFIGURE,  /* queues and exchanges it may declare, bind, delete */
    PL_AMQP_WRITE,      /* exchanges it may publish to */
    PL_AMQP_READ,       /* queues it may consume from or get from */
    PL_NLISTS
};

struct policy_peer {
    enum { PP_UID, PP_GID } kind;
    uint32_t id;
};

struct policy {
    char name[64];
    unsigned index;                 /* position in its set */
    struct policy_peer *peers;      /* owns */
    size_t npeers;
    bool all_ops;                   /* ops = * */
    char **ops;                     /* owns: op names, checked against the table at load */
    size_t nops;
    uint64_t op_bits;               /* by op index in the table given at load */
    char **list[PL_NLISTS];         /* owns */
    /* owns: what each glob of list[] is, so that the common ones ("*",
     * "prefix*", a plain name) are matched without fnmatch: a key is
     * checked on every request */
    struct policy_glob {
        enum { PG_ALL, PG_PREFIX, PG_EXACT, PG_GLOB } kind;
        size_t len;                 /* PG_PREFIX: of the prefix; PG_EXACT: of the name */
    } *glob[PL_NLISTS];
    size_t nlist[PL_NLISTS];
    bool has_list[PL_NLISTS];       /* the key was given (absent: nothing is granted) */
    int line;                       /* where it starts, for messages */
    unsigned gen;                   /* its set's, so that a cache of it can tell a reload */
    /* Counters, carried across reloads by name. */
    uint64_t requests, denied;
};

struct policy_set {
    struct policy *p;               /* owns */
    size_t n;
    struct policy *fallback;        /* refers: the "[*]" policy, or NULL */
    unsigned gen;                   /* changes at each load: clients re-resolve */
    uint64_t refused_peers;         /* peers no policy covered */
};

/* Parses the policy text (path names it in messages), resolving user and
 * group names, and checks op names with op_index (when not NULL). Returns 0, or -1 with one
 * line in err naming the file, line and what is wrong. */
int policy_parse(struct policy_set *set, const char *path, const char *text, policy_op_index_fn op_index,
                 void *ctx, char *err, size_t errlen) __attribute__((warn_unused_result));
/* Reads and parses path; op_index may be NULL (op names unchecked). */
int policy_load(struct policy_set *set, const char *path, policy_op_index_fn op_index, void *ctx, char *err,
                size_t errlen) __attribute__((warn_unused_result));
void policy_free(struct policy_set *set);
/* Moves the counters of policies of the same name from old to set. */
void policy_carry_counts(struct policy_set *set, const struct policy_set *old);

/* The policy covering a peer, or NULL when none does (refuse it). */
struct policy *policy_find(const struct policy_set *set, uint32_t uid, uint32_t gid);
static inline bool policy_allows_op(const struct policy *p, unsigned op_index)
{
    return p->all_ops || (op_index < 64 && (p->op_bits >> op_index) & 1);
}
/* Whether name matches one of the globs of list l ("*" and "?", and
 * "[...]" as fnmatch has them). */
bool policy_allows_name(const struct policy *p, enum policy_list l, const char *name, size_t len);
const char *policy_list_key(enum policy_list l);

#endif
