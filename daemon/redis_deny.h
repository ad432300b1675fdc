/* redis_deny.h: the 'redis' op's deny-list. Pure, for unit tests. */
#ifndef FERRY_REDIS_DENY_H
#define FERRY_REDIS_DENY_H

#include <stddef.h>

struct deny_rule {
    char cmd[32];  /* upper-case command name */
    char word[32]; /* upper-case argument that must also appear, or "" */
    size_t cmd_len, word_len;
};

struct redis_deny {
    struct deny_rule *rules; /* owns; sorted by the command's first byte */
    size_t n;
    /* Rules whose command starts with byte b are rules[start[b] ..
     * start[b + 1]): every command is checked against a handful of rules,
     * not the whole list. */
    unsigned start[257];
};

/* Parses "CMD, CMD WORD, ..." (case-insensitive). Returns 0, or -1 with a
 * message naming the bad entry. */
int redis_deny_parse(const char *spec, struct redis_deny *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void redis_deny_free(struct redis_deny *d);

/* Returns the rule that denies the command, or NULL. A rule "CMD WORD"
 * matches when the command is CMD and any later argument is WORD. */
const struct deny_rule *redis_deny_match(const struct redis_deny *d, int argc, const char *const *argv,
                                         const size_t *lens);

#endif
