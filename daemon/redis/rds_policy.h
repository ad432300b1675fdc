/* rds_policy.h: a policy's rds_commands and redis_keys, checked against
 * the server's own command table (rds_commands.h). */
#ifndef FERRY_RDS_POLICY_H
#define FERRY_RDS_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "policy.h"
#include "rds_commands.h"

/* A policy's rules compiled against one version of the command table:
 * each a category bit or a command, so that a check is a few bit tests. */
struct rds_rule {
    bool allow;
    bool all;                       /* +@all / -@all */
    int cat;                        /* category bit, or -1 */
    char cmd[RDS_CMD_NAME];         /* a command or container|subcommand; "" for a category */
};

struct rds_acl {
    const struct policy *p;         /* refers: the policy compiled (with p->gen) */
    unsigned gen, version;          /* the policy's set and the table it was compiled against */
    /* owns: the rules' verdict on each command of the table, by index:
     * a check is one load, however many rules there are */
    bool *allowed;
};

struct rds_policy {
    struct rds_acl acl[64];         /* by policy index */
    /* The last command looked up, as the client spelled it: traffic is
     * mostly a few commands in a row, and a hit skips the table. */
    char last[16];
    size_t last_len;
    unsigned last_version;
    const struct rds_cmd *last_cmd; /* refers: into the table of last_version */
};

/* Whether policy p lets argv run: its command by rds_commands, every key
 * by redis_keys. Returns 0, or FE_DENIED / FE_UNAVAILABLE with msg
 * naming the rule or what is missing. */
int rds_policy_check(struct rds_policy *rp, const struct rds_commands *t, const struct policy *p, int argc,
                     const char *const *argv, const size_t *lens, char *msg, size_t len);
void rds_policy_free(struct rds_policy *rp);

#endif
