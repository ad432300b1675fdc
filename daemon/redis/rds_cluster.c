/* rds_cluster.c: Redis Cluster's nodes and slot map: one pipelined
 * connection per primary (an rds_target each), the map learned with
 * CLUSTER SLOTS and refreshed in the background, and the routing of a
 * slot to its node. The requests' own path (splits, merges, redirects)
 * is in rds_cljob.c.
 *
 * CLUSTER SLOTS rather than CLUSTER SHARDS: its reply nests 4 levels,
 * well inside what hiredis 0.14's reader takes (7), while SHARDS nests
 * its nodes' attributes deeper and gives nothing routing needs more.
 *
 * When to refresh: at start (from whichever seed answers first), at each
 * MOVED (at most once per REFRESH_MIN_MS, however many arrive: the MOVED
 * itself already moved its slot), every 250 ms while a primary of the map
 * is unreachable (waiting for its replica's promotion), and every
 * REFRESH_IDLE_MS otherwise. */
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "log.h"
#include "rds_cluster.h"
#include "rds_config.h"

#define REFRESH_TICK_MS 250
#define REFRESH_IDLE_MS 10000
#define REFRESH_MIN_MS 100

static const char *role_name(enum clu_role r)
{
    return r == ROLE_PRIMARY ? "primary" : r == ROLE_REPLICA ? "replica" : "unknown";
}

static struct clu_node *node_of(struct rds_target *t) { return container_of(t, struct clu_node, t); }

static void floating_follow(struct rds_cluster *cl);

static void on_node_changed(struct rds_target *t)
{
    struct clu_node *n = node_of(t);
    struct rds_cluster *cl = n->cl;
    if (n->conn && n->conn->state == RC_READY) {
        cl->h.node_ready(cl->h.arg, n->conn);
        if (!cl->map_known)
            rds_cluster_refresh(cl, NULL);
    } else if (n->role == ROLE_PRIMARY && n->slots) {
        /* Its slots are served by nobody until a replica is promoted: the
         * map timer asks every tick from now on. */
        cl->refresh_wanted = true;
    }
    floating_follow(cl);
    cl->h.changed(cl->h.arg);
}

static void ignore_reply(void *arg, const redisReply *reply)
{
    (void)arg;
    (void)reply;
}

/* A replica serving reads must be told so on each connection. */
static void on_replica_ready(struct rds_conn *c, void *arg)
{
    struct clu_node *n = arg;
    if (n->role != ROLE_REPLICA)
        return;
    const char *argv[1] = {"READONLY"};
    size_t lens[1] = {8};
    if (rds_conn_call(c, 1, argv, lens, ignore_reply, NULL) != 0)
        log_warn("redis cluster: cannot send READONLY to %s", n->t.url_redacted);
}

void rds_cluster_connect(struct clu_node *n)
{
    if (n->conn || n->cl->stopped)
        return;
    n->conn = rds_conn_new(&n->t, n->index);
    n->conn->hooks.arg = n;
    n->conn->hooks.ready = on_replica_ready;
    if (n->cl->started)
        rds_conn_start(n->conn);
}

struct clu_node *rds_cluster_node(struct rds_cluster *cl, const char *host, int port, bool create)
{
    for (size_t i = 0; i < cl->nnodes; i++)
        if (cl->node[i]->t.addr.port == port && !strcmp(cl->node[i]->t.addr.host, host))
            return cl->node[i];
    if (!create || cl->nnodes == RDS_CLUSTER_MAX_NODES)
        return NULL;
    if (cl->nnodes == cl->cap) {
        cl->cap = cl->cap ? cl->cap * 2 : 8;
        cl->node = realloc(cl->node, cl->cap * sizeof(*cl->node));
        if (!cl->node)
            abort();
    }
    struct clu_node *n = xcalloc(1, sizeof(*n));
    const struct rds_target *tm = cl->h.tmpl;
    n->cl = cl;
    n->index = (unsigned)cl->nnodes;
    n->t = *tm;
    memset(&n->t.tls, 0, sizeof(n->t.tls));
    n->t.addr.user = tm->addr.user ? xstrdup(tm->addr.user) : NULL;
    n->t.addr.password = tm->addr.password ? xstrdup(tm->addr.password) : NULL;
    n->t.addr.db = 0;
    snprintf(n->t.addr.host, sizeof(n->t.addr.host), "%s", host);
    n->t.addr.port = port;
    snprintf(n->t.url_redacted, sizeof(n->t.url_redacted), "redis://%s:%d (cluster node)", host, port);
    snprintf(n->hostport, sizeof(n->hostport), "%s:%d", host, port);
    n->t.rng = tm->rng ^ (uint32_t)(cl->nnodes * 2654435761u);
    n->t.changed = on_node_changed;
    n->t.control_ready = NULL;
    cl->node[cl->nnodes++] = n;
    return n;
}

/* CLUSTER SLOTS answered (n: the node asked). */
static void on_slots(void *arg, const redisReply *reply)
{
    struct clu_node *asked = arg;
    struct rds_cluster *cl = asked->cl;
    cl->refreshing = false;
    if (!reply || cl->stopped)
        return;
    struct rds_slots_map m;
    char why[160];
    if (reply->type == REDIS_REPLY_ERROR || rds_slots_parse(reply, asked->t.addr.host, &m, why, sizeof(why)) != 0) {
        /* Asked again every tick: say so once in a while only. */
        if (cl->refresh_failures++ % 40 == 0)
            log_warn("redis cluster: %s cannot give the slot map: %s", asked->t.url_redacted,
                     reply->type == REDIS_REPLY_ERROR ? reply->str : why);
        return;
    }
    bool replicas = !strcmp(cl->h.tmpl->rc->replica_reads, "yes");
    static uint16_t owner[RDS_SLOTS], replica[RDS_SLOTS];
    memset(owner, 0, sizeof(owner));
    memset(replica, 0, sizeof(replica));
    for (size_t i = 0; i < cl->nnodes; i++) {
        cl->node[i]->slots = 0;
        cl->node[i]->in_map = false;
    }
    for (size_t i = 0; i < m.n; i++) {
        const struct rds_slots_range *g = &m.range[i];
        struct clu_node *p = rds_cluster_node(cl, g->primary.host, g->primary.port, true);
        if (!p)
            continue;
        p->role = ROLE_PRIMARY;
        p->in_map = true;
        snprintf(p->id, sizeof(p->id), "%s", g->primary.id);
        p->slots += (unsigned)(g->end - g->start + 1);
        rds_cluster_connect(p);
        struct clu_node *rep = NULL;
        for (int k = 0; k < g->nreplicas; k++) {
            struct clu_node *q = rds_cluster_node(cl, g->replica[k].host, g->replica[k].port, true);
            if (!q)
                continue;
            q->role = ROLE_REPLICA;
            q->in_map = true;
            snprintf(q->id, sizeof(q->id), "%s", g->replica[k].id);
            if (replicas) {
                rds_cluster_connect(q);
                if (!rep)
                    rep = q;
            }
        }
        for (int s = g->start; s <= g->end; s++) {
            /* A MOVED newer than this question knows better. */
            bool newer = cl->map_known && (int32_t)(cl->moved_at[s] - cl->moves_asked) > 0;
            owner[s] = newer ? cl->owner[s] : (uint16_t)(p->index + 1);
            replica[s] = rep ? (uint16_t)(rep->index + 1) : 0;
        }
    }
    /* A node that left the map (a demoted primary not yet rejoined, a
     * forgotten one) keeps its connection: it may come back, and requests
     * sent to it meanwhile are answered with a MOVED. */
    for (size_t i = 0; i < cl->nnodes; i++)
        if (!cl->node[i]->in_map && cl->node[i]->role == ROLE_PRIMARY)
            cl->node[i]->role = ROLE_UNKNOWN;
    bool changed = !cl->map_known || memcmp(owner, cl->owner, sizeof(owner)) != 0;
    memcpy(cl->owner, owner, sizeof(owner));
    memcpy(cl->replica, replica, sizeof(replica));
    cl->map_at = uv_now(cl->h.tmpl->loop);
    cl->refreshes++;
    if (changed) {
        cl->map_version++;
        unsigned covered = 0;
        for (int s = 0; s < RDS_SLOTS; s++)
            covered += owner[s] != 0;
        log_info("redis cluster: slot map %llu from %s: %zu ranges, %u of %d slots served",
                 (unsigned long long)cl->map_version, asked->t.url_redacted, m.n, covered, RDS_SLOTS);
    }
    cl->map_known = true;
    cl->refresh_wanted = false;
    rds_slots_free(&m);
    floating_follow(cl);
    cl->h.changed(cl->h.arg);
}

void rds_cluster_refresh(struct rds_cluster *cl, struct clu_node *prefer)
{
    if (cl->refreshing || cl->stopped)
        return;
    /* A ready primary of the map first; a seed or former node else. */
    struct clu_node *pick = prefer && prefer->conn && prefer->conn->state == RC_READY ? prefer : NULL;
    for (size_t k = 0; k < cl->nnodes && !pick; k++) {
        struct clu_node *n = cl->node[(cl->rr + k) % cl->nnodes];
        if (!n->conn || n->conn->state != RC_READY)
            continue;
        if (!pick || (n->role == ROLE_PRIMARY && pick->role != ROLE_PRIMARY))
            pick = n;
    }
    cl->rr++;
    if (!pick)
        return;
    const char *argv[2] = {"CLUSTER", "SLOTS"};
    size_t lens[2] = {7, 5};
    if (rds_conn_call(pick->conn, 2, argv, lens, on_slots, pick) == 0) {
        cl->refreshing = true;
        cl->moves_asked = cl->moves;
    }
}

void rds_cluster_moved(struct rds_cluster *cl, int slot, struct clu_node *n)
{
    cl->owner[slot] = (uint16_t)(n->index + 1);
    cl->moved_at[slot] = ++cl->moves;
    if (cl->map_known && uv_now(cl->h.tmpl->loop) - cl->map_at < REFRESH_MIN_MS)
        cl->refresh_wanted = true; /* the next tick */
    else
        rds_cluster_refresh(cl, n);
}

static void on_map_tick(uv_timer_t *t)
{
    struct rds_cluster *cl = container_of(t, struct rds_cluster, map_timer);
    bool want = !cl->map_known || cl->refresh_wanted ||
                uv_now(cl->h.tmpl->loop) - cl->map_at >= REFRESH_IDLE_MS;
    for (size_t i = 0; i < cl->nnodes && !want; i++) {
        const struct clu_node *n = cl->node[i];
        want = n->role == ROLE_PRIMARY && n->slots && (!n->conn || n->conn->state != RC_READY);
    }
    if (want)
        rds_cluster_refresh(cl, NULL);
}

struct rds_cluster *rds_cluster_new(const struct rds_cluster_host *h, const char *seeds, char *err, size_t errlen)
{
    struct rds_addr a[RDS_MAX_ADDRS];
    char why[160];
    int n = rds_config_addrs(seeds, a, RDS_MAX_ADDRS, why, sizeof(why));
    if (n <= 0) {
        snprintf(err, errlen, "key 'redis_cluster': %s", n < 0 ? why : "no seed node");
        return NULL;
    }
    struct rds_cluster *cl = xcalloc(1, sizeof(*cl));
    cl->h = *h;
    for (int i = 0; i < n; i++)
        rds_cluster_connect(rds_cluster_node(cl, a[i].host, a[i].port, true));
    return cl;
}

void rds_cluster_start(struct rds_cluster *cl)
{
    uv_loop_t *loop = cl->h.tmpl->loop;
    cl->started = true;
    for (size_t i = 0; i < cl->nnodes; i++) {
        cl->node[i]->t.loop = loop;
        if (cl->node[i]->conn)
            rds_conn_start(cl->node[i]->conn);
    }
    cl->floating.loop = loop;
    uv_timer_init(loop, &cl->map_timer);
    uv_timer_init(loop, &cl->retry_timer);
    uv_timer_start(&cl->map_timer, on_map_tick, REFRESH_TICK_MS, REFRESH_TICK_MS);
}

struct clu_node *rds_cluster_any(struct rds_cluster *cl)
{
    struct clu_node *best = NULL;
    for (size_t k = 0; k < cl->nnodes; k++) {
        struct clu_node *n = cl->node[(cl->rr + k) % cl->nnodes];
        if (!n->conn || !rds_conn_usable(n->conn) || n->role == ROLE_REPLICA)
            continue;
        if (!best || (n->conn->state == RC_READY && best->conn->state != RC_READY))
            best = n;
        if (best->conn->state == RC_READY && best->role == ROLE_PRIMARY)
            break;
    }
    cl->rr++;
    return best;
}

struct clu_node *rds_cluster_route(struct rds_cluster *cl, int slot, bool read_only)
{
    if (slot < 0)
        return rds_cluster_any(cl);
    if (read_only && cl->replica[slot]) {
        struct clu_node *r = cl->node[cl->replica[slot] - 1];
        /* Alternate between the replica and the primary, so that reads
         * spread over both; the replica only once READONLY is in force. */
        if (r->conn && r->conn->state == RC_READY && (cl->rr++ & 1))
            return r;
    }
    return cl->owner[slot] ? cl->node[cl->owner[slot] - 1] : NULL;
}

struct rds_target *rds_cluster_any_target(struct rds_cluster *cl)
{
    struct clu_node *n = rds_cluster_any(cl);
    return n ? &n->t : cl->nnodes ? &cl->node[0]->t : NULL;
}

int rds_cluster_keys_slot(struct rds_cluster *cl, int argc, const char *const *argv, const size_t *lens,
                          int *first)
{
    const struct rds_cmd *cmd = rds_commands_find(cl->h.commands, argc, argv, lens);
    int small[16], *pos = small;
    int nk = cmd ? rds_commands_keys(cmd, argc, argv, lens, pos, 16) : 0;
    if (nk > 16) {
        pos = xmalloc((size_t)nk * sizeof(*pos));
        nk = rds_commands_keys(cmd, argc, argv, lens, pos, nk);
    }
    int slot = RDS_CLUSTER_KEYLESS;
    *first = nk > 0 ? pos[0] : 0;
    for (int i = 0; i < nk; i++) {
        int s = rds_slots_of(argv[pos[i]], lens[pos[i]]);
        if (slot >= 0 && s != slot) {
            slot = RDS_CLUSTER_CROSSSLOT;
            break;
        }
        slot = s;
    }
    if (pos != small)
        free(pos);
    return slot;
}

struct rds_target *rds_cluster_slot_target(struct rds_cluster *cl, int slot)
{
    if (slot >= 0 && slot < RDS_SLOTS && cl->owner[slot])
        return &cl->node[cl->owner[slot] - 1]->t;
    return rds_cluster_any_target(cl);
}

struct rds_conn *rds_cluster_slot_conn(struct rds_cluster *cl, int slot)
{
    struct clu_node *n = rds_cluster_route(cl, slot >= 0 && slot < RDS_SLOTS ? slot : -1, false);
    return n && n->conn && rds_conn_usable(n->conn) ? n->conn : NULL;
}

bool rds_cluster_redirected(struct rds_cluster *cl, const redisReply *reply)
{
    if (!reply || reply->type != REDIS_REPLY_ERROR)
        return false;
    int slot, port;
    char host[256];
    if (rds_slots_redirect(reply->str, reply->len, &slot, host, sizeof(host), &port) != RDS_REDIRECT_MOVED ||
        slot < 0 || slot >= RDS_SLOTS || !host[0])
        return false;
    struct clu_node *n = rds_cluster_node(cl, host, port, true);
    if (!n)
        return false;
    rds_cluster_connect(n);
    cl->moved++;
    rds_cluster_moved(cl, slot, n);
    return true;
}

static void floating_changed(struct rds_target *t) { (void)t; }

/* Points floating at n: the node's address and settings; the strings
 * stay n's (nodes live as long as the cluster). */
static void floating_set(struct rds_cluster *cl, struct clu_node *n)
{
    cl->floating = n->t;
    cl->floating.changed = floating_changed;
    cl->floating.control_ready = NULL;
    snprintf(cl->floating.url_redacted, sizeof(cl->floating.url_redacted), "redis://%s:%d (cluster node, any)",
             n->t.addr.host, n->t.addr.port);
    cl->floating_node = n;
}

/* Once used, floating leaves a node that is not a ready primary for one
 * that is: a connection on it reconnects there at its next attempt. */
static void floating_follow(struct rds_cluster *cl)
{
    struct clu_node *cur = cl->floating_node;
    if (!cur || (cur->conn && cur->conn->state == RC_READY && cur->role != ROLE_REPLICA))
        return;
    struct clu_node *n = rds_cluster_any(cl);
    if (!n || n == cur || !n->conn || n->conn->state != RC_READY)
        return;
    log_info("redis cluster: connections to any node move from %s:%d to %s:%d", cur->t.addr.host, cur->t.addr.port,
             n->t.addr.host, n->t.addr.port);
    floating_set(cl, n);
}

struct rds_target *rds_cluster_floating_target(struct rds_cluster *cl)
{
    if (!cl->floating_node) {
        struct clu_node *n = rds_cluster_any(cl);
        if (!n && !cl->nnodes)
            return NULL;
        floating_set(cl, n ? n : cl->node[0]);
    }
    return &cl->floating;
}

enum backend_health rds_cluster_health(struct rds_cluster *cl, char *why, size_t len)
{
    size_t ready = 0, usable = 0, primaries = 0;
    const char *last = "";
    for (size_t i = 0; i < cl->nnodes; i++) {
        const struct clu_node *n = cl->node[i];
        if (!n->conn)
            continue;
        if (n->conn->last_error[0])
            last = n->conn->last_error;
        if (n->role == ROLE_PRIMARY && n->slots) {
            primaries++;
            ready += n->conn->state == RC_READY;
        }
        usable += rds_conn_usable(n->conn);
    }
    if (cl->map_known && cl->h.commands->n && ready)
        return BH_UP;
    if (!cl->map_known)
        snprintf(why, len, "the slot map is not known yet%s%s", last[0] ? ": " : "", last);
    else if (!cl->h.commands->n)
        snprintf(why, len, "the command table is not learned yet");
    else
        snprintf(why, len, "no primary of %zu is ready: %s", primaries, last);
    return usable ? BH_CONNECTING : BH_DOWN;
}

void rds_cluster_stats(struct rds_cluster *cl, struct cbuf *o)
{
    uint64_t now = uv_now(cl->h.tmpl->loop);
    cbuf_map(o, 11);
    cbuf_str(o, "map_version");
    cbuf_uint(o, cl->map_version);
    cbuf_str(o, "map_age_ms");
    cbuf_uint(o, cl->map_known ? now - cl->map_at : 0);
    cbuf_str(o, "refreshes");
    cbuf_uint(o, cl->refreshes);
    cbuf_str(o, "moved");
    cbuf_uint(o, cl->moved);
    cbuf_str(o, "ask");
    cbuf_uint(o, cl->asks);
    cbuf_str(o, "tryagain");
    cbuf_uint(o, cl->tryagain);
    cbuf_str(o, "crossslot");
    cbuf_uint(o, cl->crossslot);
    cbuf_str(o, "split");
    cbuf_uint(o, cl->split);
    cbuf_str(o, "unavailable");
    cbuf_uint(o, cl->unavailable);
    cbuf_str(o, "replica_reads");
    cbuf_uint(o, cl->replica_reads);
    cbuf_str(o, "nodes");
    cbuf_array(o, cl->nnodes);
    for (size_t i = 0; i < cl->nnodes; i++) {
        const struct clu_node *n = cl->node[i];
        char addr[300];
        snprintf(addr, sizeof(addr), "%s:%d", n->t.addr.host, n->t.addr.port);
        cbuf_map(o, 6);
        cbuf_str(o, "address");
        cbuf_str(o, addr);
        cbuf_str(o, "id");
        cbuf_str(o, n->id);
        cbuf_str(o, "role");
        cbuf_str(o, role_name(n->role));
        cbuf_str(o, "state");
        cbuf_str(o, n->conn ? rds_conn_state_name(n->conn->state) : "unused");
        cbuf_str(o, "slots");
        cbuf_uint(o, n->slots);
        cbuf_str(o, "pending");
        cbuf_uint(o, n->conn ? rds_conn_pending(n->conn) : 0);
    }
}

void rds_cluster_metrics(struct rds_cluster *cl, const struct metric_emit *e)
{
    if (e->node)
        for (size_t i = 0; i < cl->nnodes; i++) {
            const struct clu_node *n = cl->node[i];
            e->node(e->ctx, "redis", n->hostport, role_name(n->role),
                    n->conn && n->conn->state == RC_READY);
        }
    if (e->connections) {
        uint64_t by_state[RC_STOPPED + 1] = {0};
        for (size_t i = 0; i < cl->nnodes; i++)
            if (cl->node[i]->conn)
                by_state[cl->node[i]->conn->state]++;
        for (int st = 0; st <= RC_STOPPED; st++)
            if (by_state[st])
                e->connections(e->ctx, "redis", rds_conn_state_name((enum rconn_state)st), by_state[st]);
    }
    if (e->counter) {
        uint64_t reconnects = 0;
        for (size_t i = 0; i < cl->nnodes; i++) {
            const struct rds_conn *c = cl->node[i]->conn;
            reconnects += c && c->connects > 1 ? c->connects - 1 : 0;
        }
        e->counter(e->ctx, "redis", "ferry.backend.reconnects", reconnects);
    }
}

void rds_cluster_stop(struct rds_cluster *cl)
{
    cl->stopped = true;
    for (size_t i = 0; i < cl->nnodes; i++)
        if (cl->node[i]->conn)
            rds_conn_stop(cl->node[i]->conn);
    if (cl->started) {
        uv_close((uv_handle_t *)&cl->map_timer, NULL);
        uv_close((uv_handle_t *)&cl->retry_timer, NULL);
    }
}

void rds_cluster_free(struct rds_cluster *cl)
{
    if (!cl)
        return;
    for (size_t i = 0; i < cl->nnodes; i++) {
        struct clu_node *n = cl->node[i];
        if (n->conn)
            rds_conn_free(n->conn);
        url_redis_free(&n->t.addr);
        free(n);
    }
    free(cl->node);
    while (cl->spare) {
        void *next = *(void **)cl->spare;
        free(cl->spare);
        cl->spare = next;
    }
    free(cl);
}
