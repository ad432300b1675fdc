/* rds_backend.c: the Redis backend: the 'redis' op, its deny-list, and
 * the pool of pipelined connections (rds_conn.c). */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "errors.h"
#include "log.h"
#include "rds_backend.h"
#include "rds_cljob.h"
#include "rds_cluster.h"
#include "rds_sentinel.h"
#include "rds_command.h"
#include "rds_conn.h"
#include "ops.h"
#include "rds_config.h"
#include "rds_tls.h"
#include "request.h"
#include "telemetry.h"

enum { OP_REDIS = 1, OP_MODULE0 = 2 };

/* request.bflags: what to kill when the request passes its deadline. */
enum { RB_SCRIPT = 1, RB_FUNCTION = 2 };

/* Commands of up to this many arguments are built on the stack. */


static struct rds_backend *rb_of(struct backend *b) { return container_of(b, struct rds_backend, base); }

/* Picks the connection with the fewest replies outstanding, preferring
 * ready ones; NULL when none can take a request now. */
/* Inlined: both are on every request's path, and a call each cost more
 * than their bodies once the module ops shared them. */
static inline __attribute__((always_inline)) struct rds_conn *pick(struct rds_backend *rb)
{
    struct rds_conn *best = NULL;
    /* Round robin without `%`: the divisions, one per connection per
     * request, were a large part of rb_submit's profile, even with the
     * default pool of one connection. */
    for (size_t k = 0, i = rb->next; k < rb->nconns; k++, i = i + 1 == rb->nconns ? 0 : i + 1) {
        struct rds_conn *c = rb->conns[i];
        if (!rds_conn_usable(c))
            continue;
        if (!best || (c->state == RC_READY && best->state != RC_READY) ||
            (c->state == best->state && rds_conn_pending(c) < rds_conn_pending(best)))
            best = c;
    }
    rb->next = rb->next + 1 == rb->nconns ? 0 : rb->next + 1;
    return best;
}

/* Parses args (an array of byte or text strings) into argv. Returns 0 or
 * what is wrong. */

/* Names the request's metrics and span after the command, per the
 * database semantic conventions; telemetry does the rest. c is the
 * connection it will go out on, or NULL when none is available. op is
 * the command's name upper-cased, n bytes. Only the fields that differ
 * from request to request are set here: the rest of rb->desc is filled
 * once (describe_target). */
static inline __attribute__((always_inline)) void annotate(struct rds_backend *rb, struct request *r, const struct rds_conn *c, int argc,
                     const char **argv, const size_t *lens, const char *op, size_t n)
{
    struct reqtrace_desc *d = &rb->desc;
    d->operation = op;
    d->operation_len = n;
    d->peer_address = c ? c->peer : NULL;
    d->conn = c ? (const void *)c : (const void *)rb;
    d->conn_gen = c ? c->peer_gen : 0;
    if (rb->cluster && c) {
        /* The node the command goes to, not the seed. */
        d->server_address = c->t->addr.host;
        d->server_address_len = strlen(d->server_address);
        d->server_port = c->t->addr.port;
    }
    d->argc = argc;
    d->argv = argv;
    d->lens = lens;
    /* Scripts: the function (FCALL) or script digest (EVALSHA) run. */
    bool script = argc > 1 && (op[0] == 'F' || op[0] == 'E') &&
                  (!strcmp(op, "FCALL") || !strcmp(op, "FCALL_RO") || !strcmp(op, "EVALSHA") ||
                   !strcmp(op, "EVALSHA_RO"));
    d->procedure = script ? argv[1] : NULL;
    d->procedure_len = script ? lens[1] : 0;
    reqtrace_describe(&r->trace, d);
}

/* What every request's description shares: the server, and the query
 * text setting (reloadable). */
static void describe_target(struct rds_backend *rb, const struct config *cfg)
{
    const char *mode = rds_config_of(cfg)->query_text;
    struct reqtrace_desc *d = &rb->desc;
    d->kind = SK_CLIENT;
    d->database = true;
    d->system = "redis";
    d->db_namespace = rb->db_text;
    d->server_address = rb->t.addr.is_unix ? rb->t.addr.path : rb->t.addr.host;
    d->server_address_len = strlen(d->server_address);
    d->server_port = rb->t.addr.is_unix ? 0 : rb->t.addr.port;
    d->query = mode[0] == 'f' ? RQ_FULL : mode[0] == 'o' ? RQ_OFF : RQ_SANITIZED;
}

/* A request of a module's op: described by the op's name (the commands
 * it sends are ferryd's choice, not the client's), then handed over. */
static void submit_module_op(struct rds_backend *rb, struct request *r)
{
    const struct rds_opdef *d = rb->opdefs[r->op->kind - OP_MODULE0];
    struct rds_conn *c = pick(rb);
    annotate(rb, r, c, 0, NULL, NULL, d->name, strlen(d->name));
    int rc = d->submit(rb, r);
    if (rc)
        request_fail(r, rc, NULL);
}

/* The command's name upper-cased into op (len bytes); returns its length. */
static size_t op_name(int argc, const char *const *argv, const size_t *lens, char *op, size_t len)
{
    size_t n = argc < 1 ? 0 : lens[0] < len - 1 ? lens[0] : len - 1;
    for (size_t i = 0; i < n; i++)
        op[i] = (char)toupper((unsigned char)argv[0][i]);
    op[n] = '\0';
    return n;
}

/* The cluster's describe hook: the span of a command about to go to c. */
static void cluster_describe(void *arg, struct request *r, const struct rds_conn *c, int argc,
                             const char *const *argv, const size_t *lens)
{
    struct rds_backend *rb = arg;
    char op[32];
    size_t n = op_name(argc, argv, lens, op, sizeof(op));
    annotate(rb, r, c, argc, (const char **)argv, lens, op, n);
}

static void rb_submit(struct backend *b, struct request *r)
{
    struct rds_backend *rb = rb_of(b);
    if (r->op->kind != OP_REDIS) {
        submit_module_op(rb, r);
        return;
    }
    const char *small[RDS_COMMAND_SMALL];
    size_t small_lens[RDS_COMMAND_SMALL];
    const char **argv = NULL;
    size_t *lens = NULL;
    int argc = 0;
    int rc = 0;
    char msg[256];

    const char *bad = rds_command_parse(r->v.args, r->v.args_len, &argc, &argv, &lens, small, small_lens);
    if (bad) {
        request_fail(r, FE_BAD_REQUEST, bad);
        goto done;
    }
    const struct deny_rule *deny = rds_deny_match(&rb->deny, argc, argv, lens);
    if (deny) {
        rb->denied++;
        snprintf(msg, sizeof(msg), "'%s' is denied by redis_deny", deny->text);
        request_fail(r, FE_DENIED, msg);
        goto done;
    }
    if (r->policy) {
        int code = rds_policy_check(&rb->policy, &rb->commands, r->policy, argc, argv, lens, msg, sizeof(msg));
        if (code) {
            if (code == FE_DENIED)
                r->policy->denied++;
            request_fail(r, code, msg);
            goto done;
        }
    }
    for (size_t i = 0; i < rb->ninterceptors; i++) {
        size_t m = rb->interceptors[i];
        if (rds_modules[m]->intercept(rb, rb->mod[m], r, argc, argv, lens))
            goto done;
    }
    if (rb->cluster) {
        rds_cljob_submit(rb->cluster, r, argc, argv, lens);
        goto done;
    }
    struct rds_conn *c = pick(rb);
    char op[32];
    size_t n = op_name(argc, argv, lens, op, sizeof(op));
    annotate(rb, r, c, argc, argv, lens, op, n);
    if (rb->sentinel && !rds_sentinel_confirmed(rb->sentinel)) {
        rb->rejected_unavailable++;
        snprintf(msg, sizeof(msg), "no confirmed redis primary: %s", rds_sentinel_why(rb->sentinel));
        request_fail(r, FE_UNAVAILABLE, msg);
        goto done;
    }
    if (!c) {
        rb->rejected_unavailable++;
        snprintf(msg, sizeof(msg), "redis is unreachable (%s)",
                 rb->conns[0]->last_error[0] ? rb->conns[0]->last_error : "reconnecting");
        request_fail(r, FE_UNAVAILABLE, msg);
        goto done;
    }
    rc = rds_conn_send(c, r, argc, argv, lens);
    if (rc) {
        request_fail(r, rc, NULL);
        goto done;
    }
    if ((op[0] == 'E' || op[0] == 'F')) {
        if (!strcmp(op, "EVAL") || !strcmp(op, "EVALSHA") || !strcmp(op, "EVAL_RO") || !strcmp(op, "EVALSHA_RO"))
            r->bflags = RB_SCRIPT;
        else if (!strcmp(op, "FCALL") || !strcmp(op, "FCALL_RO"))
            r->bflags = RB_FUNCTION;
    }
done:
    if (argv && argv != small) {
        free(argv);
        free(lens);
    }
}

static void rb_cancel(struct backend *b, struct request *r)
{
    (void)b;
    if (r->bflags & RB_JOB) {
        struct rds_job *j = r->bdata;
        j->r = NULL;
        j->cancel(j);
        return;
    }
    if (r->bdata)
        rds_conn_cancel(r->bdata, r);
}

/* A script or function that outlives its request's deadline is most
 * likely busy (an endless loop): while it runs, every command behind it on
 * its connection waits, and SCRIPT KILL sent there would wait too. So the
 * kill goes out on the control connection, as redis-cli's users do by hand.
 * Only when the request is the oldest on its connection: otherwise the
 * script running is someone else's, or none. Redis acts on the kill once
 * the script has run busy-reply-threshold (lua-time-limit) milliseconds. */
static int rb_timeout_code(struct backend *b, struct request *r)
{
    struct rds_backend *rb = rb_of(b);
    if (r->bflags & RB_JOB)
        return FE_TIMEOUT;
    struct rds_conn *c = r->bdata;
    if (r->bflags && c && rds_conn_is_head(c, r)) {
        const char *what = r->bflags == RB_SCRIPT ? "SCRIPT" : "FUNCTION";
        log_warn("redis: %s of request %llu is still running at its deadline; sending %s KILL",
                 reqtrace_operation(&r->trace), (unsigned long long)r->id, what);
        rb->scripts_killed++;
        rds_conn_kill(rb->control, what);
    }
    return FE_TIMEOUT;
}

/* COMMAND INFO answered: the table the policy checks commands against. */
static void on_command_info(void *arg, const redisReply *reply)
{
    struct rds_backend *rb = arg;
    if (!reply)
        return; /* the control connection failed: asked again when it is back */
    char why[160];
    if (reply->type == REDIS_REPLY_ERROR || rds_commands_build(&rb->commands, reply, why, sizeof(why)) != 0) {
        log_warn("redis: cannot learn the server's commands (%s): policies' rds_commands and redis_keys "
                 "refuse every command until it answers",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : why);
        return;
    }
    log_info("redis: the server has %zu commands in %u categories", rb->commands.n, rb->commands.ncats);
}

/* COMMAND LIST answered: ask about each command and subcommand. Not
 * COMMAND alone: a container's entry (CLIENT, XINFO ...) nests its
 * subcommands' key specs deeper than hiredis 0.14's reader takes, while
 * "COMMAND INFO client|kill" answers at the depth of any command. */
static void on_command_list(void *arg, const redisReply *reply)
{
    struct rds_backend *rb = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        if (reply)
            log_warn("redis: COMMAND LIST failed: %s", reply->type == REDIS_REPLY_ERROR ? reply->str : "not an array");
        return;
    }
    char **names;
    size_t n = rds_commands_names(reply, &names);
    const char **argv = xcalloc(n + 2, sizeof(*argv));
    size_t *lens = xcalloc(n + 2, sizeof(*lens));
    argv[0] = "COMMAND";
    argv[1] = "INFO";
    lens[0] = 7;
    lens[1] = 4;
    for (size_t i = 0; i < n; i++) {
        argv[i + 2] = names[i];
        lens[i + 2] = strlen(names[i]);
    }
    if (!rb->learning || rds_conn_call(rb->learning, (int)n + 2, argv, lens, on_command_info, rb) != 0)
        log_warn("redis: cannot ask for COMMAND INFO: the connection is %s",
                 rb->learning ? rds_conn_state_name(rb->learning->state) : "gone");
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(argv);
    free(lens);
}

/* The control connection is (again) ready: the server may have changed
 * (a restart into another version, a module loaded). */
static void learn_commands(struct rds_backend *rb, struct rds_conn *c)
{
    const char *argv[2] = {"COMMAND", "LIST"};
    size_t lens[2] = {7, 4};
    rb->learning = c;
    if (rds_conn_call(c, 2, argv, lens, on_command_list, rb) != 0)
        log_warn("redis: cannot ask for COMMAND LIST");
}

static void on_control_ready(struct rds_target *t)
{
    struct rds_backend *rb = container_of(t, struct rds_backend, t);
    learn_commands(rb, rb->control);
}

/* On a cluster, the first node ready teaches the command table when the
 * control connection (to the first seed) has not: that seed may be down. */
static void on_node_ready(void *arg, struct rds_conn *c)
{
    struct rds_backend *rb = arg;
    if (!rb->commands.n && (!rb->learning || rb->learning->state != RC_READY))
        learn_commands(rb, c);
}

static void on_cluster_changed(void *arg)
{
    struct rds_backend *rb = arg;
    backend_changed(&rb->base);
}

static void on_target_changed(struct rds_target *t)
{
    struct rds_backend *rb = container_of(t, struct rds_backend, t);
    backend_changed(&rb->base);
}

static void start_pool(struct rds_backend *rb)
{
    for (size_t i = 0; i < rb->nconns; i++)
        rds_conn_start(rb->conns[i]);
    rds_conn_start(rb->control);
    rb->pool_started = true;
}

/* The sentinels named a (new) primary: t's address is already its own. */
static void on_sentinel_switched(void *arg)
{
    struct rds_backend *rb = arg;
    if (!rb->pool_started) {
        start_pool(rb);
        return;
    }
    for (size_t i = 0; i < rb->nconns; i++)
        rds_conn_reconnect(rb->conns[i], "the primary changed (sentinel)");
    rds_conn_reconnect(rb->control, "the primary changed (sentinel)");
    backend_changed(&rb->base);
}

static void on_sentinel_changed(void *arg)
{
    struct rds_backend *rb = arg;
    backend_changed(&rb->base);
}

static int rb_start(struct backend *b)
{
    struct rds_backend *rb = rb_of(b);
    rb->t.loop = b->host->loop; /* the loop exists from server_run on */
    log_info("redis backend: %s, %zu connection%s", rb->t.url_redacted, rb->nconns,
             rb->nconns == 1 ? "" : "s");
    const struct rds_config *rc = rb->t.rc;
    if (!rb->t.addr.tls && (rc->tls_ca_file[0] || rc->tls_ca_dir[0] || rc->tls_cert[0] || rc->tls_key[0] ||
                            rc->tls_server_name[0]))
        log_warn("redis backend: redis_tls_* keys are set, but redis_url is not rediss://: they are ignored");
    if (rb->sentinel)
        rds_sentinel_start(rb->sentinel); /* the pool starts once it names the primary */
    else
        start_pool(rb);
    if (rb->cluster)
        rds_cluster_start(rb->cluster);
    for (size_t i = 0; i < rds_nmodules; i++)
        if (rds_modules[i]->start)
            rds_modules[i]->start(rb, rb->mod[i]);
    return 0;
}

static void rb_client_closed(struct backend *b, struct client *c)
{
    struct rds_backend *rb = rb_of(b);
    for (size_t i = 0; i < rds_nmodules; i++)
        if (rds_modules[i]->client_closed)
            rds_modules[i]->client_closed(rb, rb->mod[i], c);
}

static void rb_stats(struct backend *b, struct cbuf *o)
{
    struct rds_backend *rb = rb_of(b);
    size_t ready = 0, usable = 0;
    for (size_t i = 0; i < rb->nconns; i++) {
        ready += rb->conns[i]->state == RC_READY;
        usable += rds_conn_usable(rb->conns[i]);
    }
    uint64_t refused = 0;
    for (size_t i = 0; i < rb->nconns; i++)
        refused += rb->conns[i]->refused;
    size_t nmod = 0;
    for (size_t i = 0; i < rds_nmodules; i++)
        nmod += rds_modules[i]->stats != NULL;
    if (rb->sentinel && !rds_sentinel_confirmed(rb->sentinel))
        ready = 0;
    cbuf_map(o, 10 + nmod + (rb->cluster != NULL) + (rb->sentinel != NULL));
    if (rb->sentinel) {
        cbuf_str(o, "sentinel");
        rds_sentinel_stats(rb->sentinel, o);
    }
    if (rb->cluster) {
        cbuf_str(o, "cluster");
        rds_cluster_stats(rb->cluster, o);
        char why[8];
        enum backend_health h = rds_cluster_health(rb->cluster, why, sizeof(why));
        ready = h == BH_UP;
        usable = h != BH_DOWN;
    }
    for (size_t i = 0; i < rds_nmodules; i++)
        if (rds_modules[i]->stats) {
            cbuf_str(o, rds_modules[i]->name);
            rds_modules[i]->stats(rb, rb->mod[i], o);
        }
    cbuf_str(o, "url");
    cbuf_str(o, rb->t.url_redacted);
    cbuf_str(o, "state");
    cbuf_str(o, ready ? "up" : usable ? "connecting" : "down");
    cbuf_str(o, "denied");
    cbuf_uint(o, rb->denied);
    cbuf_str(o, "unavailable");
    cbuf_uint(o, rb->rejected_unavailable);
    cbuf_str(o, "replies_refused");
    cbuf_uint(o, refused);
    cbuf_str(o, "scripts_killed");
    cbuf_uint(o, rb->scripts_killed);
    cbuf_str(o, "control");
    cbuf_str(o, rds_conn_state_name(rb->control->state));
    cbuf_str(o, "tls_handshakes");
    cbuf_uint(o, rb->t.tls.handshakes);
    cbuf_str(o, "tls_resumed");
    cbuf_uint(o, rb->t.tls.resumed);
    cbuf_str(o, "connections");
    cbuf_array(o, rb->nconns);
    for (size_t i = 0; i < rb->nconns; i++) {
        const struct rds_conn *c = rb->conns[i];
        cbuf_map(o, 5);
        cbuf_str(o, "state");
        cbuf_str(o, rds_conn_state_name(c->state));
        cbuf_str(o, "pending");
        cbuf_uint(o, rds_conn_pending(c));
        cbuf_str(o, "connects");
        cbuf_uint(o, c->connects);
        cbuf_str(o, "drops");
        cbuf_uint(o, c->drops);
        cbuf_str(o, "last_error");
        cbuf_str(o, c->last_error);
    }
}

/* Up while any pooled connection is ready, as stats says: one is enough
 * to serve requests. The control connection carries none, so it does not
 * count. */
static enum backend_health rb_health(struct backend *b, char *why, size_t len)
{
    struct rds_backend *rb = rb_of(b);
    if (rb->cluster)
        return rds_cluster_health(rb->cluster, why, len);
    if (rb->sentinel && !rds_sentinel_confirmed(rb->sentinel)) {
        snprintf(why, len, "%s", rds_sentinel_why(rb->sentinel));
        return BH_CONNECTING;
    }
    bool usable = false;
    for (size_t i = 0; i < rb->nconns; i++) {
        if (rb->conns[i]->state == RC_READY)
            return BH_UP;
        usable |= rds_conn_usable(rb->conns[i]);
    }
    snprintf(why, len, "%s", rb->conns[0]->last_error);
    return usable ? BH_CONNECTING : BH_DOWN;
}

static void rb_metrics(struct backend *b, const struct metric_emit *e)
{
    struct rds_backend *rb = rb_of(b);
    if (rb->cluster) {
        rds_cluster_metrics(rb->cluster, e);
        return;
    }
    if (e->node) {
        bool up = false;
        for (size_t i = 0; i < rb->nconns; i++)
            up |= rb->conns[i]->state == RC_READY;
        e->node(e->ctx, "redis", rb->t.url_redacted, "primary", up);
    }
    if (e->connections) {
        uint64_t by_state[RC_STOPPED + 1] = {0};
        for (size_t i = 0; i < rb->nconns; i++)
            by_state[rb->conns[i]->state]++;
        for (int st = 0; st <= RC_STOPPED; st++)
            if (by_state[st])
                e->connections(e->ctx, "redis", rds_conn_state_name((enum rconn_state)st), by_state[st]);
    }
    if (e->counter) {
        uint64_t reconnects = 0;
        for (size_t i = 0; i < rb->nconns; i++)
            reconnects += rb->conns[i]->connects > 1 ? rb->conns[i]->connects - 1 : 0;
        e->counter(e->ctx, "redis", "ferry.backend.reconnects", reconnects);
    }
}

static void rb_reload(struct backend *b, const struct config *cfg)
{
    struct rds_backend *rb = rb_of(b);
    struct rds_deny d;
    char err[256];
    describe_target(rb, cfg);
    /* A bad list in the new file keeps the old one in force. */
    if (rds_deny_parse(rds_config_of(cfg)->deny, &d, err, sizeof(err)) != 0) {
        log_error("reload: %s", err);
        return;
    }
    rds_deny_free(&rb->deny);
    rb->deny = d;
    for (size_t i = 0; i < rds_nmodules; i++)
        if (rds_modules[i]->reload)
            rds_modules[i]->reload(rb, rb->mod[i]);
    if (rb->t.addr.tls) {
        /* The files are read again even when their names did not change:
         * a rotated certificate is what a reload is for. */
        struct rds_tls_settings ts;
        rds_config_tls(rds_config_of(cfg), rb->t.addr.host, &ts);
        if (rds_tls_ctx_rebuild(&rb->t.tls, &ts, err, sizeof(err)) != 0)
            log_error("reload: %s; keeping the TLS settings in force", err);
        else
            log_info("reload: the redis TLS settings were read again; new connections use them");
    }
}

static void rb_close(struct backend *b)
{
    struct rds_backend *rb = rb_of(b);
    for (size_t i = 0; i < rb->nconns; i++)
        rds_conn_stop(rb->conns[i]);
    rds_conn_stop(rb->control);
    if (rb->sentinel)
        rds_sentinel_stop(rb->sentinel);
    if (rb->cluster) {
        rds_cljob_stop(rb->cluster);
        rds_cluster_stop(rb->cluster);
    }
    for (size_t i = 0; i < rds_nmodules; i++)
        if (rds_modules[i]->close && rb->mod[i])
            rds_modules[i]->close(rb, rb->mod[i]);
}

static void rb_destroy(struct backend *b)
{
    struct rds_backend *rb = rb_of(b);
    for (size_t i = 0; i < rds_nmodules; i++)
        if (rds_modules[i]->destroy && rb->mod[i])
            rds_modules[i]->destroy(rb, rb->mod[i]);
    for (size_t i = 0; i < rb->nconns; i++)
        rds_conn_free(rb->conns[i]);
    free(rb->conns);
    if (rb->control)
        rds_conn_free(rb->control);
    rds_cluster_free(rb->cluster);
    rds_sentinel_free(rb->sentinel);
    rds_deny_free(&rb->deny);
    rds_commands_free(&rb->commands);
    rds_policy_free(&rb->policy);
    rds_tls_ctx_free(&rb->t.tls);
    url_redis_free(&rb->t.addr);
    free(rb);
}

static const struct backend_ops rds_ops = {
    .name = "redis",
    .spans_on_demand = true,
    .start = rb_start,
    .submit = rb_submit,
    .cancel = rb_cancel,
    .timeout_code = rb_timeout_code,
    .client_closed = rb_client_closed,
    .health = rb_health,
    .stats = rb_stats,
    .metrics = rb_metrics,
    .reload = rb_reload,
    .close = rb_close,
    .destroy = rb_destroy,
};

/* Parses the Redis keys, registers the 'redis' op and returns the
 * backend, or NULL with a message naming the key in err. */
static struct backend *rb_create(const struct backend_host *h, char *err, size_t errlen)
{
    const struct rds_config *rc = rds_config_of(h->cfg);
    struct rds_backend *rb = xcalloc(1, sizeof(*rb));
    rb->base.ops = &rds_ops;
    rb->base.host = h;
    char why[256];
    if (url_parse_redis(rc->url, &rb->t.addr, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "key 'redis_url': %s", why);
        free(rb);
        return NULL;
    }
    if (rds_deny_parse(rc->deny, &rb->deny, err, errlen) != 0) {
        url_redis_free(&rb->t.addr);
        free(rb);
        return NULL;
    }
    if (rb->t.addr.tls) {
        struct rds_tls_settings ts;
        rds_config_tls(rc, rb->t.addr.host, &ts);
        if (rds_tls_ctx_init(&rb->t.tls, &ts, err, errlen) != 0) {
            rds_deny_free(&rb->deny);
            url_redis_free(&rb->t.addr);
            free(rb);
            return NULL;
        }
    }
    url_redact(rc->url, rb->t.url_redacted, sizeof(rb->t.url_redacted));
    rb->t.rng = (uint32_t)time(NULL) ^ ((uint32_t)getpid() << 16);
    rb->t.cfg = h->cfg;
    rb->t.rc = rc;
    rb->t.flusher = h->flusher;
    rb->t.changed = on_target_changed;
    rb->t.control_ready = on_control_ready;
    snprintf(rb->db_text, sizeof(rb->db_text), "%d", rb->t.addr.db);
    describe_target(rb, h->cfg);
    rb->nconns = (size_t)rc->pool;
    rb->base.fds = rc->pool + 1; /* and the control connection */
    if (rc->cluster[0]) {
        struct rds_cluster_host ch = {&rb->t, &rb->commands, rb, on_cluster_changed, on_node_ready, cluster_describe};
        struct rds_addr seed;
        char why[160];
        (void)rds_config_addrs(rc->cluster, &seed, 1, why, sizeof(why));
        rb->cluster = rds_cluster_new(&ch, rc->cluster, err, errlen);
        if (!rb->cluster) {
            rds_deny_free(&rb->deny);
            url_redis_free(&rb->t.addr);
            free(rb);
            return NULL;
        }
        /* The control connection (COMMAND, SCRIPT KILL) goes to the first
         * seed; requests go to the nodes, none to a pool. */
        snprintf(rb->t.addr.host, sizeof(rb->t.addr.host), "%s", seed.host);
        rb->t.addr.port = seed.port;
        snprintf(rb->t.url_redacted, sizeof(rb->t.url_redacted), "redis://%s:%d (cluster seed)", seed.host, seed.port);
        describe_target(rb, h->cfg);
        rb->nconns = 0;
        rb->base.fds = 1 + 3 * 16; /* a guess: 16 primaries, 2 replicas each */
    }
    rb->conns = xcalloc(rb->nconns, sizeof(*rb->conns));
    for (size_t i = 0; i < rb->nconns; i++)
        rb->conns[i] = rds_conn_new(&rb->t, (unsigned)i);
    rb->control = rds_conn_new(&rb->t, (unsigned)rb->nconns);
    rb->control->control = true;
    if (rc->sentinel[0]) {
        struct rds_sentinel_host sh = {&rb->t, rb, on_sentinel_switched, on_sentinel_changed};
        rb->sentinel = rds_sentinel_new(&sh, err, errlen);
        if (!rb->sentinel) {
            rb_destroy(&rb->base);
            return NULL;
        }
        rb->base.fds += 3;
    }
    if (ops_add(h->ops, "redis", NULL, NULL, &rb->base, OP_REDIS) != 0) {
        snprintf(err, errlen, "cannot register the redis op");
        rb_destroy(&rb->base);
        return NULL;
    }
    for (size_t i = 0; i < rds_nmodules; i++) {
        const struct rds_module *m = rds_modules[i];
        if (m->create && m->create(rb, &rb->mod[i], err, errlen) != 0) {
            rb_destroy(&rb->base);
            return NULL;
        }
        if (m->intercept)
            rb->interceptors[rb->ninterceptors++] = i;
        for (size_t k = 0; k < m->nops; k++) {
            if (rb->nopdefs == sizeof(rb->opdefs) / sizeof(rb->opdefs[0]) ||
                ops_add(h->ops, m->ops[k].name, NULL, NULL, &rb->base, OP_MODULE0 + (int)rb->nopdefs) != 0) {
                snprintf(err, errlen, "cannot register the op %s", m->ops[k].name);
                rb_destroy(&rb->base);
                return NULL;
            }
            rb->opdefs[rb->nopdefs++] = &m->ops[k];
        }
    }
    return &rb->base;
}

/* ---- what the modules use (rds_module.h) ---- */

int rds_backend_call(struct rds_backend *rb, const char *key, size_t keylen, int argc, const char *const *argv,
                     const size_t *lens, void (*fn)(void *arg, const redisReply *reply), void *arg)
{
    if (rb->cluster)
        return rds_cljob_call(rb->cluster, key, keylen, argc, argv, lens, fn, arg);
    struct rds_conn *c = pick(rb);
    if (!c || (rb->sentinel && !rds_sentinel_confirmed(rb->sentinel))) {
        rb->rejected_unavailable++;
        return FE_UNAVAILABLE;
    }
    return rds_conn_call(c, argc, argv, lens, fn, arg) == 0 ? 0 : FE_OVERLOADED;
}

int rds_backend_check(struct rds_backend *rb, struct request *r, bool deny_list, int argc,
                      const char *const *argv, const size_t *lens, char *msg, size_t len)
{
    const struct deny_rule *deny = deny_list ? rds_deny_match(&rb->deny, argc, argv, lens) : NULL;
    if (deny) {
        rb->denied++;
        snprintf(msg, len, "'%s' is denied by redis_deny", deny->text);
        return FE_DENIED;
    }
    if (!r->policy)
        return 0;
    int code = rds_policy_check(&rb->policy, &rb->commands, r->policy, argc, argv, lens, msg, len);
    if (code == FE_DENIED)
        r->policy->denied++;
    return code;
}

void rds_backend_hold(struct request *r, struct rds_job *j)
{
    j->r = r;
    r->bdata = j;
    r->bflags = RB_JOB;
}

void rds_backend_fail_reply(struct request *r, const redisReply *reply)
{
    if (!reply) {
        request_fail(r, FE_UNAVAILABLE, "the connection to redis was lost; the command may or may not have run");
        return;
    }
    char msg[512];
    snprintf(msg, sizeof(msg), "%.*s", (int)reply->len, reply->str ? reply->str : "");
    reqtrace_status_code(&r->trace, msg, strcspn(msg, " "));
    request_fail(r, FE_BACKEND_ERROR, msg);
}

struct rds_conn *rds_backend_dedicated(struct rds_backend *rb)
{
    /* On a cluster: any node's, and another's when that one fails (a
     * subscriber); dedpool.c asks for the key's node instead. */
    return rds_backend_dedicated_to(rb, rb->cluster ? rds_cluster_floating_target(rb->cluster) : &rb->t);
}

struct rds_conn *rds_backend_dedicated_to(struct rds_backend *rb, struct rds_target *t)
{
    struct rds_conn *c = rds_conn_new(t ? t : &rb->t, (unsigned)(rb->nconns + 1 + rb->dedicated++));
    c->quiet = true;
    return c;
}

void *rds_backend_state(struct rds_backend *rb, const struct rds_module *m)
{
    for (size_t i = 0; i < rds_nmodules; i++)
        if (rds_modules[i] == m)
            return rb->mod[i];
    return NULL;
}

const struct backend_kind rds_backend_kind = {"redis", &rds_config_section, rb_create};
