/* Fuzz target: the policy file (base/policy.c). Properties: no crash or
 * overread; a refusal names the file and line; a policy that parses has
 * peers unless it is the default; matching a peer and names never fails. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

/* Op names as a daemon would know them: a few, by index. */
static int op_index(void *ctx, const char *name)
{
    (void)ctx;
    static const char *const ops[] = {"ping", "hello", "stats", "health", "redis", "publish", "consume", "ack"};
    for (int i = 0; i < 8; i++)
        if (!strcmp(ops[i], name))
            return i;
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    struct policy_set set;
    char err[300];
    err[0] = '\0';
    if (policy_parse(&set, "p.conf", text, size & 1 ? op_index : NULL, NULL, err, sizeof(err)) != 0) {
        assert(strncmp(err, "p.conf line ", 12) == 0);
    } else {
        for (size_t i = 0; i < set.n; i++)
            assert(set.p[i].npeers > 0 || !strcmp(set.p[i].name, "*"));
        const struct policy *p = policy_find(&set, 1000, 1000);
        if (p) {
            (void)policy_allows_op(p, 4);
            for (int l = 0; l < PL_NLISTS; l++)
                (void)policy_allows_name(p, (enum policy_list)l, text, size);
        }
        policy_free(&set);
    }
    free(text);
    return 0;
}
