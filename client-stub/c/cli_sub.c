/* cli_sub.c: opening a subscription and reading its pushes (cli_sub.h). */
#include <stdio.h>

#include "cli_print.h"
#include "cli_sub.h"

int cli_sub_open(ferry_t *f, const char *op, const cbor_item_t *args, uint32_t deadline, int wait_ms,
                 uint64_t *sub)
{
    ferry_msg_t *m = NULL;
    int rc = ferry_call(f, op, args, deadline, &m, wait_ms);
    int status = cli_check_result(m, rc);
    if (!status)
        *sub = m->id;
    ferry_msg_free(m);
    return status;
}

int cli_sub_next(ferry_t *f, uint64_t sub, int wait_ms, ferry_msg_t **out)
{
    for (;;) {
        ferry_msg_t *m;
        int rc = ferry_recv(f, &m, wait_ms);
        if (rc == FERRY_ETIMEDOUT)
            return 3;
        if (rc) {
            fprintf(stderr, "ferry: %s\n", ferry_strerror(rc));
            return 2;
        }
        if (m->kind == FERRY_PUSH && m->sub == sub) {
            *out = m;
            return 0;
        }
        ferry_msg_free(m);
    }
}
