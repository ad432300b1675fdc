/* scripts.c: applications' Lua scripts, registered by name in this
 * ferryd (script.load) and run by name (script.call).
 *
 * A registered script keeps its body, so evalsha.c can load it again
 * whenever Redis answers NOSCRIPT (a restart, a failover, SCRIPT FLUSH):
 * callers never see NOSCRIPT and never load anything twice. Entries are
 * counted references: a script.load that replaces a name while calls of
 * the old body are in flight frees the old one when the last call ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "errors.h"
#include "evalsha.h"
#include "pargs.h"
#include "rds_backend.h"
#include "rds_reply.h"
#include "request.h"
#include "scripts.h"

#define SCRIPTS_MAX 1024        /* names registered at once */
#define SCRIPTS_NAME_MAX 200
#define SCRIPTS_ARGS_MAX 65536  /* keys plus args of one call */

struct script {
    struct evalsha_script s;  /* s.body refers to body */
    char *body;               /* owns */
    char *name;               /* owns */
    unsigned refs;            /* the registry's one, and one per call in flight */
};

struct scripts_state {
    struct script *reg[SCRIPTS_MAX]; /* owns a reference to each; NULL where free */
    size_t n;
    uint64_t loads, calls, errors;
};

/* A script.load or script.call in flight; outlives its request until
 * the reply comes, which always does. */
struct scripts_job {
    struct rds_job job;          /* job.r: NULL once cancelled */
    struct scripts_state *S;     /* refers */
    struct script *sc;           /* owns a reference (call), or the new entry (load) */
};

static void script_unref(struct script *sc)
{
    if (--sc->refs)
        return;
    free(sc->body);
    free(sc->name);
    free(sc);
}

static struct script **find(struct scripts_state *S, const uint8_t *name, size_t n)
{
    for (size_t i = 0; i < SCRIPTS_MAX; i++)
        if (S->reg[i] && strlen(S->reg[i]->name) == n && !memcmp(S->reg[i]->name, name, n))
            return &S->reg[i];
    return NULL;
}

static void job_cancel(struct rds_job *j)
{
    (void)j;
}

/* Registers sc under its name, replacing an entry of that name. Returns
 * false when the registry is full. */
static bool enter(struct scripts_state *S, struct script *sc)
{
    struct script **slot = find(S, (const uint8_t *)sc->name, strlen(sc->name));
    if (slot) {
        script_unref(*slot);
        *slot = sc;
        return true;
    }
    for (size_t i = 0; i < SCRIPTS_MAX; i++)
        if (!S->reg[i]) {
            S->reg[i] = sc;
            S->n++;
            return true;
        }
    return false;
}

static void on_load(void *arg, const redisReply *reply)
{
    struct scripts_job *j = arg;
    struct request *r = j->job.r;
    struct script *sc = j->sc;
    struct scripts_state *S = j->S;
    free(j);
    bool ok = reply && reply->type == REDIS_REPLY_STRING && reply->len == 40;
    /* Registered even when the request is gone: Redis has it, and a
     * caller retrying the load gets the same result. */
    bool full = ok && !enter(S, sc);
    if (!ok || full)
        script_unref(sc);
    else
        S->loads++;
    S->errors += !ok;
    if (!r)
        return;
    if (full) {
        request_fail(r, FE_OVERLOADED, "too many scripts are registered (1024); reuse names");
    } else if (!ok) {
        if (reply && reply->type != REDIS_REPLY_ERROR)
            request_fail(r, FE_INTERNAL, "unexpected reply to SCRIPT LOAD");
        else
            rds_backend_fail_reply(r, reply);
    } else {
        size_t at;
        struct cbuf *o = request_result_begin(r, &at);
        cbuf_map(o, 2);
        cbuf_str(o, "name");
        cbuf_str(o, sc->name);
        cbuf_str(o, "sha");
        cbuf_text(o, reply->str, 40);
        request_result_end(r, at);
    }
}

static int load_submit(struct rds_backend *rb, struct request *r)
{
    struct scripts_state *S = rds_backend_state(rb, &scripts_module);
    struct parg a[] = {
        {.name = "name", .type = PA_STR, .required = true},
        {.name = "body", .type = PA_STR, .required = true},
    };
    char msg[200];
    if (pargs_read(r->v.args, r->v.args_len, a, 2, msg, sizeof(msg))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    if (a[0].n == 0 || a[0].n > SCRIPTS_NAME_MAX || memchr(a[0].p, '\0', a[0].n)) {
        request_fail(r, FE_BAD_REQUEST, "'name' must be 1 to 200 bytes, with no NUL");
        return 0;
    }
    if (a[1].n == 0 || memchr(a[1].p, '\0', a[1].n)) {
        request_fail(r, FE_BAD_REQUEST, "'body' must be a non-empty Lua text, with no NUL");
        return 0;
    }
    const char *argv[3] = {"SCRIPT", "LOAD", (const char *)a[1].p};
    size_t lens[3] = {6, 4, a[1].n};
    int rc = rds_backend_check(rb, r, true, 3, argv, lens, msg, sizeof(msg));
    if (rc) {
        request_fail(r, rc, msg);
        return 0;
    }
    struct script *sc = xcalloc(1, sizeof(*sc));
    sc->refs = 1;
    sc->name = xmalloc(a[0].n + 1);
    memcpy(sc->name, a[0].p, a[0].n);
    sc->name[a[0].n] = '\0';
    sc->body = xmalloc(a[1].n + 1);
    memcpy(sc->body, a[1].p, a[1].n);
    sc->body[a[1].n] = '\0';
    sc->s.body = sc->body;
    evalsha_init(&sc->s);
    struct scripts_job *j = xcalloc(1, sizeof(*j));
    j->S = S;
    j->sc = sc;
    rc = rds_backend_call(rb, NULL, 0, 3, argv, lens, on_load, j);
    if (rc) {
        free(j);
        script_unref(sc);
        return rc;
    }
    j->job.cancel = job_cancel;
    rds_backend_hold(r, &j->job);
    return 0;
}

static void on_call(void *arg, const redisReply *reply)
{
    struct scripts_job *j = arg;
    struct request *r = j->job.r;
    bool failed = !reply || reply->type == REDIS_REPLY_ERROR;
    j->S->errors += failed;
    script_unref(j->sc);
    free(j);
    if (!r)
        return;
    if (failed) {
        rds_backend_fail_reply(r, reply);
        return;
    }
    size_t at;
    struct cbuf *o = request_result_begin(r, &at);
    rds_reply_encode(reply, o);
    request_result_end(r, at);
}

/* Reads an optional array of strings into argv from position at. */
static int strings_at(const struct parg *a, const char **argv, size_t *lens, int at, char *msg, size_t msglen)
{
    if (!a->present)
        return 0;
    int n = pargs_strings(a->p, a->n, argv + at, lens + at, SCRIPTS_ARGS_MAX - at, msg, msglen);
    if (n < 0) {
        char why[160];
        snprintf(why, sizeof(why), "'%s': %s", a->name, msg);
        snprintf(msg, msglen, "%s", why);
    }
    return n;
}

static int call_submit(struct rds_backend *rb, struct request *r)
{
    struct scripts_state *S = rds_backend_state(rb, &scripts_module);
    struct parg a[] = {
        {.name = "name", .type = PA_STR, .required = true},
        {.name = "keys", .type = PA_ARRAY, .required = false},
        {.name = "args", .type = PA_ARRAY, .required = false},
    };
    char msg[200];
    if (pargs_read(r->v.args, r->v.args_len, a, 3, msg, sizeof(msg))) {
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    struct script **slot = find(S, a[0].p, a[0].n);
    if (!slot) {
        snprintf(msg, sizeof(msg), "no script is registered as '%.*s' (script.load it first)",
                 (int)(a[0].n > 60 ? 60 : a[0].n), (const char *)a[0].p);
        request_fail(r, FE_BAD_REQUEST, msg);
        return 0;
    }
    uint64_t want = (a[1].present ? a[1].u : 0) + (a[2].present ? a[2].u : 0);
    if (want > SCRIPTS_ARGS_MAX - 3) {
        request_fail(r, FE_BAD_REQUEST, "at most 65533 keys and args together");
        return 0;
    }
    /* EVALSHA sha nkeys keys... args...: the policy sees the whole command. */
    const char **argv = xmalloc((want + 3) * sizeof(*argv));
    size_t *lens = xmalloc((want + 3) * sizeof(*lens));
    int nkeys = strings_at(&a[1], argv, lens, 3, msg, sizeof(msg));
    int nargs = nkeys < 0 ? -1 : strings_at(&a[2], argv, lens, 3 + nkeys, msg, sizeof(msg));
    int rc = 0;
    if (nargs < 0) {
        request_fail(r, FE_BAD_REQUEST, msg);
        goto done;
    }
    struct script *sc = *slot;
    char nk[16];
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = sc->s.sha;
    lens[1] = 40;
    argv[2] = nk;
    lens[2] = (size_t)snprintf(nk, sizeof(nk), "%d", nkeys);
    rc = rds_backend_check(rb, r, true, 3 + nkeys + nargs, argv, lens, msg, sizeof(msg));
    if (rc) {
        request_fail(r, rc, msg);
        rc = 0;
        goto done;
    }
    struct scripts_job *j = xcalloc(1, sizeof(*j));
    j->S = S;
    j->sc = sc;
    sc->refs++;
    rc = evalsha_call(rb, &sc->s, nkeys, nargs, argv + 3, lens + 3, on_call, j);
    if (rc) {
        script_unref(sc);
        free(j);
        goto done;
    }
    S->calls++;
    j->job.cancel = job_cancel;
    rds_backend_hold(r, &j->job);
done:
    free(argv);
    free(lens);
    return rc;
}

static int sc_create(struct rds_backend *rb, void **state, char *err, size_t errlen)
{
    (void)rb;
    (void)err;
    (void)errlen;
    *state = xcalloc(1, sizeof(struct scripts_state));
    return 0;
}

static void sc_stats(struct rds_backend *rb, void *state, struct cbuf *o)
{
    (void)rb;
    struct scripts_state *S = state;
    cbuf_map(o, 5);
    cbuf_str(o, "registered");
    cbuf_uint(o, S->n);
    cbuf_str(o, "loads");
    cbuf_uint(o, S->loads);
    cbuf_str(o, "calls");
    cbuf_uint(o, S->calls);
    cbuf_str(o, "errors");
    cbuf_uint(o, S->errors);
    cbuf_str(o, "reloads");
    cbuf_uint(o, evalsha_reloads);
}

static void sc_destroy(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct scripts_state *S = state;
    for (size_t i = 0; i < SCRIPTS_MAX; i++)
        if (S->reg[i])
            script_unref(S->reg[i]);
    free(S);
}

static const struct rds_opdef sc_ops[] = {
    {"script.load", load_submit},
    {"script.call", call_submit},
};

const struct rds_module scripts_module = {
    .name = "scripts",
    .ops = sc_ops,
    .nops = 2,
    .create = sc_create,
    .stats = sc_stats,
    .destroy = sc_destroy,
};
