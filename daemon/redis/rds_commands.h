/* rds_commands.h: what the Redis server says of its own commands: their
 * ACL categories and where their keys are, learned at connect with
 * COMMAND LIST and COMMAND INFO (never a hand-written table: the server
 * knows its version, its modules and its renamed commands).
 *
 * The access policy uses it (categories for rds_commands rules, key
 * positions for redis_keys), and so will Cluster routing. Pure: built
 * from hiredis replies, for unit tests. */
#ifndef FERRY_RDS_COMMANDS_H
#define FERRY_RDS_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define RDS_CMD_NAME 48
#define RDS_MAX_SPECS 4
#define RDS_MAX_CATS 64

/* One key specification (Redis 7's key specs): where the search for keys
 * begins, and how they are found from there. */
struct rds_keyspec {
    enum { BS_UNKNOWN, BS_INDEX, BS_KEYWORD } bs;
    int bs_index;                 /* BS_INDEX: the argument's position */
    char bs_keyword[24];          /* BS_KEYWORD: the keyword ... */
    int bs_startfrom;             /* ... searched from here (negative: from the end, backwards) */
    enum { FK_UNKNOWN, FK_RANGE, FK_KEYNUM } fk;
    int fk_lastkey, fk_keystep, fk_limit;      /* FK_RANGE */
    int fk_keynumidx, fk_firstkey;             /* FK_KEYNUM (fk_keystep too) */
};

struct rds_cmd {
    char name[RDS_CMD_NAME];      /* lower case; "client|kill" for a subcommand */
    size_t name_len;
    size_t index;                 /* its place in the table */
    size_t parent_len;            /* a subcommand: the length of its container's name, else 0 */
    bool container;               /* has subcommands: look up argv[1] too */
    int arity;
    uint64_t cats;                /* bit i: category i of the table */
    int first, last, step;        /* the legacy key positions */
    struct rds_keyspec spec[RDS_MAX_SPECS];
    int nspecs;
    bool specs_complete;          /* every spec was understood (else: first/last/step) */
};

struct rds_commands {
    struct rds_cmd *cmd;          /* owns */
    size_t n;
    size_t *slot;                 /* owns: open addressing, index + 1, 0 empty */
    size_t nslots;
    char cat[RDS_MAX_CATS][32];   /* category names, "read" for @read */
    unsigned ncats;
    unsigned version;             /* bumped at each rebuild */
};

/* The names to ask COMMAND INFO about, from COMMAND LIST's reply: every
 * command, and every subcommand, but no container, whose own reply
 * nests deeper than hiredis 0.14's reader takes. Returns how many, with
 * *names (owned by the caller: free each, then the array). */
size_t rds_commands_names(const redisReply *list, char ***names);
/* Builds t from COMMAND INFO's reply; containers are known by their
 * subcommands. Returns 0, or -1 with why. */
int rds_commands_build(struct rds_commands *t, const redisReply *info, char *why, size_t len);
void rds_commands_free(struct rds_commands *t);

/* The entry for argv: a subcommand's when argv[0] is a container and
 * argv[1] names one of its subcommands. NULL when the server has no such
 * command. */
const struct rds_cmd *rds_commands_find(const struct rds_commands *t, int argc, const char *const *argv,
                                         const size_t *lens);
/* The category's bit, or -1 when the server has no such category. */
int rds_commands_cat(const struct rds_commands *t, const char *name);

/* Writes the positions of argv's keys into pos (at most max) and returns
 * how many there are (which may exceed max: the caller refuses then), or
 * -1 when the arguments do not say (a malformed numkeys). */
int rds_commands_keys(const struct rds_cmd *c, int argc, const char *const *argv, const size_t *lens, int *pos,
                      int max);

#endif
