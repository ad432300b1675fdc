/* txn.c: redis.pipeline and redis.multi (txn.h).
 *
 * Why MULTI ... EXEC may go on a shared connection: a request's commands
 * are appended to the connection's output buffer back to back within one
 * submit (rds_conn_call formats each into c->out.pending at once; nothing
 * else runs on the loop meanwhile), so no other client's command can sit
 * between them in the byte stream Redis reads, and Redis runs one
 * connection's commands in order. Room for all of them is checked first
 * (redis_max_pending), so either all are queued or none: a MULTI left
 * without its EXEC would queue every later client's command. WATCH is
 * connection state that outlives a request, so a multi with watch takes a
 * dedicated connection:
 *
 *   WATCH keys, GET each expected key ──> values as expected?
 *        no (or the request went away): UNWATCH, {"aborted", "expect"}
 *        yes: MULTI, commands, EXEC ──> replies, or nil: {"aborted", "watch"}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "blocking_timeout.h"
#include "codec.h"
#include "dedpool.h"
#include "errors.h"
#include "pargs.h"
#include "rds_backend.h"
#include "rds_cluster.h"
#include "rds_slots.h"
#include "rds_config.h"
#include "rds_conn.h"
#include "rds_reply.h"
#include "request.h"
#include "txn.h"

/* Commands (and watched keys) one request may hold. */
#define TXN_MAX_COMMANDS 10000

/* The commands of a request, parsed: pointers into its frame, valid
 * while the request lives. */
struct txn_cmds {
    int n;
    const char **argv;  /* owns the array: every command's arguments, one after another */
    size_t *lens;       /* owns */
    int *first, *argc;  /* owns: per command, where its arguments start, how many */
    size_t total, cap;
};

/* A value expected of a key after WATCH (null: the key is absent). */
struct txn_expect {
    const char *key;    /* refers into the request's frame */
    size_t keylen;
    const char *val;    /* refers; NULL: absent */
    size_t vallen;
};

enum txn_stage { TS_PIPELINE, TS_WATCH, TS_EXEC, TS_UNWATCH };

struct txn_job {
    struct rds_job job;         /* job.r: NULL once the request went away */
    struct rds_backend *rb;     /* refers */
    struct rds_conn *c;         /* refers: where the commands go */
    bool dedicated;             /* c is the pool's: given back at the end */
    enum txn_stage stage;
    size_t awaited;             /* replies of this stage still to come */
    size_t seen;                /* replies of this stage so far */
    struct txn_cmds cmds;       /* owns */
    struct txn_expect *expect;  /* owns the array */
    size_t nexpect;
    size_t nwatch;              /* keys in WATCH (watch and expect's) */
    const char **wargv;         /* owns the array: WATCH and its keys */
    size_t *wlens;              /* owns */
    struct cbuf out;            /* owns: the result as it is built */
    bool lost;                  /* a reply will never come: the connection failed */
    bool too_large;             /* out passed max_frame */
    bool aborted;               /* EXEC answered nil: a watched key changed */
    long mismatch;              /* the expected value that differed, or -1 */
    char err[512];              /* the first error reply, with where it came from */
    int send_code;              /* a routed pipeline's command could not be sent: the request fails with it */
    struct txn_part *parts;     /* owns: a routed pipeline's replies, one per command (cluster) */
};

/* On a cluster, a pipeline's commands go to their keys' nodes and their
 * replies come back in any order: each is kept here until all are in. */
struct txn_part {
    struct txn_job *j;          /* refers */
    struct cbuf out;            /* owns: the reply, encoded */
};

static void cmds_free(struct txn_cmds *c)
{
    free(c->argv);
    free(c->lens);
    free(c->first);
    free(c->argc);
}

static bool word(const char *a, size_t n, const char *w)
{
    return strlen(w) == n && !strncasecmp(a, w, n);
}

/* A command that would block the connection (XREAD only with BLOCK). */
static bool blocks(int argc, const char *const *argv, const size_t *lens)
{
    if (word(argv[0], lens[0], "XREAD") || word(argv[0], lens[0], "XREADGROUP")) {
        for (int i = 1; i < argc && !word(argv[i], lens[i], "STREAMS"); i++)
            if (word(argv[i], lens[i], "BLOCK"))
                return true;
        return false;
    }
    return blocking_timeout_is_blocking(argv[0], lens[0]);
}

/* Reads "commands" (an array of arrays of strings) and checks each
 * command. Returns 0, or a code with msg. */
static int cmds_read(struct rds_backend *rb, struct request *r, const uint8_t *p, size_t n,
                     struct txn_cmds *out, char *msg, size_t len)
{
    struct cursor c = {p, n, 0};
    struct tok t;
    memset(out, 0, sizeof(*out));
    if (cursor_next(&c, &t) || t.type != TOK_ARRAY || t.u == 0) {
        snprintf(msg, len, "'commands' must be a non-empty array of commands");
        return FE_BAD_REQUEST;
    }
    if (t.u > TXN_MAX_COMMANDS) {
        snprintf(msg, len, "at most %d commands are accepted in one request", TXN_MAX_COMMANDS);
        return FE_BAD_REQUEST;
    }
    out->n = (int)t.u;
    out->first = xcalloc(t.u, sizeof(int));
    out->argc = xcalloc(t.u, sizeof(int));
    for (int i = 0; i < out->n; i++) {
        struct tok a;
        if (cursor_next(&c, &a) || a.type != TOK_ARRAY || a.u == 0 || a.u > 1u << 20) {
            snprintf(msg, len, "command %d: must be a non-empty array of strings", i + 1);
            return FE_BAD_REQUEST;
        }
        if (out->total + a.u > out->cap) {
            out->cap = (out->total + a.u) * 2;
            out->argv = xrealloc(out->argv, out->cap * sizeof(*out->argv));
            out->lens = xrealloc(out->lens, out->cap * sizeof(*out->lens));
        }
        out->first[i] = (int)out->total;
        out->argc[i] = (int)a.u;
        for (uint64_t k = 0; k < a.u; k++) {
            struct tok s;
            if (cursor_next(&c, &s) || (s.type != TOK_TEXT && s.type != TOK_BYTES)) {
                snprintf(msg, len, "command %d: must be a non-empty array of strings", i + 1);
                return FE_BAD_REQUEST;
            }
            out->argv[out->total] = (const char *)s.p;
            out->lens[out->total++] = s.n;
        }
        const char **argv = out->argv + out->first[i];
        const size_t *lens = out->lens + out->first[i];
        int argc = out->argc[i];
        int nl = (int)(lens[0] > 40 ? 40 : lens[0]);
        if (word(argv[0], lens[0], "MULTI") || word(argv[0], lens[0], "EXEC") ||
            word(argv[0], lens[0], "DISCARD") || word(argv[0], lens[0], "WATCH") ||
            word(argv[0], lens[0], "UNWATCH")) {
            snprintf(msg, len, "command %d: %.*s is not accepted here: redis.multi sends MULTI/EXEC, "
                     "and its 'watch' WATCH", i + 1, nl, argv[0]);
            return FE_BAD_REQUEST;
        }
        if (blocks(argc, argv, lens)) {
            snprintf(msg, len, "command %d: %.*s blocks: send it with redis.blocking", i + 1, nl, argv[0]);
            return FE_BAD_REQUEST;
        }
        char why[256];
        int code = rds_backend_check(rb, r, true, argc, argv, lens, why, sizeof(why));
        if (code) {
            snprintf(msg, len, "command %d: %s", i + 1, why);
            return code;
        }
    }
    return 0;
}

/* The shared connection with the fewest replies awaited, preferring
 * ready ones (as the redis op picks): all of a request's commands go on
 * this one connection, in order. */
static struct rds_conn *pick(struct rds_backend *rb)
{
    struct rds_conn *best = NULL;
    for (size_t i = 0; i < rb->nconns; i++) {
        struct rds_conn *c = rb->conns[i];
        if (!rds_conn_usable(c))
            continue;
        if (!best || (c->state == RC_READY && best->state != RC_READY) ||
            (c->state == best->state && rds_conn_pending(c) < rds_conn_pending(best)))
            best = c;
    }
    return best;
}

static bool room(const struct rds_conn *c, size_t n)
{
    return rds_conn_pending(c) + n <= (size_t)c->t->rc->max_pending;
}

static void job_free(struct txn_job *j)
{
    if (j->dedicated)
        dedpool_give(j->rb, j->c, false);
    if (j->parts) {
        for (int i = 0; i < j->cmds.n; i++)
            cbuf_free(&j->parts[i].out);
        free(j->parts);
    }
    cmds_free(&j->cmds);
    free(j->expect);
    free(j->wargv);
    free(j->wlens);
    cbuf_free(&j->out);
    free(j);
}

/* Keeps the first error reply, saying where it came from. */
static void note_error(struct txn_job *j, const char *where, long n, const redisReply *reply)
{
    /* A MOVED on a multi's node (a reshard): the map learns it, so that a
     * retry goes to the right node. */
    if (j->rb->cluster)
        (void)rds_cluster_redirected(j->rb->cluster, reply);
    if (j->err[0])
        return;
    int l = (int)(reply->len > 400 ? 400 : reply->len);
    if (n >= 0)
        snprintf(j->err, sizeof(j->err), "%s %ld: %.*s", where, n, l, reply->str);
    else
        snprintf(j->err, sizeof(j->err), "%s: %.*s", where, l, reply->str);
}

static void append(struct txn_job *j, const redisReply *reply)
{
    if (j->too_large)
        return;
    rds_reply_encode(reply, &j->out);
    if (j->out.len > (size_t)j->rb->t.cfg->max_frame)
        j->too_large = true;
}

/* Answers the request, if it is still there, from what the job holds. */
static void answer(struct txn_job *j)
{
    struct request *r = j->job.r;
    if (!r)
        return;
    j->job.r = NULL;
    if (j->send_code) {
        request_fail(r, j->send_code, j->err);
    } else if (j->lost) {
        request_fail(r, FE_UNAVAILABLE,
                     "the connection to redis was lost; the commands may or may not have run");
    } else if (j->err[0]) {
        request_fail(r, FE_BACKEND_ERROR, j->err);
    } else if (j->too_large) {
        request_fail(r, FE_TOO_LARGE, "the replies together are larger than max_frame");
    } else if (j->aborted || j->mismatch >= 0) {
        struct cbuf o;
        cbuf_init(&o);
        cbuf_map(&o, j->aborted ? 2 : 3);
        cbuf_str(&o, "aborted");
        cbuf_bool(&o, true);
        cbuf_str(&o, "reason");
        cbuf_str(&o, j->aborted ? "watch" : "expect");
        if (!j->aborted) {
            const struct txn_expect *e = &j->expect[j->mismatch];
            cbuf_str(&o, "key");
            cbuf_bytes(&o, e->key, e->keylen);
        }
        request_result(r, o.data, o.len);
        cbuf_free(&o);
    } else {
        request_result(r, j->out.data, j->out.len);
    }
}

/* ---- redis.pipeline ---- */

static void on_pipeline_reply(void *arg, const redisReply *reply)
{
    struct txn_job *j = arg;
    if (!reply)
        j->lost = true;
    else
        append(j, reply);
    if (--j->awaited)
        return;
    answer(j);
    job_free(j);
}

static void on_cancel(struct rds_job *job)
{
    /* The replies still come (none of these commands blocks); the last
     * one frees the job. */
    (void)job;
}

static int send_all(struct txn_job *j, void (*fn)(void *, const redisReply *))
{
    for (int i = 0; i < j->cmds.n; i++)
        if (rds_conn_call(j->c, j->cmds.argc[i], j->cmds.argv + j->cmds.first[i], j->cmds.lens + j->cmds.first[i],
                          fn, j) != 0)
            return -1; /* not reached: room() was checked */
    return 0;
}

/* A routed pipeline's reply: kept in its command's place; the last one
 * puts them together in order and answers. */
static void routed_release(struct txn_job *j)
{
    if (--j->awaited)
        return;
    for (int i = 0; i < j->cmds.n && !j->too_large; i++) {
        cbuf_put(&j->out, j->parts[i].out.data, j->parts[i].out.len);
        j->too_large = j->out.len > (size_t)j->rb->t.cfg->max_frame;
    }
    answer(j);
    job_free(j);
}

static void on_routed_reply(void *arg, const redisReply *reply)
{
    struct txn_part *part = arg;
    struct txn_job *j = part->j;
    if (!reply)
        j->lost = true;
    else if (!j->too_large)
        rds_reply_encode(reply, &part->out);
    routed_release(j);
}

/* redis.pipeline on a cluster: each command through the cluster's
 * routing (its first key's slot, MOVED and ASK followed), as the redis
 * op sends it; commands for one slot keep their order. A command whose
 * keys span slots is not split (the redis op splits MGET and the like):
 * Redis's CROSSSLOT error takes its place. */
static void pipeline_routed(struct txn_job *j)
{
    j->parts = xcalloc((size_t)j->cmds.n, sizeof(*j->parts));
    j->awaited = (size_t)j->cmds.n + 1; /* + 1: none completes while sending */
    for (int i = 0; i < j->cmds.n; i++) {
        const char *const *argv = j->cmds.argv + j->cmds.first[i];
        const size_t *lens = j->cmds.lens + j->cmds.first[i];
        int first, slot = rds_cluster_keys_slot(j->rb->cluster, j->cmds.argc[i], argv, lens, &first);
        j->parts[i].j = j;
        cbuf_init(&j->parts[i].out);
        int code = rds_backend_call(j->rb, slot == RDS_CLUSTER_KEYLESS ? NULL : argv[first],
                                    slot == RDS_CLUSTER_KEYLESS ? 0 : lens[first], j->cmds.argc[i], argv, lens,
                                    on_routed_reply, &j->parts[i]);
        if (code) {
            /* Those after it are not sent either. */
            j->send_code = code;
            snprintf(j->err, sizeof(j->err), "command %d could not be sent (%s); the commands before it "
                     "may have run, the others did not", i + 1, fe_name(code));
            j->awaited -= (size_t)(j->cmds.n - i);
            break;
        }
    }
    routed_release(j);
}

static int pipeline_submit(struct rds_backend *rb, struct request *r)
{
    struct parg spec[] = {{.name = "commands", .type = PA_ARRAY, .required = true}};
    char msg[512];
    if (pargs_read(r->v.args, r->v.args_len, spec, 1, msg, sizeof(msg))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    struct txn_job *j = xcalloc(1, sizeof(*j));
    j->rb = rb;
    j->mismatch = -1;
    j->job.cancel = on_cancel;
    cbuf_init(&j->out);
    int code = cmds_read(rb, r, spec[0].p, spec[0].n, &j->cmds, msg, sizeof(msg));
    if (code) {
        request_fail(r, code, msg);
        job_free(j);
        return 0;
    }
    if (rb->cluster) {
        j->stage = TS_PIPELINE;
        cbuf_array(&j->out, (size_t)j->cmds.n);
        rds_backend_hold(r, &j->job);
        pipeline_routed(j);
        return 0;
    }
    j->c = pick(rb);
    if (!j->c || !room(j->c, (size_t)j->cmds.n)) {
        code = j->c ? FE_OVERLOADED : FE_UNAVAILABLE;
        job_free(j);
        return code;
    }
    j->stage = TS_PIPELINE;
    j->awaited = (size_t)j->cmds.n;
    cbuf_array(&j->out, (size_t)j->cmds.n);
    rds_backend_hold(r, &j->job);
    (void)send_all(j, on_pipeline_reply);
    return 0;
}

/* ---- redis.multi ---- */

static void on_exec_reply(void *arg, const redisReply *reply);

/* MULTI, the commands, EXEC. */
static void send_exec(struct txn_job *j)
{
    const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
    size_t ml[1] = {5}, el[1] = {4};
    j->stage = TS_EXEC;
    j->seen = 0;
    j->awaited = (size_t)j->cmds.n + 2;
    (void)rds_conn_call(j->c, 1, multi, ml, on_exec_reply, j);
    (void)send_all(j, on_exec_reply);
    (void)rds_conn_call(j->c, 1, exec, el, on_exec_reply, j);
}

static void on_exec_reply(void *arg, const redisReply *reply)
{
    struct txn_job *j = arg;
    size_t i = j->seen++;
    if (!reply) {
        j->lost = true;
    } else if (i + 1 < (size_t)j->cmds.n + 2) {
        /* MULTI's OK, and each command's QUEUED or why it was refused. */
        if (reply->type == REDIS_REPLY_ERROR)
            note_error(j, i ? "command" : "MULTI", i ? (long)i : -1, reply);
    } else if (reply->type == REDIS_REPLY_NIL) {
        j->aborted = true;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        /* EXECABORT: the first refused command says why. */
        char why[512];
        snprintf(why, sizeof(why), "%s", j->err);
        j->err[0] = '\0';
        note_error(j, "EXEC", -1, reply);
        if (why[0] && strlen(j->err) + strlen(why) + 3 < sizeof(j->err)) {
            strcat(j->err, " (");
            strcat(j->err, why);
            strcat(j->err, ")");
        }
    } else {
        append(j, reply);
    }
    if (--j->awaited)
        return;
    answer(j);
    job_free(j);
}

static void on_unwatch_reply(void *arg, const redisReply *reply)
{
    (void)reply;
    job_free(arg);
}

/* WATCH's reply, then each expected key's GET. */
static void on_watch_reply(void *arg, const redisReply *reply)
{
    struct txn_job *j = arg;
    size_t i = j->seen++;
    if (!reply) {
        j->lost = true;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        note_error(j, i ? "expect's GET" : "WATCH", i ? (long)i : -1, reply);
    } else if (i > 0 && j->job.r && j->mismatch < 0) {
        /* The frame the expected values point into lives while r does. */
        const struct txn_expect *e = &j->expect[i - 1];
        bool same = e->val ? reply->type == REDIS_REPLY_STRING && reply->len == e->vallen &&
                                 !memcmp(reply->str, e->val, e->vallen)
                           : reply->type == REDIS_REPLY_NIL;
        if (!same)
            j->mismatch = (long)(i - 1);
    }
    if (--j->awaited)
        return;
    if (j->lost) {
        answer(j);
        job_free(j);
        return;
    }
    if (j->job.r && !j->err[0] && j->mismatch < 0 && room(j->c, (size_t)j->cmds.n + 2)) {
        send_exec(j);
        return;
    }
    /* Not going on: the keys are unwatched before the connection goes
     * back to the pool, and the request is answered now. */
    if (j->job.r && !j->err[0] && j->mismatch < 0)
        snprintf(j->err, sizeof(j->err), "the dedicated connection has no room for the commands");
    answer(j);
    const char *unwatch[1] = {"UNWATCH"};
    size_t ul[1] = {7};
    j->stage = TS_UNWATCH;
    if (rds_conn_call(j->c, 1, unwatch, ul, on_unwatch_reply, j) != 0)
        job_free(j);
}

/* Reads "expect" (a map of key to string or null) into j->expect. */
static const char *expect_read(struct txn_job *j, const uint8_t *p, size_t n)
{
    struct cursor c = {p, n, 0};
    struct tok t;
    if (cursor_next(&c, &t) || t.type != TOK_MAP)
        return "'expect' must be a map of keys to values (strings, or null for an absent key)";
    if (t.u > TXN_MAX_COMMANDS)
        return "'expect' has too many keys";
    j->expect = xcalloc(t.u ? t.u : 1, sizeof(*j->expect));
    j->nexpect = t.u;
    for (uint64_t i = 0; i < t.u; i++) {
        struct tok k, v;
        if (cursor_next(&c, &k) || (k.type != TOK_TEXT && k.type != TOK_BYTES) || cursor_next(&c, &v) ||
            (v.type != TOK_TEXT && v.type != TOK_BYTES && v.type != TOK_NULL))
            return "'expect' must be a map of keys to values (strings, or null for an absent key)";
        j->expect[i] = (struct txn_expect){(const char *)k.p, k.n, v.type == TOK_NULL ? NULL : (const char *)v.p,
                                           v.type == TOK_NULL ? 0 : v.n};
    }
    return NULL;
}

/* WATCH's arguments: "watch"'s keys, then expect's. Returns 0 or a code. */
static int watch_read(struct rds_backend *rb, struct request *r, struct txn_job *j, const struct parg *watch,
                      char *msg, size_t len)
{
    size_t nw = watch->present ? watch->u : 0;
    if (nw + j->nexpect > TXN_MAX_COMMANDS) {
        snprintf(msg, len, "too many keys to watch");
        return FE_BAD_REQUEST;
    }
    j->wargv = xcalloc(nw + j->nexpect + 1, sizeof(*j->wargv));
    j->wlens = xcalloc(nw + j->nexpect + 1, sizeof(*j->wlens));
    j->wargv[0] = "WATCH";
    j->wlens[0] = 5;
    if (nw && pargs_strings(watch->p, watch->n, j->wargv + 1, j->wlens + 1, (int)nw, msg, len) < 0) {
        snprintf(msg, len, "'watch' must be an array of keys");
        return FE_BAD_REQUEST;
    }
    for (size_t i = 0; i < j->nexpect; i++) {
        j->wargv[1 + nw + i] = j->expect[i].key;
        j->wlens[1 + nw + i] = j->expect[i].keylen;
    }
    j->nwatch = nw + j->nexpect;
    char why[256];
    int code = rds_backend_check(rb, r, false, (int)j->nwatch + 1, j->wargv, j->wlens, why, sizeof(why));
    for (size_t i = 0; !code && i < j->nexpect; i++) {
        const char *get[2] = {"GET", j->expect[i].key};
        size_t gl[2] = {3, j->expect[i].keylen};
        code = rds_backend_check(rb, r, false, 2, get, gl, why, sizeof(why));
    }
    if (code)
        snprintf(msg, len, "watch: %s", why);
    return code;
}

/* On a cluster, the slot a multi runs in: its commands' keys and the
 * watched ones must all be in one (a transaction runs on one node).
 * Returns it (RDS_CLUSTER_KEYLESS: no key at all), or
 * RDS_CLUSTER_CROSSSLOT. */
static int multi_slot(struct rds_backend *rb, const struct txn_job *j)
{
    int slot = RDS_CLUSTER_KEYLESS;
    for (int i = 0; i < j->cmds.n + (int)j->nwatch; i++) {
        int first, s;
        if (i < j->cmds.n)
            s = rds_cluster_keys_slot(rb->cluster, j->cmds.argc[i], j->cmds.argv + j->cmds.first[i],
                                      j->cmds.lens + j->cmds.first[i], &first);
        else
            s = rds_slots_of(j->wargv[1 + i - j->cmds.n], j->wlens[1 + i - j->cmds.n]);
        if (s == RDS_CLUSTER_KEYLESS)
            continue;
        if (s == RDS_CLUSTER_CROSSSLOT || (slot >= 0 && s != slot))
            return RDS_CLUSTER_CROSSSLOT;
        slot = s;
    }
    return slot;
}

static int multi_submit(struct rds_backend *rb, struct request *r)
{
    struct parg spec[] = {
        {.name = "commands", .type = PA_ARRAY, .required = true},
        {.name = "watch", .type = PA_ARRAY},
        {.name = "expect", .type = PA_ANY},
    };
    char msg[512];
    if (pargs_read(r->v.args, r->v.args_len, spec, 3, msg, sizeof(msg))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    struct txn_job *j = xcalloc(1, sizeof(*j));
    j->rb = rb;
    j->mismatch = -1;
    j->job.cancel = on_cancel;
    cbuf_init(&j->out);
    const char *bad = spec[2].present ? expect_read(j, spec[2].p, spec[2].n) : NULL;
    int code = bad ? FE_BAD_REQUEST : cmds_read(rb, r, spec[0].p, spec[0].n, &j->cmds, msg, sizeof(msg));
    if (bad)
        snprintf(msg, sizeof(msg), "%s", bad);
    bool watching = (spec[1].present && spec[1].u > 0) || j->nexpect > 0;
    if (!code && watching)
        code = watch_read(rb, r, j, &spec[1], msg, sizeof(msg));
    if (code) {
        request_fail(r, code, msg);
        job_free(j);
        return 0;
    }
    int slot = rb->cluster ? multi_slot(rb, j) : RDS_CLUSTER_KEYLESS;
    if (slot == RDS_CLUSTER_CROSSSLOT) {
        request_fail(r, FE_BAD_REQUEST, "CROSSSLOT: on a cluster, every key of a redis.multi (its commands' and "
                                        "the watched ones) must be in one slot: give them a common {hash tag}");
        job_free(j);
        return 0;
    }
    if (!watching) {
        /* On a cluster: the shared connection of the slot's node. A MOVED
         * (a reshard meanwhile) refuses the commands, and EXEC answers
         * EXECABORT with it: the request fails, nothing ran. */
        j->c = rb->cluster ? rds_cluster_slot_conn(rb->cluster, slot) : pick(rb);
        if (!j->c || !room(j->c, (size_t)j->cmds.n + 2)) {
            code = j->c ? FE_OVERLOADED : FE_UNAVAILABLE;
            job_free(j);
            return code;
        }
        rds_backend_hold(r, &j->job);
        send_exec(j);
        return 0;
    }
    j->c = dedpool_take_for(rb, slot);
    if (!j->c) {
        request_fail(r, dedpool_refusal(rb, msg, sizeof(msg)), msg);
        job_free(j);
        return 0;
    }
    j->dedicated = true;
    if (!room(j->c, j->nexpect + 1 + (size_t)j->cmds.n + 2)) {
        job_free(j);
        return FE_OVERLOADED;
    }
    rds_backend_hold(r, &j->job);
    j->stage = TS_WATCH;
    j->awaited = 1 + j->nexpect;
    (void)rds_conn_call(j->c, (int)j->nwatch + 1, j->wargv, j->wlens, on_watch_reply, j);
    for (size_t i = 0; i < j->nexpect; i++) {
        const char *get[2] = {"GET", j->expect[i].key};
        size_t gl[2] = {3, j->expect[i].keylen};
        (void)rds_conn_call(j->c, 2, get, gl, on_watch_reply, j);
    }
    return 0;
}

static const struct rds_opdef ops[] = {
    {"redis.pipeline", pipeline_submit},
    {"redis.multi", multi_submit},
};

const struct rds_module txn_module = {
    .name = "txn",
    .ops = ops,
    .nops = sizeof(ops) / sizeof(ops[0]),
};
