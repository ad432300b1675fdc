/* rds_cljob.c: see rds_cljob.h. A request's replies come back through
 * rds_conn_call rather than straight to the request (rds_conn_send), so
 * that a redirection can be followed before the client sees anything. */
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "log.h"
#include "rds_cljob.h"
#include "rds_command.h"
#include "rds_config.h"
#include "rds_module.h"
#include "rds_reply.h"
#include "request.h"

#define SMALL_KEYS 64
#define RETRY_MIN_MS 10
#define RETRY_MAX_MS 500

enum merge { M_NONE, M_MGET, M_SUM, M_OK };

struct clu_val {
    char *s;   /* owns; NULL for a nil */
    size_t len;
};

struct clu_part {
    struct clu_job *job;   /* refers: the job it is part of */
    int slot;              /* -1: a command without keys */
    int first, n;          /* its keys: job->keys[first .. first + n); n 0: the whole command */
    unsigned node;         /* the node it was last sent to, for a redirection without a host */
    unsigned redirects;    /* MOVED and ASK followed */
    unsigned retries;      /* TRYAGAIN and CLUSTERDOWN waited out */
    uint64_t retry_at;     /* loop time, in the retry list */
    struct clu_part *next; /* in cl->retry */
};

struct clu_job {
    struct rds_job job;      /* job.r: the request; NULL once it is gone */
    struct rds_cluster *cl;  /* refers */
    enum merge merge;
    bool read_only;          /* a replica may answer */
    unsigned held;           /* replies awaited, and parts in the retry list */
    unsigned left;           /* parts without a final reply yet */
    int code;                /* a split part's error (0: none yet) ... */
    char msg[256];           /* ... and its text */
    long long sum;           /* M_SUM */
    struct clu_val *vals;    /* owns (M_MGET): one per key, in key order */
    int *keys;               /* owns: key positions in argv, grouped by slot (split commands) */
    int nkeys, keystep;
    int nparts;
    struct clu_part part[];
};

#define MAX_SPARE 1024

static void job_free(struct clu_job *j)
{
    struct rds_cluster *cl = j->cl;
    if (j->nparts == 1 && !j->vals && !j->keys && cl->nspare < MAX_SPARE) {
        *(void **)j = cl->spare;
        cl->spare = j;
        cl->nspare++;
        return;
    }
    if (j->vals) {
        for (int i = 0; i < j->nkeys; i++)
            free(j->vals[i].s);
        free(j->vals);
    }
    free(j->keys);
    free(j);
}

/* Frees j once its request is gone and nothing refers to j any more. */
static void job_release(struct clu_job *j)
{
    if (!j->job.r && !j->held)
        job_free(j);
}

static void job_cancel(struct rds_job *rj)
{
    job_release(container_of(rj, struct clu_job, job));
}

/* Completes the request with an error now; the parts still out are
 * read and dropped. */
static void job_fail(struct clu_job *j, int code, const char *msg)
{
    struct request *r = j->job.r;
    if (!r)
        return;
    j->job.r = NULL;
    request_fail(r, code, msg);
}

static void job_finish(struct clu_job *j)
{
    if (j->code) {
        job_fail(j, j->code, j->msg);
        return;
    }
    struct request *r = j->job.r;
    j->job.r = NULL;
    size_t at;
    struct cbuf *out = request_result_begin(r, &at);
    if (j->merge == M_MGET) {
        cbuf_array(out, (size_t)j->nkeys);
        for (int i = 0; i < j->nkeys; i++) {
            if (j->vals[i].s)
                cbuf_bytes(out, j->vals[i].s, j->vals[i].len);
            else
                cbuf_null(out);
        }
    } else if (j->merge == M_SUM) {
        cbuf_int(out, j->sum);
    } else {
        cbuf_text(out, "OK", 2);
    }
    request_result_end(r, at);
}

static void on_part_reply(void *arg, const redisReply *reply);

static void ignore_reply(void *arg, const redisReply *reply)
{
    (void)arg;
    (void)reply;
}

/* Sends part p of argv to n (after ASKING when asking). Returns 0 or a
 * negative fe code. */
static int part_send(struct clu_part *p, struct clu_node *n, bool asking, int argc, const char *const *argv,
                     const size_t *lens)
{
    struct clu_job *j = p->job;
    const char *sargv[1 + 2 * 16];
    size_t slens[1 + 2 * 16];
    const char **pargv = (const char **)argv;
    size_t *plens = (size_t *)lens;
    int pargc = argc;
    if (p->n) {
        pargc = 1 + p->n * j->keystep;
        if (pargc <= (int)(sizeof(sargv) / sizeof(sargv[0]))) {
            pargv = sargv;
            plens = slens;
        } else {
            pargv = xmalloc((size_t)pargc * sizeof(*pargv));
            plens = xmalloc((size_t)pargc * sizeof(*plens));
        }
        pargv[0] = argv[0];
        plens[0] = lens[0];
        int k = 1;
        for (int i = p->first; i < p->first + p->n; i++)
            for (int s = 0; s < j->keystep; s++) {
                pargv[k] = argv[j->keys[i] + s];
                plens[k++] = lens[j->keys[i] + s];
            }
    }
    int rc = 0;
    if (asking) {
        const char *a[1] = {"ASKING"};
        size_t al[1] = {6};
        if (rds_conn_call(n->conn, 1, a, al, ignore_reply, NULL) != 0)
            rc = -1;
    }
    if (!rc)
        rc = rds_conn_call(n->conn, pargc, pargv, plens, on_part_reply, p);
    if (pargv != argv && pargv != sargv) {
        free(pargv);
        free(plens);
    }
    if (rc)
        return rds_conn_usable(n->conn) ? FE_OVERLOADED : FE_UNAVAILABLE;
    p->node = n->index;
    j->held++;
    if (p->slot >= 0 && !j->read_only) { /* reads from replicas are unordered anyway */
        struct rds_cluster *cl = j->cl;
        uint16_t via = (uint16_t)(n->index + 1);
        if (cl->inflight[p->slot]++ == 0)
            cl->via[p->slot] = via;
        else if (cl->via[p->slot] != via)
            cl->via[p->slot] = RDS_CLUSTER_MIXED;
    }
    return 0;
}

static void part_redispatch(struct clu_part *p, struct clu_node *forced, bool asking, bool bypass);

/* A part of slot s was answered (or left the retry list): once none is
 * in flight, the parts held back for s go, in the order they came. */
static void slot_drop(struct rds_cluster *cl, int s)
{
    if (s < 0 || --cl->inflight[s] > 0 || cl->stopped)
        return;
    cl->via[s] = 0;
    if (!cl->waiting[s])
        return;
    struct clu_part *go = NULL, **tail = &go, **pp = &cl->held;
    cl->held_tail = NULL;
    while (*pp) {
        struct clu_part *p = *pp;
        if (p->slot == s) {
            *pp = p->next;
            p->next = NULL;
            *tail = p;
            tail = &p->next;
        } else {
            cl->held_tail = p;
            pp = &p->next;
        }
    }
    cl->waiting[s] = 0;
    while (go) {
        struct clu_part *p = go;
        go = p->next;
        struct clu_job *j = p->job;
        j->held--;
        if (j->job.r)
            part_redispatch(p, NULL, false, true);
        job_release(j);
    }
}

/* Whether a new part of slot s may go to n now: not while an earlier
 * one is held back, nor while earlier ones are in flight to another
 * node (after a MOVED, a map change), whose redirections would then
 * arrive after it. */
static bool slot_free(const struct rds_cluster *cl, int s, const struct clu_node *n)
{
    return s < 0 || (!cl->waiting[s] && (!cl->inflight[s] || cl->via[s] == n->index + 1));
}

static void hold(struct clu_part *p)
{
    struct rds_cluster *cl = p->job->cl;
    p->next = NULL;
    if (cl->held_tail)
        cl->held_tail->next = p;
    else
        cl->held = p;
    cl->held_tail = p;
    cl->waiting[p->slot]++;
    p->job->held++;
}

/* Sends p to forced, or to the node its slot maps to now. Fails the
 * whole request when there is none that can take it. */
static void part_dispatch(struct clu_part *p, struct clu_node *forced, bool asking, bool bypass, int argc,
                          const char *const *argv, const size_t *lens)
{
    struct clu_job *j = p->job;
    struct rds_cluster *cl = j->cl;
    struct clu_node *n = forced ? forced : rds_cluster_route(cl, p->slot, j->read_only);
    if (n && !forced && !bypass && !j->read_only && !slot_free(cl, p->slot, n)) {
        hold(p);
        return;
    }
    char msg[320];
    if (!n) {
        cl->unavailable++;
        cl->refresh_wanted = true;
        snprintf(msg, sizeof(msg), "%s", p->slot < 0 ? "no redis cluster node is reachable"
                                                     : "the slot has no known primary yet (the cluster's map is being learned)");
        job_fail(j, FE_UNAVAILABLE, msg);
        return;
    }
    rds_cluster_connect(n);
    if (n->conn && n->conn != NULL && n != forced && n->role == ROLE_REPLICA)
        cl->replica_reads++;
    int rc = n->conn ? part_send(p, n, asking, argc, argv, lens) : FE_UNAVAILABLE;
    if (rc == FE_UNAVAILABLE) {
        cl->unavailable++;
        cl->refresh_wanted = true;
        snprintf(msg, sizeof(msg), "redis cluster node %.100s:%d is unreachable (%.120s)", n->t.addr.host, n->t.addr.port,
                 n->conn && n->conn->last_error[0] ? n->conn->last_error : "reconnecting");
        job_fail(j, FE_UNAVAILABLE, msg);
    } else if (rc) {
        job_fail(j, rc, NULL);
    }
}

/* Sends p again, its command read anew from the request's frame. */
static void part_redispatch(struct clu_part *p, struct clu_node *forced, bool asking, bool bypass)
{
    struct request *r = p->job->job.r;
    const char *small[RDS_COMMAND_SMALL];
    size_t small_lens[RDS_COMMAND_SMALL];
    const char **argv = NULL;
    size_t *lens = NULL;
    int argc = 0;
    const char *bad = rds_command_parse(r->v.args, r->v.args_len, &argc, &argv, &lens, small, small_lens);
    if (bad) {
        job_fail(p->job, FE_INTERNAL, bad); /* it parsed at submit */
        return;
    }
    part_dispatch(p, forced, asking, bypass, argc, argv, lens);
    if (argv != small) {
        free(argv);
        free(lens);
    }
}

static void on_retry(uv_timer_t *t);

static void retry_arm(struct rds_cluster *cl)
{
    if (!cl->retry || cl->stopped)
        return;
    uint64_t now = uv_now(cl->h.tmpl->loop), first = UINT64_MAX;
    for (struct clu_part *p = cl->retry; p; p = p->next)
        first = p->retry_at < first ? p->retry_at : first;
    uv_timer_start(&cl->retry_timer, on_retry, first > now ? first - now : 0, 0);
}

static void retry_later(struct clu_part *p)
{
    struct rds_cluster *cl = p->job->cl;
    uint64_t ms = RETRY_MIN_MS;
    for (unsigned i = 0; i < p->retries && ms < RETRY_MAX_MS; i++)
        ms *= 2;
    p->retries++;
    p->retry_at = uv_now(cl->h.tmpl->loop) + (ms < RETRY_MAX_MS ? ms : RETRY_MAX_MS);
    p->next = cl->retry;
    cl->retry = p;
    p->job->held++;
    /* It still counts in its slot's inflight, but is on no node: what
     * comes next for the slot waits behind it. */
    if (p->slot >= 0 && !p->job->read_only)
        cl->via[p->slot] = RDS_CLUSTER_MIXED;
    retry_arm(cl);
}

static void on_retry(uv_timer_t *t)
{
    struct rds_cluster *cl = container_of(t, struct rds_cluster, retry_timer);
    uint64_t now = uv_now(cl->h.tmpl->loop);
    struct clu_part *due = NULL, **pp = &cl->retry;
    while (*pp) {
        struct clu_part *p = *pp;
        if (p->retry_at <= now) {
            *pp = p->next;
            p->next = due;
            due = p;
        } else {
            pp = &p->next;
        }
    }
    while (due) {
        struct clu_part *p = due;
        due = p->next;
        struct clu_job *j = p->job;
        int s = j->read_only ? -1 : p->slot;
        j->held--;
        if (j->job.r)
            part_redispatch(p, NULL, false, true);
        job_release(j);
        slot_drop(cl, s); /* it held its slot while it waited */
    }
    retry_arm(cl);
}

/* A part's reply: a redirection to follow, or its answer. Returns true
 * when the part waits in the retry list, still holding its slot. */
static bool part_reply(struct clu_part *p, const redisReply *reply)
{
    struct clu_job *j = p->job;
    struct rds_cluster *cl = j->cl;
    j->held--;
    if (!j->job.r || cl->stopped) {
        job_fail(j, FE_SHUTTING_DOWN, NULL);
        job_release(j);
        return false;
    }
    if (!reply) {
        cl->refresh_wanted = true;
        job_fail(j, FE_UNAVAILABLE, "the connection to a redis cluster node was lost; the command may or may not have run");
        job_release(j);
        return false;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        int slot, port;
        char host[256];
        enum rds_redirect k = rds_slots_redirect(reply->str, reply->len, &slot, host, sizeof(host), &port);
        bool busy = (reply->len >= 8 && !memcmp(reply->str, "TRYAGAIN", 8)) ||
                    (reply->len >= 11 && !memcmp(reply->str, "CLUSTERDOWN", 11));
        if (k != RDS_REDIRECT_NONE) {
            if (p->redirects++ >= RDS_CLJOB_MAX_REDIRECTS) {
                char msg[300];
                snprintf(msg, sizeof(msg), "more than %d redirections; the last: %.*s", RDS_CLJOB_MAX_REDIRECTS,
                         (int)(reply->len > 200 ? 200 : reply->len), reply->str);
                job_fail(j, FE_BACKEND_ERROR, msg);
            } else {
                if (!host[0])
                    snprintf(host, sizeof(host), "%s", cl->node[p->node]->t.addr.host);
                struct clu_node *n = rds_cluster_node(cl, host, port, true);
                if (!n) {
                    job_fail(j, FE_UNAVAILABLE, "the cluster names more nodes than ferryd keeps");
                } else if (k == RDS_REDIRECT_MOVED) {
                    cl->moved++;
                    rds_cluster_moved(cl, slot, n);
                    /* Two nodes that each name the other (a slot being
                     * handed over, one SETSLOT applied and not the other):
                     * after the second hop, give them a moment. */
                    if (p->redirects > 2) {
                        retry_later(p);
                        return true;
                    }
                    part_redispatch(p, n, false, true);
                } else {
                    cl->asks++;
                    part_redispatch(p, n, true, true);
                }
            }
            job_release(j);
            return false;
        }
        if (busy) {
            /* A multi-key command while its slot migrates, or the cluster
             * without a quorum (a failover): the same part again after a
             * pause, until the request's deadline. */
            cl->tryagain++;
            if (reply->str[0] == 'C')
                cl->refresh_wanted = true;
            retry_later(p);
            return true;
        }
        if (j->merge == M_NONE || !j->code) {
            j->code = FE_BACKEND_ERROR;
            snprintf(j->msg, sizeof(j->msg), "%.*s", (int)reply->len, reply->str);
            /* The error prefix: WRONGTYPE, ERR ... */
            reqtrace_status_code(&j->job.r->trace, j->msg, strcspn(j->msg, " "));
        }
    } else if (j->merge == M_NONE) {
        struct request *r = j->job.r;
        j->job.r = NULL;
        size_t at;
        struct cbuf *out = request_result_begin(r, &at);
        rds_reply_encode(reply, out);
        request_result_end(r, at);
        job_release(j);
        return false;
    } else if (j->merge == M_MGET) {
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != (size_t)p->n) {
            j->code = FE_BACKEND_ERROR;
            snprintf(j->msg, sizeof(j->msg), "a part of MGET got an unexpected reply");
        } else {
            for (int i = 0; i < p->n; i++) {
                const redisReply *e = reply->element[i];
                struct clu_val *v = &j->vals[j->keys[p->first + i] - 1];
                free(v->s);
                v->s = NULL;
                if (e->type == REDIS_REPLY_STRING) {
                    v->s = xmalloc(e->len + 1);
                    memcpy(v->s, e->str, e->len);
                    v->len = e->len;
                }
            }
        }
    } else if (j->merge == M_SUM) {
        if (reply->type == REDIS_REPLY_INTEGER)
            j->sum += reply->integer;
    }
    if (--j->left == 0)
        job_finish(j);
    job_release(j);
    return false;
}

static void on_part_reply(void *arg, const redisReply *reply)
{
    struct clu_part *p = arg;
    struct rds_cluster *cl = p->job->cl;
    int s = p->job->read_only ? -1 : p->slot;
    /* After the redirection's resend, if any: it goes before what was
     * held back behind it. */
    if (!part_reply(p, reply))
        slot_drop(cl, s);
}

static int cmp_slot(const void *a, const void *b)
{
    const int *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

/* Which commands ferryd splits over slots, and how it merges them. */
static enum merge split_kind(const struct rds_cmd *c)
{
    if (!c || c->parent_len)
        return M_NONE;
    if (!strcmp(c->name, "mget"))
        return M_MGET;
    if (!strcmp(c->name, "mset"))
        return M_OK;
    if (!strcmp(c->name, "del") || !strcmp(c->name, "unlink") || !strcmp(c->name, "exists") ||
        !strcmp(c->name, "touch"))
        return M_SUM;
    return M_NONE;
}

static bool is_read_only(const struct rds_commands *t, const struct rds_cmd *c)
{
    int rd = rds_commands_cat(t, "read"), wr = rds_commands_cat(t, "write");
    return c && rd >= 0 && (c->cats >> rd & 1) && !(wr >= 0 && (c->cats >> wr & 1));
}

void rds_cljob_submit(struct rds_cluster *cl, struct request *r, int argc, const char *const *argv,
                      const size_t *lens)
{
    const struct rds_commands *t = cl->h.commands;
    if (!t->n) {
        cl->h.describe(cl->h.arg, r, NULL, argc, argv, lens);
        cl->unavailable++;
        request_fail(r, FE_UNAVAILABLE, "the cluster's command table is not learned yet");
        return;
    }
    const struct rds_cmd *cmd = rds_commands_find(t, argc, argv, lens);
    int small[SMALL_KEYS], *pos = small;
    int nk = cmd ? rds_commands_keys(cmd, argc, argv, lens, pos, SMALL_KEYS) : 0;
    if (nk > SMALL_KEYS) {
        pos = xmalloc((size_t)nk * sizeof(*pos));
        nk = rds_commands_keys(cmd, argc, argv, lens, pos, nk);
    }
    if (nk < 0)
        nk = 0; /* a malformed numkeys: the server says what is wrong */
    int slot = -1;
    bool cross = false;
    for (int i = 0; i < nk; i++) {
        int s = rds_slots_of(argv[pos[i]], lens[pos[i]]);
        cross |= slot >= 0 && s != slot;
        slot = slot < 0 ? s : slot;
    }
    bool ro = !strcmp(cl->h.tmpl->rc->replica_reads, "yes") && is_read_only(t, cmd);
    struct clu_node *first = rds_cluster_route(cl, slot, false);
    cl->h.describe(cl->h.arg, r, first ? first->conn : NULL, argc, argv, lens);
    enum merge m = split_kind(cmd);
    int step = m == M_OK ? 2 : 1;
    /* Only the plain forms split: MSET's keys at 1, 3, 5 ..., the others'
     * at 1, 2, 3 ... */
    if (cross && m != M_NONE && (pos[0] != 1 || pos[nk - 1] != 1 + (nk - 1) * step || argc != 1 + nk * step)) {
        /* Malformed (MSET k v k): the server says how, to the first key's node. */
        m = M_NONE;
        cross = false;
    }
    if (cross && m == M_NONE) {
        cl->crossslot++;
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "CROSSSLOT: the keys of %.*s are in different hash slots, and Redis Cluster runs a "
                 "multi-key command within one slot only (use a {hash tag})",
                 (int)(lens[0] > 40 ? 40 : lens[0]), argv[0]);
        request_fail(r, FE_BAD_REQUEST, msg);
        goto done;
    }
    int nparts = 1;
    int *keys = NULL;
    int (*pairs)[2] = NULL;
    if (cross) {
        pairs = xmalloc((size_t)nk * sizeof(*pairs));
        for (int i = 0; i < nk; i++) {
            pairs[i][0] = rds_slots_of(argv[pos[i]], lens[pos[i]]);
            pairs[i][1] = pos[i];
        }
        qsort(pairs, (size_t)nk, sizeof(*pairs), cmp_slot);
        for (int i = 1; i < nk; i++)
            nparts += pairs[i][0] != pairs[i - 1][0];
        keys = xmalloc((size_t)nk * sizeof(*keys));
        for (int i = 0; i < nk; i++)
            keys[i] = pairs[i][1];
        cl->split++;
    }
    size_t size = sizeof(struct clu_job) + (size_t)nparts * sizeof(struct clu_part);
    struct clu_job *j;
    if (nparts == 1 && cl->spare) {
        j = cl->spare;
        cl->spare = *(void **)j;
        cl->nspare--;
        memset(j, 0, size);
    } else {
        j = xcalloc(1, size);
    }
    j->cl = cl;
    j->job.cancel = job_cancel;
    j->merge = cross ? m : M_NONE;
    j->read_only = ro;
    j->keys = keys;
    j->nkeys = nk;
    j->keystep = step;
    j->nparts = nparts;
    j->left = (unsigned)nparts;
    if (j->merge == M_MGET)
        j->vals = xcalloc((size_t)nk, sizeof(*j->vals));
    if (!cross) {
        j->part[0] = (struct clu_part){.job = j, .slot = slot};
    } else {
        int at = 0;
        for (int k = 0; k < nparts; k++) {
            int from = at;
            while (at < nk && pairs[at][0] == pairs[from][0])
                at++;
            j->part[k] = (struct clu_part){.job = j, .slot = pairs[from][0], .first = from, .n = at - from};
        }
    }
    free(pairs);
    rds_backend_hold(r, &j->job);
    for (int k = 0; k < nparts && j->job.r; k++)
        part_dispatch(&j->part[k], NULL, false, false, argc, argv, lens);
    job_release(j);
done:
    if (pos != small)
        free(pos);
}

/* ---- ferryd's own commands (rds_backend_call) ---- */

struct clu_call {
    struct rds_cluster *cl;  /* refers */
    void (*fn)(void *arg, const redisReply *reply);
    void *arg;
    unsigned node, redirects;
    int argc;
    const char **argv;       /* into data */
    size_t *lens;            /* into data */
    char data[];             /* owns: the arrays, then the arguments */
};

static void on_call_reply(void *arg, const redisReply *reply);

static int call_send(struct clu_call *k, struct clu_node *n, bool asking)
{
    if (!n)
        return FE_UNAVAILABLE;
    rds_cluster_connect(n);
    if (!n->conn)
        return FE_UNAVAILABLE;
    if (asking) {
        const char *a[1] = {"ASKING"};
        size_t al[1] = {6};
        (void)rds_conn_call(n->conn, 1, a, al, ignore_reply, NULL);
    }
    if (rds_conn_call(n->conn, k->argc, k->argv, k->lens, on_call_reply, k) != 0)
        return rds_conn_usable(n->conn) ? FE_OVERLOADED : FE_UNAVAILABLE;
    k->node = n->index;
    return 0;
}

static void on_call_reply(void *arg, const redisReply *reply)
{
    struct clu_call *k = arg;
    struct rds_cluster *cl = k->cl;
    if (reply && reply->type == REDIS_REPLY_ERROR && !cl->stopped && k->redirects < RDS_CLJOB_MAX_REDIRECTS) {
        int slot, port;
        char host[256];
        enum rds_redirect kind = rds_slots_redirect(reply->str, reply->len, &slot, host, sizeof(host), &port);
        if (kind != RDS_REDIRECT_NONE) {
            k->redirects++;
            if (!host[0])
                snprintf(host, sizeof(host), "%s", cl->node[k->node]->t.addr.host);
            struct clu_node *n = rds_cluster_node(cl, host, port, true);
            if (kind == RDS_REDIRECT_MOVED) {
                cl->moved++;
                if (n)
                    rds_cluster_moved(cl, slot, n);
            } else {
                cl->asks++;
            }
            if (call_send(k, n, kind == RDS_REDIRECT_ASK) == 0)
                return;
            reply = NULL; /* as if the connection had failed */
        }
    }
    k->fn(k->arg, reply);
    free(k);
}

int rds_cljob_call(struct rds_cluster *cl, const char *key, size_t keylen, int argc, const char *const *argv,
                   const size_t *lens, void (*fn)(void *arg, const redisReply *reply), void *arg)
{
    size_t bytes = (size_t)argc * (sizeof(char *) + sizeof(size_t));
    for (int i = 0; i < argc; i++)
        bytes += lens[i];
    struct clu_call *k = xmalloc(sizeof(*k) + bytes);
    *k = (struct clu_call){.cl = cl, .fn = fn, .arg = arg, .argc = argc};
    k->argv = (const char **)(void *)k->data;
    k->lens = (size_t *)(void *)(k->data + (size_t)argc * sizeof(char *));
    char *p = k->data + (size_t)argc * (sizeof(char *) + sizeof(size_t));
    for (int i = 0; i < argc; i++) {
        memcpy(p, argv[i], lens[i]);
        k->argv[i] = p;
        k->lens[i] = lens[i];
        p += lens[i];
    }
    struct clu_node *n = rds_cluster_route(cl, key ? rds_slots_of(key, keylen) : -1, false);
    int rc = call_send(k, n, false);
    if (rc) {
        cl->unavailable++;
        free(k);
    }
    return rc;
}

void rds_cljob_stop(struct rds_cluster *cl)
{
    cl->stopped = true; /* no held part is released from here on */
    while (cl->held) {
        struct clu_part *p = cl->held;
        cl->held = p->next;
        struct clu_job *j = p->job;
        j->held--;
        job_fail(j, FE_SHUTTING_DOWN, NULL);
        job_release(j);
    }
    cl->held_tail = NULL;
    while (cl->retry) {
        struct clu_part *p = cl->retry;
        cl->retry = p->next;
        struct clu_job *j = p->job;
        j->held--;
        job_fail(j, FE_SHUTTING_DOWN, NULL);
        job_release(j);
    }
}
