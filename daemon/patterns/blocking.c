/* blocking.c: the redis.blocking op (blocking.h).
 *
 *   submit: parse, find the timeout, check the policy
 *      │  dedpool_take_for the keys' slot (none free: overloaded)
 *      ▼
 *   the command, its timeout capped, on the taken connection
 *      │                                   │ request gone (client left,
 *      ▼                                   ▼ deadline)
 *   reply: answer, give back        give back maybe_blocked: the pool
 *                                   unblocks it; the reply, when it
 *                                   comes, only frees the job
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocking.h"
#include "blocking_timeout.h"
#include "dedpool.h"
#include "errors.h"
#include "log.h"
#include "rds_backend.h"
#include "rds_cluster.h"
#include "rds_command.h"
#include "rds_config.h"
#include "rds_conn.h"
#include "rds_reply.h"
#include "request.h"

/* The command ends this long before the deadline at most, so that its
 * own timeout reply (nil) reaches the client first: Redis times blocked
 * clients out from its event loop, up to 1/hz (100 ms by default) late. */
#define MARGIN_MAX_MS 250

struct blk_job {
    struct rds_job job;         /* job.r: the request, NULL once it went away */
    struct rds_backend *rb;     /* refers */
    struct rds_conn *c;         /* refers: taken from the pool until given back */
    bool given;                 /* c went back to the pool (the request went away) */
};

/* The time the command may block: what is left before the deadline,
 * less a margin of a third of it (at most MARGIN_MAX_MS). */
static uint64_t cap_ms(struct rds_backend *rb, const struct request *r)
{
    uint64_t now = uv_now(rb->t.loop);
    uint64_t left = r->deadline.at > now ? r->deadline.at - now : 0;
    uint64_t margin = left / 3 < MARGIN_MAX_MS ? left / 3 : MARGIN_MAX_MS;
    return left - margin;
}

static void on_reply(void *arg, const redisReply *reply)
{
    struct blk_job *j = arg;
    if (!j->given)
        dedpool_give(j->rb, j->c, false);
    struct request *r = j->job.r;
    /* A MOVED (a reshard) answers the request as it is; the map learns
     * it, so that a retry goes to the right node. */
    if (j->rb->cluster)
        (void)rds_cluster_redirected(j->rb->cluster, reply);
    if (r) {
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
            rds_backend_fail_reply(r, reply);
        } else {
            size_t at;
            struct cbuf *out = request_result_begin(r, &at);
            rds_reply_encode(reply, out);
            request_result_end(r, at);
        }
    }
    free(j);
}

/* The request went away with its command maybe blocked: the pool
 * unblocks the connection; the reply still comes, to on_reply. */
static void on_cancel(struct rds_job *job)
{
    struct blk_job *j = (struct blk_job *)job;
    j->given = true;
    dedpool_give(j->rb, j->c, true);
}

static int submit(struct rds_backend *rb, struct request *r)
{
    const char *small[RDS_COMMAND_SMALL];
    size_t small_lens[RDS_COMMAND_SMALL];
    const char **argv = NULL;
    size_t *lens = NULL;
    int argc = 0;
    char msg[256];
    const char *bad = rds_command_parse(r->v.args, r->v.args_len, &argc, &argv, &lens, small, small_lens);
    int code = 0;
    if (bad) {
        request_fail(r, FE_BAD_REQUEST, bad);
        goto done;
    }
    struct blocking_timeout t;
    if ((bad = blocking_timeout_find(argc, argv, lens, &t))) {
        snprintf(msg, sizeof(msg), "%.*s: %s", (int)(lens[0] > 40 ? 40 : lens[0]), argv[0], bad);
        request_fail(r, FE_BAD_REQUEST, msg);
        goto done;
    }
    /* No deny-list: it lists these commands only because they would
     * block a shared connection, and this one is not shared. */
    if ((code = rds_backend_check(rb, r, false, argc, argv, lens, msg, sizeof(msg)))) {
        request_fail(r, code, msg);
        code = 0;
        goto done;
    }
    /* On a cluster the command goes to its keys' node; keys in several
     * slots would be refused there with CROSSSLOT anyway. */
    int first, slot = rb->cluster ? rds_cluster_keys_slot(rb->cluster, argc, argv, lens, &first) : -1;
    if (slot == RDS_CLUSTER_CROSSSLOT) {
        request_fail(r, FE_BAD_REQUEST, "CROSSSLOT: on a cluster, the keys of one command must be in one slot "
                                        "(give them a common {hash tag})");
        goto done;
    }
    struct rds_conn *c = dedpool_take_for(rb, slot);
    if (!c) {
        code = dedpool_refusal(rb, msg, sizeof(msg));
        request_fail(r, code, msg);
        code = 0;
        goto done;
    }
    char tbuf[32];
    size_t tn = blocking_timeout_cap(&t, cap_ms(rb, r), tbuf, sizeof(tbuf));
    if (tn) {
        argv[t.index] = tbuf;
        lens[t.index] = tn;
    }
    struct blk_job *j = xcalloc(1, sizeof(*j));
    j->rb = rb;
    j->c = c;
    j->job.cancel = on_cancel;
    if (rds_conn_call(c, argc, argv, lens, on_reply, j) != 0) {
        free(j);
        dedpool_give(rb, c, false);
        code = FE_UNAVAILABLE;
        goto done;
    }
    rds_backend_hold(r, &j->job);
done:
    if (argv && argv != small) {
        free(argv);
        free(lens);
    }
    return code;
}

static const struct rds_opdef ops[] = {
    {"redis.blocking", submit},
};

const struct rds_module blocking_module = {
    .name = "blocking",
    .ops = ops,
    .nops = sizeof(ops) / sizeof(ops[0]),
};
