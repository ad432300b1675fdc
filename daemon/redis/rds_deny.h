/* rds_deny.h: the 'redis' op's deny-list. Pure, for unit tests.
 *
 * A rule is a command and, optionally, what its arguments must look like
 * for the rule to apply, word by word from the first argument:
 *
 *   FLUSHALL                               the command, whatever follows
 *   CLIENT KILL                            a subcommand: the first argument is KILL
 *   XREADGROUP GROUP * * [BLOCK] STREAMS   '*' is any one argument; [BLOCK] is an
 *                                          option: BLOCK anywhere from there on,
 *                                          before the word after it (STREAMS)
 *
 * So "CLIENT SETNAME KILL" and "XREAD STREAMS block 0" (a stream named
 * block) are not caught by rules meant for CLIENT KILL and XREAD's BLOCK. */
#ifndef FERRY_RDS_DENY_H
#define FERRY_RDS_DENY_H

#include <stdbool.h>
#include <stddef.h>

#define DENY_MAX_WORDS 6

struct deny_word {
    char w[32];  /* upper case; "*" matches any argument */
    size_t len;
    bool option; /* [W]: W anywhere before the next word */
};

struct deny_rule {
    char cmd[32];  /* upper-case command name */
    size_t cmd_len;
    struct deny_word words[DENY_MAX_WORDS];
    unsigned nwords;
    char text[200]; /* the rule as written, upper case, for messages */
};

struct rds_deny {
    struct deny_rule *rules; /* owns; sorted by the command's first byte */
    size_t n;
    /* Rules whose command starts with byte b are rules[start[b] ..
     * start[b + 1]): every command is checked against a handful of rules,
     * not the whole list. */
    unsigned start[257];
};

/* Parses "RULE, RULE, ..." (case-insensitive). Returns 0, or -1 with a
 * message naming the bad entry. */
int rds_deny_parse(const char *spec, struct rds_deny *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void rds_deny_free(struct rds_deny *d);

/* Returns the rule that denies the command, or NULL. */
const struct deny_rule *rds_deny_match(const struct rds_deny *d, int argc, const char *const *argv,
                                         const size_t *lens);

#endif
