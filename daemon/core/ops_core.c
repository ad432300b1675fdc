/* ops_core.c: the ops that ferryd answers itself: ping, hello, stats,
 * health. */
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "ops_core.h"
#include "server.h"
#include "telemetry.h"

static int op_ping(void *ctx, struct request *r)
{
    (void)ctx;
    static const uint8_t pong[] = {0x64, 'P', 'O', 'N', 'G'};
    request_result(r, pong, sizeof(pong));
    return 0;
}

/* Checks hello's args, {"protocol": N}: a client that needs a protocol
 * this server does not speak learns it here, before it sends anything
 * else. Other keys are refused, naming the key, as every op with a map of
 * args does (docs/protocol.md): a misspelt "protocl" would otherwise pass
 * as a successful negotiation. Returns NULL, or what is wrong. */
static const char *hello_check(const struct request *r, char *msg, size_t len)
{
    struct cursor c = {.buf = r->v.args, .len = r->v.args_len, .pos = 0};
    struct tok t;
    if (cursor_next(&c, &t) != 0 || t.type != TOK_MAP)
        return "hello args must be a map";
    for (uint64_t i = 0; i < t.u; i++) {
        struct tok k, v;
        if (cursor_next(&c, &k) != 0 || cursor_skip_rest(&c, &k) != 0 ||
            cursor_next(&c, &v) != 0 || cursor_skip_rest(&c, &v) != 0)
            return "malformed hello args";
        if (k.type != TOK_TEXT)
            return "hello args keys must be text";
        if (k.n != 8 || memcmp(k.p, "protocol", 8) != 0) {
            size_t n = k.n > 64 ? 64 : k.n;
            while (n < k.n && n > 0 && (k.p[n] & 0xc0) == 0x80)
                n--; /* cut at a character boundary: the message is CBOR text */
            snprintf(msg, len, "unknown key '%.*s' in hello args", (int)n, (const char *)k.p);
            return msg;
        }
        if (v.type != TOK_UINT)
            return "protocol must be an unsigned integer";
        if (v.u != FERRY_PROTOCOL_VERSION) {
            snprintf(msg, len, "protocol %llu is not supported; this server speaks %d",
                     (unsigned long long)v.u, FERRY_PROTOCOL_VERSION);
            return msg;
        }
    }
    return NULL;
}

static int op_hello(void *ctx, struct request *r)
{
    struct server *s = ctx;
    char msg[128];
    const char *bad = r->v.args ? hello_check(r, msg, sizeof(msg)) : NULL;
    if (bad) {
        request_fail(r, FE_BAD_REQUEST, bad);
        return 0;
    }
    size_t at;
    struct cbuf *o = request_result_begin(r, &at);
    cbuf_map(o, 5);
    cbuf_str(o, "protocol");
    cbuf_uint(o, FERRY_PROTOCOL_VERSION);
    cbuf_str(o, "server");
    cbuf_str(o, "ferryd");
    cbuf_str(o, "version");
    cbuf_str(o, FERRY_VERSION);
    cbuf_str(o, "max_frame");
    cbuf_uint(o, (uint64_t)s->cfg.max_frame);
    cbuf_str(o, "ops");
    cbuf_array(o, s->ops.n);
    for (size_t i = 0; i < s->ops.n; i++)
        cbuf_str(o, s->ops.op[i].name);
    request_result_end(r, at);
    return 0;
}

/* Who is connected, by the kernel's word (SO_PEERCRED), oldest first and
 * at most STATS_PEERS of them: enough to see which applications use the
 * daemon without a reply that grows with max_clients. */
#define STATS_PEERS 100

static void put_peers(struct cbuf *o, const struct client_set *set)
{
    size_t n = set->n < STATS_PEERS ? set->n : STATS_PEERS, i = 0;
    cbuf_str(o, "peers");
    cbuf_array(o, n);
    const struct dlist *pos;
    dlist_foreach(pos, &set->list) {
        if (i++ == n)
            break;
        const struct client *c = container_of(pos, struct client, node);
        cbuf_map(o, c->has_cred ? 5 : 2);
        cbuf_str(o, "id");
        cbuf_uint(o, c->id);
        if (c->has_cred) {
            cbuf_str(o, "uid");
            cbuf_uint(o, c->uid);
            cbuf_str(o, "gid");
            cbuf_uint(o, c->gid);
            cbuf_str(o, "pid");
            cbuf_uint(o, (uint64_t)c->pid);
        }
        cbuf_str(o, "inflight");
        cbuf_uint(o, c->ro.ninflight);
    }
}

/* The access policy: each policy's clients now, requests checked and
 * requests denied (counts survive reloads, by name). */
static void put_policies(struct cbuf *o, const struct server *s)
{
    const struct policy_set *set = &s->policies;
    cbuf_str(o, "policies");
    cbuf_map(o, 3);
    cbuf_str(o, "file");
    cbuf_str(o, s->cfg.policy_file);
    cbuf_str(o, "refused_peers");
    cbuf_uint(o, set->refused_peers);
    cbuf_str(o, "by_name");
    cbuf_map(o, set->n);
    for (size_t i = 0; i < set->n; i++) {
        const struct policy *p = &set->p[i];
        uint64_t clients = 0;
        const struct dlist *pos;
        dlist_foreach(pos, &s->clients.list) {
            const struct client *c = container_of(pos, struct client, node);
            clients += !c->closing && c->has_cred && policy_find(set, c->uid, c->gid) == p;
        }
        cbuf_str(o, p->name);
        cbuf_map(o, 3);
        cbuf_str(o, "clients");
        cbuf_uint(o, clients);
        cbuf_str(o, "requests");
        cbuf_uint(o, p->requests);
        cbuf_str(o, "denied");
        cbuf_uint(o, p->denied);
    }
}

static int op_stats(void *ctx, struct request *r)
{
    struct server *s = ctx;
    size_t at;
    struct cbuf *o = request_result_begin(r, &at);
    cbuf_map(o, 9);
    put_policies(o, s);
    struct telemetry_counts tc;
    telemetry_counts(s->tel, &tc);
    cbuf_str(o, "telemetry");
    cbuf_map(o, 4);
    cbuf_str(o, "spans_queued");
    cbuf_uint(o, tc.spans_queued);
    cbuf_str(o, "spans_exported");
    cbuf_uint(o, tc.spans_exported);
    cbuf_str(o, "spans_dropped");
    cbuf_uint(o, tc.spans_dropped);
    cbuf_str(o, "export_failures");
    cbuf_uint(o, tc.export_failures);
    cbuf_str(o, "version");
    cbuf_str(o, FERRY_VERSION);
    cbuf_str(o, "pid");
    cbuf_uint(o, (uint64_t)getpid());
    cbuf_str(o, "uptime_ms");
    cbuf_uint(o, uv_now(s->loop) - s->started_ms);

    cbuf_str(o, "clients");
    cbuf_map(o, 7);
    cbuf_str(o, "connected");
    cbuf_uint(o, s->clients.n);
    cbuf_str(o, "max");
    cbuf_uint(o, (uint64_t)s->cfg.max_clients);
    cbuf_str(o, "buffered_in");
    cbuf_uint(o, s->clients.buffered_in);
    cbuf_str(o, "buffered_out");
    cbuf_uint(o, s->clients.buffered_out);
    cbuf_str(o, "max_buffered");
    cbuf_uint(o, (uint64_t)s->cfg.max_buffered);
    cbuf_str(o, "fd_limit");
    cbuf_uint(o, (uint64_t)s->clients.fd_limit);
    put_peers(o, &s->clients);

    cbuf_str(o, "counters");
    size_t n = 0;
#define SC_COUNT(name, help) n++;
    CORE_COUNTERS(SC_COUNT)
#undef SC_COUNT
    cbuf_map(o, n);
#define SC_PUT(name, help) cbuf_str(o, #name); cbuf_uint(o, s->counters.name);
    CORE_COUNTERS(SC_PUT)
#undef SC_PUT

    /* requests: {op: {outcome: count}}, listing outcomes that happened. */
    cbuf_str(o, "requests");
    cbuf_map(o, s->ops.n);
    for (size_t i = 0; i < s->ops.n; i++) {
        const struct op *op = &s->ops.op[i];
        size_t k = 0;
        for (int j = 0; j < NOUTCOMES; j++)
            k += op->outcomes[j] != 0;
        cbuf_str(o, op->name);
        cbuf_map(o, k);
        for (int j = 0; j < NOUTCOMES; j++) {
            if (!op->outcomes[j])
                continue;
            cbuf_str(o, ops_outcome_name(j));
            cbuf_uint(o, op->outcomes[j]);
        }
    }

    cbuf_str(o, "backends");
    cbuf_map(o, s->nbackends);
    for (size_t i = 0; i < s->nbackends; i++) {
        cbuf_str(o, s->backends[i]->ops->name);
        s->backends[i]->ops->stats(s->backends[i], o);
    }
    request_result_end(r, at);
    return 0;
}

static const char *health_name(enum backend_health h)
{
    return h == BH_UP ? "up" : h == BH_CONNECTING ? "connecting" : "down";
}

/* Readiness for probes (ferry health, Kubernetes' readinessProbe): ready
 * when every configured backend is up. Backends that are not configured
 * are left out, so a probe does not wait for a broker nobody asked for.
 * Liveness needs no op of its own: an answer to anything (ping) is it. */
static int op_health(void *ctx, struct request *r)
{
    struct server *s = ctx;
    if (r->v.args) {
        request_fail(r, FE_BAD_REQUEST, "health takes no args");
        return 0;
    }
    enum backend_health h[SERVER_MAX_BACKENDS];
    char why[SERVER_MAX_BACKENDS][160];
    size_t listed = 0, failing = 0;
    for (size_t i = 0; i < s->nbackends; i++) {
        why[i][0] = '\0';
        h[i] = s->backends[i]->ops->health(s->backends[i], why[i], sizeof(why[i]));
        listed += h[i] != BH_OFF;
        failing += h[i] != BH_OFF && h[i] != BH_UP;
    }
    size_t at;
    struct cbuf *o = request_result_begin(r, &at);
    cbuf_map(o, 3);
    cbuf_str(o, "ready");
    cbuf_bool(o, failing == 0);
    cbuf_str(o, "backends");
    cbuf_map(o, listed);
    for (size_t i = 0; i < s->nbackends; i++) {
        if (h[i] == BH_OFF)
            continue;
        cbuf_str(o, s->backends[i]->ops->name);
        cbuf_str(o, health_name(h[i]));
    }
    /* Why each backend that is not up is not: its last error. */
    cbuf_str(o, "errors");
    cbuf_map(o, failing);
    for (size_t i = 0; i < s->nbackends; i++) {
        if (h[i] == BH_OFF || h[i] == BH_UP)
            continue;
        cbuf_str(o, s->backends[i]->ops->name);
        cbuf_str(o, why[i]);
    }
    request_result_end(r, at);
    return 0;
}

int ops_core_register(struct server *s)
{
    if (ops_add(&s->ops, "ping", op_ping, s, NULL, 0) || ops_add(&s->ops, "hello", op_hello, s, NULL, 0) ||
        ops_add(&s->ops, "stats", op_stats, s, NULL, 0) || ops_add(&s->ops, "health", op_health, s, NULL, 0))
        return FE_INTERNAL;
    return 0;
}
