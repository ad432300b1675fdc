/* server.c: the daemon's life: start, signals, reload, drain, stop.
 *
 * Shutdown is one path whatever starts it (SIGTERM, SIGINT, a failed
 * start): drain stops accepting and lets in-flight requests finish; when
 * the last client is gone, or drain_timeout_ms passes and what is left is
 * answered "shutting_down", stop closes every handle, and uv_run returns
 * once libuv has called every close callback. */
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "telemetry.h"

/* How long clients get to read their last responses after the drain
 * timeout, before they are cut off. */
#define FINAL_FLUSH_MS 1000

static void on_client_closed(void *arg, struct client *c)
{
    struct server *s = arg;
    for (size_t i = 0; i < s->nbackends; i++)
        if (s->backends[i]->ops->client_closed)
            s->backends[i]->ops->client_closed(s->backends[i], c);
}

static void server_stop(struct server *s);

/* A client or request went away: a drain ends with the last client. */
static void on_clients_idle(void *arg)
{
    struct server *s = arg;
    if (s->rq.draining && !s->stopping && dlist_empty(&s->clients.list))
        server_stop(s);
}

static void on_backend_changed(void *arg);

static int op_index(void *ctx, const char *name)
{
    struct ops *t = ctx;
    struct op *op = ops_find(t, name, strlen(name));
    return op ? (int)(op - t->op) : -1;
}

int server_load_policies(struct server *s, char *err, size_t errlen)
{
    struct policy_set next;
    memset(&next, 0, sizeof(next));
    if (s->cfg.policy_file[0] && policy_load(&next, s->cfg.policy_file, op_index, &s->ops, err, errlen) != 0)
        return -1;
    policy_carry_counts(&next, &s->policies);
    next.gen = s->policies.gen + 1;
    for (size_t i = 0; i < next.n; i++)
        next.p[i].gen = next.gen;
    policy_free(&s->policies);
    s->policies = next;
    return 0;
}

void server_init(struct server *s)
{
    s->loop = uv_default_loop();
    s->host.loop = s->loop;
    s->host.ops = &s->ops;
    s->host.cfg = &s->cfg;
    s->host.flusher = &s->flusher;
    s->host.arg = s;
    s->host.changed = on_backend_changed;
}

static void server_stop(struct server *s)
{
    if (s->stopping)
        return;
    s->stopping = true;
    log_info("stopping");
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &s->clients.list)
        client_close(container_of(pos, struct client, node), "daemon stopping");
    listener_close(&s->listener);
    for (size_t i = 0; i < s->nbackends; i++)
        s->backends[i]->ops->close(s->backends[i]);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sighup, NULL);
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
    uv_close((uv_handle_t *)&s->ready_timer, NULL);
    notify_close(&s->notify);
    client_set_close(&s->clients);
    flusher_close(&s->flusher);
    deadlines_close(&s->rq.deadlines);
    /* Last: it exports what is queued, then closes its own handles. */
    telemetry_stop(s->tel);
}

static void on_final_flush(uv_timer_t *t)
{
    server_stop(container_of(t, struct server, drain_timer));
}

/* The drain timeout: answer whatever is still in flight, give clients a
 * moment to read it, then stop. */
static void on_drain_timeout(uv_timer_t *t)
{
    struct server *s = container_of(t, struct server, drain_timer);
    log_warn("drain timeout: answering the remaining requests with shutting_down");
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &s->clients.list) {
        struct client *c = container_of(pos, struct client, node);
        while (!dlist_empty(&c->ro.inflight) && !c->closing) {
            struct request *r = container_of(c->ro.inflight.next, struct request, client_node);
            if (r->backend) {
                r->backend->ops->cancel(r->backend, r);
                r->backend = NULL;
            }
            request_fail(r, FE_SHUTTING_DOWN, "drain timeout");
        }
    }
    if (!s->stopping)
        uv_timer_start(&s->drain_timer, on_final_flush, FINAL_FLUSH_MS, 0);
    on_clients_idle(s);
}

void server_drain(struct server *s, const char *why)
{
    if (s->rq.draining) {
        log_warn("%s again: not waiting for the drain", why);
        on_drain_timeout(&s->drain_timer);
        return;
    }
    s->rq.draining = true;
    uv_timer_stop(&s->ready_timer);
    notify_send(&s->notify, "STOPPING=1\nSTATUS=draining (%s)", why);
    size_t inflight = 0;
    struct dlist *pos, *tmp;
    dlist_foreach(pos, &s->clients.list)
        inflight += container_of(pos, struct client, node)->ro.ninflight;
    log_info("%s: draining (%zu clients, %zu requests in flight, timeout %ld ms)", why,
             s->clients.n, inflight, s->cfg.drain_timeout_ms);
    listener_close(&s->listener);
    uv_timer_start(&s->drain_timer, on_drain_timeout, (uint64_t)s->cfg.drain_timeout_ms, 0);
    dlist_foreach_safe(pos, tmp, &s->clients.list)
        client_finish(container_of(pos, struct client, node));
    on_clients_idle(s);
}

/* Reloads the file and environment (and re-applies the flags on top).
 * Keys that cannot change while running keep their old value, with a
 * warning; a bad file changes nothing. */
static void server_reload(struct server *s)
{
    struct config next;
    char err[512];
    config_defaults(&next);
    int rc = s->config_path ? config_load_file(&next, s->config_path, s->config_must_exist, err, sizeof(err)) : 0;
    if (rc == 0)
        rc = config_load_env(&next, err, sizeof(err));
    for (int i = 0; rc == 0 && i < s->noverrides; i++) {
        char kv[1024];
        snprintf(kv, sizeof(kv), "%s", s->overrides[i]);
        char *eq = strchr(kv, '=');
        *eq = '\0';
        rc = config_set(&next, kv, eq + 1, "flag", err, sizeof(err));
    }
    if (rc == 0)
        rc = config_validate(&next, err, sizeof(err));
    if (rc != 0) {
        log_error("reload failed, keeping the running configuration: %s", err);
        config_free(&next);
        return;
    }
    int changed = 0;
    for (size_t i = 0, n = config_nkeys(); i < n; i++) {
        const struct cfg_key *k = config_key(i);
        char a[1024], b[1024];
        config_format(&s->cfg, k, a, sizeof(a));
        config_format(&next, k, b, sizeof(b));
        if (strcmp(a, b) == 0)
            continue;
        if (!k->reloadable) {
            log_warn("reload: key '%s' changed but needs a restart; keeping the old value", k->name);
            if (config_set(&next, k->name, a, "reload", err, sizeof(err)) != 0)
                abort(); /* a value we formatted ourselves must parse */
            continue;
        }
        changed++;
        log_info("reload: key '%s' changed", k->name);
    }
    /* The policy first: a bad policy file keeps the old policy, and the
     * old policy_file with it, so that the two never disagree. */
    char *old_policy = xstrdup(s->cfg.policy_file);
    struct config prev = s->cfg;
    s->cfg = next;
    if (server_load_policies(s, err, sizeof(err)) != 0) {
        log_error("reload: %s; keeping the policy in force", err);
        free(s->cfg.policy_file);
        s->cfg.policy_file = old_policy;
    } else {
        if (strcmp(old_policy, s->cfg.policy_file) || s->cfg.policy_file[0])
            log_info("reload: policy %s%s (%zu policies)", s->cfg.policy_file[0] ? "from " : "off",
                     s->cfg.policy_file, s->policies.n);
        free(old_policy);
    }
    config_free(&prev);
    log_threshold = (enum log_level)s->cfg.log_level;
    for (size_t i = 0; i < s->nbackends; i++)
        s->backends[i]->ops->reload(s->backends[i], &s->cfg);
    log_info("reloaded configuration (%d keys changed)", changed);
}

bool server_backends_up(struct server *s)
{
    char why[8];
    for (size_t i = 0; i < s->nbackends; i++) {
        enum backend_health h = s->backends[i]->ops->health(s->backends[i], why, sizeof(why));
        if (h != BH_OFF && h != BH_UP)
            return false;
    }
    return true;
}

/* Writes "redis (connect: connection refused), amqp (connecting)" for
 * the configured backends that are not up, or "" when all are. */
static void describe_not_up(struct server *s, char *out, size_t len)
{
    char why[160];
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->nbackends && n < len; i++) {
        struct backend *b = s->backends[i];
        why[0] = '\0';
        enum backend_health h = b->ops->health(b, why, sizeof(why));
        if (h == BH_OFF || h == BH_UP)
            continue;
        n += (size_t)snprintf(out + n, len - n, "%s%s (%s)", n ? ", " : "", b->ops->name,
                              why[0] ? why : h == BH_CONNECTING ? "connecting" : "down");
    }
}

/* Tells the manager the daemon is up: every backend connected, or the
 * wait for them is over (late names those that are not, for STATUS=). */
static void server_ready(struct server *s, const char *late)
{
    s->ready_sent = true;
    s->status_up = !late[0];
    uv_timer_stop(&s->ready_timer);
    if (late[0]) {
        log_warn("ready, without %s: ready_timeout_ms (%ld) passed first", late, s->cfg.ready_timeout_ms);
        notify_send(&s->notify, "READY=1\nSTATUS=ready; not connected: %s", late);
    } else {
        notify_send(&s->notify, "READY=1\nSTATUS=ready");
    }
}

/* Before READY=1, the first moment every backend is up sends it. After,
 * STATUS= follows the backends (what `systemctl status` shows), on each
 * change between all up and not: a Redis that stays down retries every
 * few seconds, and each attempt need not be a datagram. */
static void on_backend_changed(void *arg)
{
    struct server *s = arg;
    if (!s->listener.listening || s->rq.draining)
        return;
    bool up = server_backends_up(s);
    if (!s->ready_sent) {
        if (up)
            server_ready(s, "");
        return;
    }
    if (up == s->status_up)
        return;
    s->status_up = up;
    char late[512];
    describe_not_up(s, late, sizeof(late));
    if (up)
        notify_send(&s->notify, "STATUS=ready");
    else
        notify_send(&s->notify, "STATUS=ready; not connected: %s", late);
}

/* The wait for backends is bounded: a Redis that is down must not hold
 * the service in "activating" until systemd's start timeout kills it;
 * requests fail fast with 'unavailable' meanwhile, and the health op
 * says what is missing. */
static void on_ready_timeout(uv_timer_t *t)
{
    struct server *s = container_of(t, struct server, ready_timer);
    char late[512];
    describe_not_up(s, late, sizeof(late));
    server_ready(s, late);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *s = h->data;
    if (signum == SIGHUP) {
        /* Before READY=1 the manager is still waiting for the start; a
         * reload then is just a reload. */
        if (s->ready_sent)
            notify_reloading(&s->notify);
        server_reload(s);
        if (s->ready_sent) {
            char late[512];
            describe_not_up(s, late, sizeof(late));
            notify_send(&s->notify, "READY=1\nSTATUS=ready (reloaded)%s%s", late[0] ? "; not connected: " : "",
                        late);
        }
    }
    else
        server_drain(s, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void log_open_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    log_error("internal: a %s handle is still open at exit", uv_handle_type_name(h->type));
}

int server_run(struct server *s)
{
    /* glibc raises its mmap threshold to the size of each large block
     * freed, after which blocks that size come from the heap and are
     * seldom returned: one large value would leave the daemon holding its
     * size for good. A fixed threshold keeps large buffers in their own
     * mappings, which free() gives back. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    s->started_ms = uv_now(s->loop);
    s->exit_code = 0;
    signal(SIGPIPE, SIG_IGN); /* writes to vanished clients return EPIPE */
    log_threshold = (enum log_level)s->cfg.log_level;

    flusher_init(&s->flusher, s->loop);
    s->rq.loop = s->loop;
    s->rq.cfg = &s->cfg;
    s->rq.ops = &s->ops;
    s->rq.counters = &s->counters;
    s->rq.tel = s->tel;
    s->rq.policies = &s->policies;
    s->host.tel = s->tel;
    deadlines_init(&s->rq.deadlines, s->loop, request_expired);
    client_set_init(&s->clients, s->loop);
    s->clients.cfg = &s->cfg;
    s->clients.counters = &s->counters;
    s->clients.rq = &s->rq;
    s->clients.flusher = &s->flusher;
    s->clients.hook_arg = s;
    s->clients.closed = on_client_closed;
    s->clients.idle = on_clients_idle;
    s->clients.fd_reserve = SERVER_FD_RESERVE;
    for (size_t i = 0; i < s->nbackends; i++)
        s->clients.fd_reserve += s->backends[i]->fds;
    uv_timer_init(s->loop, &s->drain_timer);
    uv_timer_init(s->loop, &s->ready_timer);
    notify_open(&s->notify, s->loop);
    uv_signal_init(s->loop, &s->sigterm);
    uv_signal_init(s->loop, &s->sigint);
    uv_signal_init(s->loop, &s->sighup);
    s->sigterm.data = s->sigint.data = s->sighup.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sighup, on_signal, SIGHUP);

    if (listener_open(&s->listener, s->loop, &s->cfg, &s->clients) != 0) {
        s->exit_code = 1;
        s->rq.draining = true;
        server_stop(s);
    } else {
        for (size_t i = 0; i < s->nbackends; i++) {
            struct backend *b = s->backends[i];
            if (b->ops->start(b) != 0) {
                log_error("backend %s failed to start", b->ops->name);
                s->exit_code = 1;
                s->rq.draining = true;
                server_stop(s);
                break;
            }
        }
        if (!s->stopping) {
            telemetry_start(s->tel, s->loop);
            log_info("ferryd %s ready (protocol %d, pid %d)", FERRY_VERSION, FERRY_PROTOCOL_VERSION,
                     (int)getpid());
            if (server_backends_up(s) || s->cfg.ready_timeout_ms == 0) {
                on_ready_timeout(&s->ready_timer);
            } else {
                notify_send(&s->notify, "STATUS=waiting for the backends to connect");
                uv_timer_start(&s->ready_timer, on_ready_timeout, (uint64_t)s->cfg.ready_timeout_ms, 0);
            }
        }
    }

    uv_run(s->loop, UV_RUN_DEFAULT);
    /* Every handle must be closed by now; a leftover is a bug to hear of. */
    if (uv_loop_close(s->loop) != 0) {
        uv_walk(s->loop, log_open_handle, NULL);
        s->exit_code = s->exit_code ? s->exit_code : 70;
    }
    for (size_t i = 0; i < s->nbackends; i++)
        s->backends[i]->ops->destroy(s->backends[i]);
    ops_free(&s->ops);
    policy_free(&s->policies);
    log_info("exited");
    return s->exit_code;
}
