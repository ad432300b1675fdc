/* stream.c: the streams module (stream.h): its ops' arguments, the
 * one-shot ops (xadd, group.create, stream.ack without sub), and the
 * module's hooks. The subscriptions are stream_sub.c's. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "pargs.h"
#include "rds_backend.h"
#include "rds_config.h"
#include "rds_slots.h"
#include "request.h"
#include "stream.h"
#include "stream_entry.h"
#include "stream_sub.h"

#define PREFETCH_DEFAULT 10
#define PREFETCH_MAX 1000
#define ACK_MAX_IDS 1000
#define NAME_MAX_LEN 4096

/* Reclaim and dead letters, in one script so that an entry is never both
 * claimed and dead-lettered, and a dead letter is never added without
 * its XACK (nor acked without being added).
 * KEYS: stream, dead-letter stream. ARGV: group, consumer, min idle ms,
 * how many to claim (the free slots, maybe 0), max deliveries, how many
 * pending entries to look at. Returns {{id, fields, deliveries}...},
 * {dead-lettered id...}. XPENDING's IDLE form finds the idle entries and
 * their delivery counts; XAUTOCLAIM then starts at the first idle one,
 * and a claimed entry's count is the one XPENDING gave plus this claim. */
static struct evalsha_script claim_script = {
    .body =
        "local s, d = KEYS[1], KEYS[2]\n"
        "local g, c, idle, n, maxd = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])\n"
        "local pend = redis.call('XPENDING', s, g, 'IDLE', idle, '-', '+', ARGV[6])\n"
        "local counts, dead, first = {}, {}, nil\n"
        "for _, p in ipairs(pend) do\n"
        "  if p[4] >= maxd then\n"
        "    local e = redis.call('XRANGE', s, p[1], p[1])\n"
        "    if e[1] then\n"
        "      local f = e[1][2]\n"
        "      f[#f+1] = 'delivery_count'; f[#f+1] = tostring(p[4])\n"
        "      f[#f+1] = 'origin_stream'; f[#f+1] = s\n"
        "      f[#f+1] = 'origin_id'; f[#f+1] = p[1]\n"
        "      f[#f+1] = 'group'; f[#f+1] = g\n"
        "      redis.call('XADD', d, '*', unpack(f))\n"
        "    end\n"
        "    redis.call('XACK', s, g, p[1])\n"
        "    dead[#dead+1] = p[1]\n"
        "  else\n"
        "    counts[p[1]] = p[4]\n"
        "    if not first then first = p[1] end\n"
        "  end\n"
        "end\n"
        "local out = {}\n"
        "if n > 0 and first then\n"
        "  local r = redis.call('XAUTOCLAIM', s, g, c, idle, first, 'COUNT', n)\n"
        "  for _, e in ipairs(r[2]) do\n"
        "    if type(e) == 'table' and type(e[2]) == 'table' then\n"
        "      local k = counts[e[1]]\n"
        "      if not k then\n"
        "        local q = redis.call('XPENDING', s, g, e[1], e[1], 1)\n"
        "        k = q[1] and (q[1][4] - 1) or 0\n"
        "      end\n"
        "      out[#out+1] = {e[1], e[2], k + 1}\n"
        "    end\n"
        "  end\n"
        "end\n"
        "return {out, dead}\n",
};

/* A one-shot op's request while its command is out. */
enum call_kind { CALL_XADD, CALL_GROUP, CALL_ACK };

struct stream_call {
    struct rds_job job;
    struct stream_subs *m;         /* refers */
    enum call_kind kind;
};

static struct stream_subs *mod_of(struct rds_backend *rb)
{
    return rds_backend_state(rb, &stream_module);
}

static void call_cancel(struct rds_job *j)
{
    (void)j; /* the reply frees it */
}

static void on_call(void *arg, const redisReply *reply)
{
    struct stream_call *k = arg;
    struct request *r = k->job.r;
    if (!r) {
        free(k);
        return;
    }
    if (k->kind == CALL_GROUP && reply && reply->type == REDIS_REPLY_ERROR && reply->len >= 9 &&
        !memcmp(reply->str, "BUSYGROUP", 9)) {
        /* Creating a group is how consumers start: one that exists is
         * what the caller wanted. */
        static const uint8_t created_false[] = {0xa1, 0x67, 'c', 'r', 'e', 'a', 't', 'e', 'd', 0xf4};
        request_result(r, created_false, sizeof(created_false));
    } else if (!reply || reply->type == REDIS_REPLY_ERROR) {
        rds_backend_fail_reply(r, reply);
    } else {
        size_t at;
        struct cbuf *o = request_result_begin(r, &at);
        if (k->kind == CALL_XADD && reply->type == REDIS_REPLY_STRING)
            cbuf_text(o, reply->str, reply->len);
        else if (k->kind == CALL_XADD)
            cbuf_null(o); /* NOMKSTREAM cannot be asked for, so never */
        else if (k->kind == CALL_GROUP) {
            cbuf_map(o, 1);
            cbuf_str(o, "created");
            cbuf_bool(o, true);
        } else {
            cbuf_map(o, 1);
            cbuf_str(o, "acked");
            cbuf_uint(o, reply->type == REDIS_REPLY_INTEGER ? (uint64_t)reply->integer : 0);
            if (reply->type == REDIS_REPLY_INTEGER)
                k->m->acked += (uint64_t)reply->integer;
        }
        request_result_end(r, at);
    }
    free(k);
}

/* Checks argv against redis_deny and the client's policy, then sends it
 * for r, routed by argv[key]. Returns 0 (r is answered, or will be) or a
 * negative fe code. */
static int send_call(struct rds_backend *rb, struct request *r, enum call_kind kind, int key, int argc,
                     const char **argv, const size_t *lens)
{
    char msg[256];
    int rc = rds_backend_check(rb, r, true, argc, argv, lens, msg, sizeof(msg));
    if (rc) {
        request_fail(r, rc, msg);
        return 0;
    }
    struct stream_call *k = xcalloc(1, sizeof(*k));
    k->kind = kind;
    k->m = mod_of(rb);
    rc = rds_backend_call(rb, argv[key], lens[key], argc, argv, lens, on_call, k);
    if (rc) {
        free(k);
        return rc;
    }
    k->job.cancel = call_cancel;
    rds_backend_hold(r, &k->job);
    return 0;
}

static int bad(struct request *r, const char *msg)
{
    request_fail(r, FE_BAD_REQUEST, msg);
    return 0;
}

/* A name argument: present, not empty, not huge. */
static const char *check_name(const struct parg *a, char *msg, size_t len)
{
    if (!a->present)
        return NULL;
    if (a->n == 0 || a->n > NAME_MAX_LEN) {
        snprintf(msg, len, "'%s' must be 1 to %d bytes", a->name, NAME_MAX_LEN);
        return msg;
    }
    return NULL;
}

static const char *read_args(struct request *r, struct parg *spec, size_t n, char *msg, size_t len)
{
    const char *bad_arg = pargs_read(r->v.args, r->v.args_len, spec, n, msg, len);
    for (size_t i = 0; !bad_arg && i < n; i++)
        if (spec[i].type == PA_STR && strcmp(spec[i].name, "id") != 0)
            bad_arg = check_name(&spec[i], msg, len);
    return bad_arg;
}

static int op_xadd(struct rds_backend *rb, struct request *r)
{
    struct parg a[] = {
        {.name = "stream", .type = PA_STR, .required = true},
        {.name = "fields", .type = PA_ANY, .required = true},
        {.name = "id", .type = PA_STR},
        {.name = "maxlen", .type = PA_UINT},
        {.name = "approx", .type = PA_BOOL},
    };
    char msg[256];
    if (read_args(r, a, 5, msg, sizeof(msg)))
        return bad(r, msg);
    if (a[4].present && !a[3].present)
        return bad(r, "'approx' needs 'maxlen'");
    int pairs = stream_entry_count(a[1].p, a[1].n, msg, sizeof(msg));
    if (pairs < 0)
        return bad(r, msg);
    int argc = 0;
    const char **argv = xmalloc((size_t)(6 + 2 * pairs) * sizeof(*argv));
    size_t *lens = xmalloc((size_t)(6 + 2 * pairs) * sizeof(*lens));
    char maxlen[24];
    argv[argc] = "XADD", lens[argc++] = 4;
    argv[argc] = (const char *)a[0].p, lens[argc++] = a[0].n;
    if (a[3].present) {
        argv[argc] = "MAXLEN", lens[argc++] = 6;
        if (a[4].present && a[4].b)
            argv[argc] = "~", lens[argc++] = 1;
        int n = snprintf(maxlen, sizeof(maxlen), "%llu", (unsigned long long)a[3].u);
        argv[argc] = maxlen, lens[argc++] = (size_t)n;
    }
    if (a[2].present)
        argv[argc] = (const char *)a[2].p, lens[argc++] = a[2].n;
    else
        argv[argc] = "*", lens[argc++] = 1;
    stream_entry_fields(a[1].p, a[1].n, argv + argc, lens + argc);
    argc += 2 * pairs;
    int rc = send_call(rb, r, CALL_XADD, 1, argc, argv, lens);
    free(argv);
    free(lens);
    return rc;
}

static int op_group_create(struct rds_backend *rb, struct request *r)
{
    struct parg a[] = {
        {.name = "stream", .type = PA_STR, .required = true},
        {.name = "group", .type = PA_STR, .required = true},
        {.name = "id", .type = PA_STR},
        {.name = "mkstream", .type = PA_BOOL},
    };
    char msg[256];
    if (read_args(r, a, 4, msg, sizeof(msg)))
        return bad(r, msg);
    if (a[2].present && a[2].n == 0)
        return bad(r, "'id' must not be empty ('$' for new entries only, '0' for all)");
    const char *argv[6] = {"XGROUP", "CREATE", (const char *)a[0].p, (const char *)a[1].p,
                           a[2].present ? (const char *)a[2].p : "$", "MKSTREAM"};
    size_t lens[6] = {6, 6, a[0].n, a[1].n, a[2].present ? a[2].n : 1, 8};
    return send_call(rb, r, CALL_GROUP, 2, a[3].present && a[3].b ? 6 : 5, argv, lens);
}

static int op_consume(struct rds_backend *rb, struct request *r)
{
    struct parg a[] = {
        {.name = "stream", .type = PA_STR, .required = true},
        {.name = "group", .type = PA_STR, .required = true},
        {.name = "consumer", .type = PA_STR, .required = true},
        {.name = "prefetch", .type = PA_UINT},
        {.name = "claim_idle_ms", .type = PA_UINT},
        {.name = "max_deliveries", .type = PA_UINT},
        {.name = "dead_letter", .type = PA_STR},
    };
    char msg[256];
    if (read_args(r, a, 7, msg, sizeof(msg)))
        return bad(r, msg);
    struct stream_sub_args sa = {
        .stream = (const char *)a[0].p, .stream_len = a[0].n,
        .group = (const char *)a[1].p, .group_len = a[1].n,
        .consumer = (const char *)a[2].p, .consumer_len = a[2].n,
        .prefetch = PREFETCH_DEFAULT,
        .claim_idle_ms = (uint64_t)rb->t.rc->stream_claim_idle_ms,
        .max_deliveries = (uint64_t)rb->t.rc->stream_max_deliveries,
    };
    if (a[3].present) {
        if (a[3].u < 1 || a[3].u > PREFETCH_MAX) {
            snprintf(msg, sizeof(msg), "'prefetch' must be 1 to %d", PREFETCH_MAX);
            return bad(r, msg);
        }
        sa.prefetch = (unsigned)a[3].u;
    }
    if (a[4].present) {
        if (a[4].u < 20 || a[4].u > 86400000)
            return bad(r, "'claim_idle_ms' must be 20 to 86400000");
        sa.claim_idle_ms = a[4].u;
    }
    if (a[5].present) {
        if (a[5].u < 1 || a[5].u > 1000000)
            return bad(r, "'max_deliveries' must be 1 to 1000000");
        sa.max_deliveries = a[5].u;
    }
    char dead[NAME_MAX_LEN + 8];
    if (a[6].present) {
        sa.dead = (const char *)a[6].p;
        sa.dead_len = a[6].n;
    } else {
        memcpy(dead, a[0].p, a[0].n);
        memcpy(dead + a[0].n, ":dead", 5);
        sa.dead = dead;
        sa.dead_len = a[0].n + 5;
    }
    /* On a cluster, the claim script touches both streams: they must be
     * in one slot. The default follows the stream's slot there. */
    if (rb->cluster && rds_slots_of(sa.dead, sa.dead_len) != rds_slots_of(sa.stream, sa.stream_len)) {
        if (a[6].present)
            return bad(r, "CROSSSLOT: on a cluster, 'dead_letter' must be in the stream's slot "
                          "(give both a common {hash tag})");
        dead[0] = '{';
        memcpy(dead + 1, a[0].p, a[0].n);
        memcpy(dead + 1 + a[0].n, "}:dead", 6);
        sa.dead_len = a[0].n + 7;
        if (rds_slots_of(sa.dead, sa.dead_len) != rds_slots_of(sa.stream, sa.stream_len))
            return bad(r, "CROSSSLOT: on a cluster, this stream needs a 'dead_letter' in its slot");
    }
    if (sa.dead_len == sa.stream_len && !memcmp(sa.dead, sa.stream, sa.stream_len))
        return bad(r, "'dead_letter' must be another stream than 'stream'");
    /* The client must be allowed what ferryd does for it: read the group
     * (on a dedicated connection, so not redis_deny's blocking rules),
     * and add to the dead-letter stream. */
    const char *rd[11] = {"XREADGROUP", "GROUP", sa.group, sa.consumer, "COUNT", "1", "BLOCK", "1",
                          "STREAMS", sa.stream, ">"};
    size_t rl[11] = {10, 5, sa.group_len, sa.consumer_len, 5, 1, 5, 1, 7, sa.stream_len, 1};
    const char *dl[5] = {"XADD", sa.dead, "*", "delivery_count", "1"};
    size_t dll[5] = {4, sa.dead_len, 1, 14, 1};
    int rc = rds_backend_check(rb, r, false, 11, rd, rl, msg, sizeof(msg));
    if (!rc)
        rc = rds_backend_check(rb, r, true, 5, dl, dll, msg, sizeof(msg));
    if (rc) {
        request_fail(r, rc, msg);
        return 0;
    }
    return stream_sub_start(mod_of(rb), r, &sa);
}

static int op_ack(struct rds_backend *rb, struct request *r)
{
    struct parg a[] = {
        {.name = "sub", .type = PA_UINT},
        {.name = "stream", .type = PA_STR},
        {.name = "group", .type = PA_STR},
        {.name = "id", .type = PA_STR},
        {.name = "ids", .type = PA_ARRAY},
    };
    char msg[256];
    if (read_args(r, a, 5, msg, sizeof(msg)))
        return bad(r, msg);
    if (a[0].present == (a[1].present || a[2].present) || (!a[0].present && !(a[1].present && a[2].present)))
        return bad(r, "give either 'sub' (an entry of a stream.consume subscription) or 'stream' and 'group'");
    if (a[3].present == a[4].present)
        return bad(r, "give either 'id' or 'ids'");
    int n = 1;
    const char **argv = xmalloc((ACK_MAX_IDS + 3) * sizeof(*argv));
    size_t *lens = xmalloc((ACK_MAX_IDS + 3) * sizeof(*lens));
    int rc = 0;
    if (a[3].present) {
        argv[3] = (const char *)a[3].p;
        lens[3] = a[3].n;
    } else {
        n = pargs_strings(a[4].p, a[4].n, argv + 3, lens + 3, ACK_MAX_IDS, msg, sizeof(msg));
        if (n == 0)
            snprintf(msg, sizeof(msg), "'ids' must not be empty");
        if (n <= 0) {
            rc = bad(r, msg);
            goto done;
        }
    }
    if (a[0].present) {
        struct stream_sub *s = stream_sub_find(mod_of(rb), r->client, a[0].u);
        if (!s) {
            snprintf(msg, sizeof(msg), "no stream.consume subscription %llu on this connection",
                     (unsigned long long)a[0].u);
            rc = bad(r, msg);
            goto done;
        }
        rc = stream_sub_ack(s, r, n, argv + 3, lens + 3, msg, sizeof(msg));
        if (rc == FE_BAD_REQUEST)
            rc = bad(r, msg);
        goto done;
    }
    argv[0] = "XACK", lens[0] = 4;
    argv[1] = (const char *)a[1].p, lens[1] = a[1].n;
    argv[2] = (const char *)a[2].p, lens[2] = a[2].n;
    rc = send_call(rb, r, CALL_ACK, 1, n + 3, argv, lens);
done:
    free(argv);
    free(lens);
    return rc;
}

static int op_cancel(struct rds_backend *rb, struct request *r)
{
    struct parg a[] = {{.name = "sub", .type = PA_UINT, .required = true}};
    char msg[256];
    if (read_args(r, a, 1, msg, sizeof(msg)))
        return bad(r, msg);
    struct stream_sub *s = stream_sub_find(mod_of(rb), r->client, a[0].u);
    if (!s) {
        snprintf(msg, sizeof(msg), "no stream.consume subscription %llu on this connection",
                 (unsigned long long)a[0].u);
        return bad(r, msg);
    }
    stream_sub_end(s);
    static const uint8_t empty_map[] = {0xa0};
    request_result(r, empty_map, 1);
    return 0;
}

static int sm_create(struct rds_backend *rb, void **state, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct stream_subs *m = xcalloc(1, sizeof(*m));
    m->rb = rb;
    dlist_init(&m->subs);
    cbuf_init(&m->scratch);
    m->claim = claim_script;
    evalsha_init(&m->claim);
    *state = m;
    return 0;
}

static void sm_client_closed(struct rds_backend *rb, void *state, struct client *c)
{
    (void)rb;
    stream_sub_end_all(state, c);
}

static void sm_stats(struct rds_backend *rb, void *state, struct cbuf *o)
{
    (void)rb;
    struct stream_subs *m = state;
    cbuf_map(o, 8);
    cbuf_str(o, "subscriptions");
    cbuf_uint(o, m->nsubs);
    cbuf_str(o, "unacked");
    cbuf_uint(o, stream_sub_unacked(m));
    cbuf_str(o, "pushed");
    cbuf_uint(o, m->pushed);
    cbuf_str(o, "reclaimed");
    cbuf_uint(o, m->reclaimed);
    cbuf_str(o, "acked");
    cbuf_uint(o, m->acked);
    cbuf_str(o, "dead_lettered");
    cbuf_uint(o, m->dead_lettered);
    cbuf_str(o, "groups_recreated");
    cbuf_uint(o, m->groups_recreated);
    cbuf_str(o, "read_errors");
    cbuf_uint(o, m->read_errors);
}

static void sm_close(struct rds_backend *rb, void *state)
{
    (void)rb;
    stream_sub_end_all(state, NULL);
}

static void sm_destroy(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct stream_subs *m = state;
    stream_sub_free_all(m);
    cbuf_free(&m->scratch);
    free(m);
}

static const struct rds_opdef stream_ops[] = {
    {"xadd", op_xadd},
    {"group.create", op_group_create},
    {"stream.consume", op_consume},
    {"stream.ack", op_ack},
    {"stream.cancel", op_cancel},
};

const struct rds_module stream_module = {
    .name = "streams",
    .ops = stream_ops,
    .nops = sizeof(stream_ops) / sizeof(stream_ops[0]),
    .create = sm_create,
    .client_closed = sm_client_closed,
    .stats = sm_stats,
    .close = sm_close,
    .destroy = sm_destroy,
};
