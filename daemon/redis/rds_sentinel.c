/* rds_sentinel.c: see rds_sentinel.h.
 *
 * Two connections to the current sentinel: one for questions, one
 * subscribed to +switch-master (a subscribed connection takes no other
 * command). When the sentinel is lost, both move on to the next one in
 * redis_sentinel. The address is also asked every POLL_MS (every
 * second while unconfirmed), so a missed message only delays a switch. */
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "log.h"
#include "rds_config.h"
#include "rds_sentinel.h"

#define POLL_MS 5000
#define POLL_UNCONFIRMED_MS 1000

struct rds_sentinel {
    struct rds_sentinel_host h;
    struct rds_addr addr[RDS_MAX_ADDRS]; /* the sentinels */
    int naddr, cur;                       /* cur: the one in use */
    struct rds_target st;        /* owns: the current sentinel's address (its password) */
    struct rds_conn *query;      /* owns: questions to the sentinel */
    struct rds_conn *sub;        /* owns: subscribed to +switch-master */
    struct rds_conn *probe;      /* owns: to the primary (the backend's target): ROLE */
    uv_timer_t timer;
    uint64_t last_ask;           /* loop time of the last question */
    bool known;                  /* a sentinel has named the primary */
    bool confirmed;              /* the probe's ROLE said master, at the address in force */
    bool started, stopped;
    uint64_t switches;           /* primary changes followed */
    char why[160];
};

static void set_confirmed(struct rds_sentinel *s, bool yes, const char *why)
{
    bool was = s->confirmed;
    s->confirmed = yes;
    snprintf(s->why, sizeof(s->why), "%s", yes ? "" : why);
    if (was != yes)
        s->h.changed(s->h.arg);
}

static void on_role(void *arg, const redisReply *reply)
{
    struct rds_sentinel *s = arg;
    if (!reply || s->stopped)
        return;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 && reply->element[0]->type == REDIS_REPLY_STRING &&
        !strcmp(reply->element[0]->str, "master")) {
        if (!s->confirmed)
            log_info("redis sentinel: %s:%d confirms it is the primary (ROLE)", s->h.t->addr.host, s->h.t->addr.port);
        set_confirmed(s, true, NULL);
        return;
    }
    log_warn("redis sentinel: %s:%d is not a primary (ROLE); asking the sentinels again", s->h.t->addr.host,
             s->h.t->addr.port);
    set_confirmed(s, false, "the server named by the sentinels is not a primary (yet)");
}

/* The probe connected (again) to t's address: before the backend
 * serves there, the server must say it is the primary: a demoted one
 * that came back must not take writes. */
static void on_probe_ready(struct rds_conn *c, void *arg)
{
    const char *argv[1] = {"ROLE"};
    size_t lens[1] = {4};
    if (rds_conn_call(c, 1, argv, lens, on_role, arg) != 0)
        log_warn("redis sentinel: cannot send ROLE");
}

static void on_probe_lost(struct rds_conn *c, void *arg)
{
    (void)c;
    set_confirmed(arg, false, "the primary is unreachable; waiting for the sentinels");
}

/* Points the backend at host:port (a new primary, or the first one). */
static void follow(struct rds_sentinel *s, const char *host, size_t hlen, int port, const char *how)
{
    struct rds_target *t = s->h.t;
    if (hlen >= sizeof(t->addr.host))
        return;
    if (s->known && t->addr.port == port && strlen(t->addr.host) == hlen && !memcmp(t->addr.host, host, hlen))
        return;
    if (s->known)
        s->switches++;
    if (s->known)
        log_warn("redis sentinel: the primary of %s is now %.*s:%d (%s; was %s:%d)", s->h.t->rc->sentinel_master,
                 (int)hlen, host, port, how, t->addr.host, t->addr.port);
    else
        log_info("redis sentinel: the primary of %s is %.*s:%d", s->h.t->rc->sentinel_master, (int)hlen, host, port);
    memcpy(t->addr.host, host, hlen);
    t->addr.host[hlen] = '\0';
    t->addr.port = port;
    snprintf(t->url_redacted, sizeof(t->url_redacted), "redis://%s:%d (primary of %s)", t->addr.host, port,
             s->h.t->rc->sentinel_master);
    bool first = !s->known;
    s->known = true;
    set_confirmed(s, false, "the new primary has not confirmed its role yet");
    if (first)
        rds_conn_start(s->probe);
    else
        rds_conn_reconnect(s->probe, "the primary changed");
    s->h.switched(s->h.arg);
}

static void on_master_addr(void *arg, const redisReply *reply)
{
    struct rds_sentinel *s = arg;
    if (!reply || s->stopped)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
        snprintf(s->why, sizeof(s->why), "sentinel %s:%d does not know the primary %s%s%s", s->addr[s->cur].host,
                 s->addr[s->cur].port, s->h.t->rc->sentinel_master, reply->type == REDIS_REPLY_ERROR ? ": " : "",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        log_warn("redis %s", s->why);
        return;
    }
    int port = atoi(reply->element[1]->str);
    if (port > 0 && port < 65536)
        follow(s, reply->element[0]->str, reply->element[0]->len, port, "asked");
    /* Confirmation failed at the same address: ask the server again. */
    if (s->known && !s->confirmed && s->probe->state == RC_READY)
        on_probe_ready(s->probe, s);
}

static void ask(struct rds_sentinel *s)
{
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", s->h.t->rc->sentinel_master};
    size_t lens[3] = {8, 23, strlen(argv[2])};
    s->last_ask = uv_now(s->h.t->loop);
    if (s->query->state == RC_READY)
        (void)rds_conn_call(s->query, 3, argv, lens, on_master_addr, s);
}

static void on_query_ready(struct rds_conn *c, void *arg)
{
    (void)c;
    ask(arg);
}

static void on_sub_ready(struct rds_conn *c, void *arg)
{
    (void)arg;
    const char *argv[2] = {"SUBSCRIBE", "+switch-master"};
    size_t lens[2] = {9, 14};
    if (rds_conn_send_raw(c, 2, argv, lens) != 0)
        log_warn("redis sentinel: cannot subscribe to +switch-master");
}

/* ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"] */
static void on_sub_message(struct rds_conn *c, void *arg, const redisReply *reply)
{
    (void)c;
    struct rds_sentinel *s = arg;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || reply->element[2]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str ? reply->element[0]->str : "", "message"))
        return;
    char name[128], oldh[256], newh[256];
    int oldp, newp;
    if (sscanf(reply->element[2]->str, "%127s %255s %d %255s %d", name, oldh, &oldp, newh, &newp) != 5 ||
        strcmp(name, s->h.t->rc->sentinel_master) != 0)
        return;
    follow(s, newh, strlen(newh), newp, "+switch-master");
}

/* The sentinel went away: both connections move on to the next one. */
static void on_sentinel_lost(struct rds_conn *c, void *arg)
{
    struct rds_sentinel *s = arg;
    if (c != s->query || s->naddr < 2)
        return;
    s->cur = (s->cur + 1) % s->naddr;
    memcpy(s->st.addr.host, s->addr[s->cur].host, sizeof(s->st.addr.host));
    s->st.addr.port = s->addr[s->cur].port;
    snprintf(s->st.url_redacted, sizeof(s->st.url_redacted), "redis://%s:%d (sentinel)", s->st.addr.host,
             s->st.addr.port);
    rds_conn_reconnect(s->sub, "moving to the next sentinel");
}

static void on_tick(uv_timer_t *t)
{
    struct rds_sentinel *s = container_of(t, struct rds_sentinel, timer);
    uint64_t every = s->confirmed ? POLL_MS : POLL_UNCONFIRMED_MS;
    if (uv_now(s->h.t->loop) - s->last_ask >= every)
        ask(s);
}

static void no_change(struct rds_target *t) { (void)t; }

struct rds_sentinel *rds_sentinel_new(const struct rds_sentinel_host *h, char *err, size_t errlen)
{
    const struct rds_config *rc = h->t->rc;
    struct rds_sentinel *s = xcalloc(1, sizeof(*s));
    s->h = *h;
    char why[160];
    s->naddr = rds_config_addrs(rc->sentinel, s->addr, RDS_MAX_ADDRS, why, sizeof(why));
    if (s->naddr <= 0) {
        snprintf(err, errlen, "key 'redis_sentinel': %s", s->naddr < 0 ? why : "no address");
        free(s);
        return NULL;
    }
    s->st = *h->t;
    memset(&s->st.tls, 0, sizeof(s->st.tls));
    s->st.addr.user = NULL;
    s->st.addr.password = rc->sentinel_password[0] ? xstrdup(rc->sentinel_password) : NULL;
    s->st.addr.db = 0;
    memcpy(s->st.addr.host, s->addr[0].host, sizeof(s->st.addr.host));
    s->st.addr.port = s->addr[0].port;
    snprintf(s->st.url_redacted, sizeof(s->st.url_redacted), "redis://%s:%d (sentinel)", s->st.addr.host,
             s->st.addr.port);
    s->st.changed = no_change;
    s->st.control_ready = NULL;
    s->query = rds_conn_new(&s->st, 900);
    s->sub = rds_conn_new(&s->st, 901);
    s->probe = rds_conn_new(h->t, 902);
    s->query->quiet = s->sub->quiet = s->probe->quiet = true;
    s->query->hooks = (struct rds_conn_hooks){.arg = s, .ready = on_query_ready, .lost = on_sentinel_lost};
    s->sub->hooks = (struct rds_conn_hooks){.arg = s, .ready = on_sub_ready, .sink = on_sub_message};
    s->probe->hooks = (struct rds_conn_hooks){.arg = s, .ready = on_probe_ready, .lost = on_probe_lost};
    snprintf(s->why, sizeof(s->why), "the sentinels have not named the primary yet");
    return s;
}

void rds_sentinel_start(struct rds_sentinel *s)
{
    s->st.loop = s->h.t->loop;
    s->started = true;
    rds_conn_start(s->query);
    rds_conn_start(s->sub);
    uv_timer_init(s->h.t->loop, &s->timer);
    uv_timer_start(&s->timer, on_tick, 250, 250);
}

bool rds_sentinel_confirmed(const struct rds_sentinel *s) { return s->confirmed; }

const char *rds_sentinel_why(const struct rds_sentinel *s) { return s->why; }

void rds_sentinel_stats(const struct rds_sentinel *s, struct cbuf *o)
{
    char primary[300], sentinel[300];
    snprintf(primary, sizeof(primary), "%s:%d", s->known ? s->h.t->addr.host : "", s->known ? s->h.t->addr.port : 0);
    snprintf(sentinel, sizeof(sentinel), "%s:%d", s->st.addr.host, s->st.addr.port);
    cbuf_map(o, 5);
    cbuf_str(o, "primary");
    cbuf_str(o, s->known ? primary : "");
    cbuf_str(o, "confirmed");
    cbuf_bool(o, s->confirmed);
    cbuf_str(o, "sentinel");
    cbuf_str(o, sentinel);
    cbuf_str(o, "sentinel_state");
    cbuf_str(o, rds_conn_state_name(s->query->state));
    cbuf_str(o, "switches");
    cbuf_uint(o, s->switches);
}

void rds_sentinel_stop(struct rds_sentinel *s)
{
    s->stopped = true;
    rds_conn_stop(s->query);
    rds_conn_stop(s->sub);
    rds_conn_stop(s->probe);
    if (s->started)
        uv_close((uv_handle_t *)&s->timer, NULL);
}

void rds_sentinel_free(struct rds_sentinel *s)
{
    if (!s)
        return;
    rds_conn_free(s->query);
    rds_conn_free(s->sub);
    rds_conn_free(s->probe);
    free(s->st.addr.password);
    free(s);
}
