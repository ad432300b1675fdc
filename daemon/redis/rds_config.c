/* rds_config.c: the Redis backend's keys, checked with the same parsers
 * the backend uses at start, so that a value it would refuse is refused
 * where it is set. */
#include <string.h>

#include "rds_config.h"
#include "rds_deny.h"
#include "rds_tls.h"
#include "url.h"

#define OFF(f) offsetof(struct rds_config, f)

/* The default deny-list: commands that would harm every client of a shared
 * connection (FLUSHALL, CONFIG, SHUTDOWN, MIGRATE ...), that change the
 * connection's own state under other clients' feet (SELECT, AUTH, MULTI,
 * CLIENT REPLY), or that block or subscribe, which later ops serve on
 * dedicated connections. It guards against mistakes, not attackers:
 * scripts can run any command (docs/protocol.md says how Redis's ACLs
 * make a policy that holds). The rule syntax is in rds_deny.h. */
#define DEFAULT_DENY                                                                 \
    "FLUSHALL, FLUSHDB, CONFIG, SHUTDOWN, DEBUG, MONITOR, SLAVEOF, REPLICAOF, "      \
    "CLIENT KILL, CLIENT PAUSE, CLIENT REPLY, SYNC, PSYNC, REPLCONF, SAVE, SWAPDB, " \
    "FAILOVER, MODULE, ACL, SCRIPT FLUSH, FUNCTION FLUSH, MIGRATE, "                 \
    "SELECT, AUTH, HELLO, RESET, QUIT, MULTI, EXEC, DISCARD, WATCH, UNWATCH, "       \
    "SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE, "   \
    "BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, "         \
    "WAIT, WAITAOF, XREAD [BLOCK] STREAMS, XREADGROUP GROUP * * [BLOCK] STREAMS"

static int check_url(const char *v, char *why, size_t len)
{
    struct url_redis a;
    memset(&a, 0, sizeof(a));
    int rc = url_parse_redis(v, &a, why, len);
    url_redis_free(&a);
    return rc;
}

static int check_deny(const char *v, char *why, size_t len)
{
    struct rds_deny d;
    if (rds_deny_parse(v, &d, why, len) != 0)
        return -1;
    rds_deny_free(&d);
    return 0;
}

static int check_query_text(const char *v, char *why, size_t len)
{
    if (strcmp(v, "sanitized") && strcmp(v, "full") && strcmp(v, "off")) {
        snprintf(why, len, "'%s' is not sanitized, full or off", v);
        return -1;
    }
    return 0;
}

static int check_yes_no(const char *v, char *why, size_t len)
{
    if (strcmp(v, "yes") && strcmp(v, "no")) {
        snprintf(why, len, "'%s' is not yes or no", v);
        return -1;
    }
    return 0;
}

static int check_overflow(const char *v, char *why, size_t len)
{
    if (strcmp(v, "drop") && strcmp(v, "disconnect")) {
        snprintf(why, len, "'%s' is not drop or disconnect", v);
        return -1;
    }
    return 0;
}

int rds_config_addrs(const char *list, struct rds_addr *out, int max, char *why, size_t len)
{
    int n = 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *end = p + strcspn(p, ", ");
        size_t k = (size_t)(end - p);
        const char *colon = NULL;
        for (const char *q = p; q < end; q++)
            if (*q == ':')
                colon = q;
        if (!colon || colon == p || colon + 1 == end) {
            snprintf(why, len, "'%.*s' is not host:port", (int)k, p);
            return -1;
        }
        const char *h = p, *he = colon;
        if (*h == '[' && he[-1] == ']') {
            h++;
            he--;
        }
        long port = 0;
        for (const char *q = colon + 1; q < end; q++) {
            if (*q < '0' || *q > '9' || port > 65535) {
                port = -1;
                break;
            }
            port = port * 10 + (*q - '0');
        }
        if (port <= 0 || port > 65535) {
            snprintf(why, len, "'%.*s' has no valid port", (int)k, p);
            return -1;
        }
        if (n == max) {
            snprintf(why, len, "more than %d addresses", max);
            return -1;
        }
        if ((size_t)(he - h) >= sizeof(out[n].host) || he == h) {
            snprintf(why, len, "'%.*s' has no valid host", (int)k, p);
            return -1;
        }
        snprintf(out[n].host, sizeof(out[n].host), "%.*s", (int)(he - h), h);
        out[n].port = (int)port;
        n++;
        p = end;
    }
    return n;
}

static int check_addrs(const char *v, char *why, size_t len)
{
    struct rds_addr a[RDS_MAX_ADDRS];
    return rds_config_addrs(v, a, RDS_MAX_ADDRS, why, len) < 0 ? -1 : 0;
}

static const struct cfg_key keys[] = {
    {"redis_url", CFG_STR, OFF(url), "redis://127.0.0.1:6379/0", 0, 0, false,
     "redis://[user:password@]host:port[/db], rediss://... (the same over TLS: redis_tls_*) or unix:///path/redis.sock[?db=N].", check_url},
    {"redis_pool", CFG_INT, OFF(pool), "1", 1, 64, false,
     "Connections to Redis; each carries many pipelined requests.", NULL},
    {"redis_connect_timeout_ms", CFG_INT, OFF(connect_timeout_ms), "2000", 10, 600000, true,
     "How long connecting (and the AUTH/SELECT/PING handshake) may take.", NULL},
    {"redis_backoff_min_ms", CFG_INT, OFF(backoff_min_ms), "100", 1, 600000, true,
     "First delay before reconnecting; it doubles on each failure, with jitter.", NULL},
    {"redis_backoff_max_ms", CFG_INT, OFF(backoff_max_ms), "5000", 1, 3600000, true,
     "Longest delay between reconnect attempts.", NULL},
    {"redis_max_pending", CFG_INT, OFF(max_pending), "65536", 16, 10000000, true,
     "Commands awaiting replies on one Redis connection; past this requests get 'overloaded'.", NULL},
    {"redis_deny", CFG_STR, OFF(deny), DEFAULT_DENY, 0, 0, true,
     "Comma-separated commands the 'redis' op refuses with 'denied'. 'CMD SUB' denies a subcommand; '*' is any argument; '[OPT] END' an option before END (see docs/protocol.md).", check_deny},
    {"redis_query_text", CFG_STR, OFF(query_text), "sanitized", 0, 0, true,
     "db.query.text on Redis spans: sanitized (arguments as ?), full, or off.", check_query_text},
    {"redis_tls_ca_file", CFG_STR, OFF(tls_ca_file), "", 0, 0, true,
     "rediss://: PEM file of the CAs that may sign Redis's certificate; with redis_tls_ca_dir empty too, the system's store.", rds_tls_check_ca_file},
    {"redis_tls_ca_dir", CFG_STR, OFF(tls_ca_dir), "", 0, 0, true,
     "rediss://: a directory of CA certificates (c_rehash layout), instead of or besides redis_tls_ca_file.", rds_tls_check_ca_dir},
    {"redis_tls_cert", CFG_STR, OFF(tls_cert), "", 0, 0, true,
     "rediss://: ferryd's client certificate chain (PEM), for Redis's tls-auth-clients; needs redis_tls_key.", rds_tls_check_cert},
    {"redis_tls_key", CFG_STR, OFF(tls_key), "", 0, 0, true,
     "rediss://: the private key (PEM, unencrypted) of redis_tls_cert.", rds_tls_check_key},
    {"redis_tls_server_name", CFG_STR, OFF(tls_server_name), "", 0, 0, true,
     "rediss://: the name sent as SNI and checked against the certificate; empty: the URL's host.", NULL},
    {"redis_tls_min_version", CFG_STR, OFF(tls_min_version), "TLS1.2", 0, 0, true,
     "rediss://: the oldest TLS version accepted: TLS1.2 or TLS1.3.", rds_tls_check_min_version},
    {"redis_tls_ciphers", CFG_STR, OFF(tls_ciphers), "", 0, 0, true,
     "rediss://: OpenSSL cipher list for TLS 1.2 (TLS 1.3 keeps its suites); empty: OpenSSL's default.", rds_tls_check_ciphers},
    {"redis_tls_verify", CFG_STR, OFF(tls_verify), "yes", 0, 0, true,
     "rediss://: check Redis's certificate and name (yes), or not (no: a warning at every connect).", check_yes_no},
    {"redis_blocking_pool", CFG_INT, OFF(blocking_pool), "16", 1, 1024, false,
     "Dedicated connections for blocking commands (redis.blocking), stream consumers and WATCH transactions; past them requests get 'overloaded'.", NULL},
    {"redis_pubsub_buffer", CFG_INT, OFF(pubsub_buffer), "4194304", 4096, 1073741824, true,
     "Bytes of pub/sub messages one client may leave unread; past it, see redis_pubsub_overflow.", NULL},
    {"redis_pubsub_overflow", CFG_STR, OFF(pubsub_overflow), "drop", 0, 0, true,
     "A subscriber past redis_pubsub_buffer: drop its messages (counted, and told with a 'dropped' push) or disconnect it.", check_overflow},
    {"redis_stream_claim_idle_ms", CFG_INT, OFF(stream_claim_idle_ms), "30000", 100, 86400000, true,
     "stream.consume: entries pending this long in any consumer are claimed (XAUTOCLAIM) and delivered again.", NULL},
    {"redis_stream_max_deliveries", CFG_INT, OFF(stream_max_deliveries), "5", 1, 1000000, true,
     "stream.consume: an entry delivered this many times goes to the dead-letter stream instead.", NULL},
    {"redis_single_flight", CFG_STR, OFF(single_flight), "no", 0, 0, true,
     "Identical GETs in flight at once share one round trip to Redis (yes or no).", check_yes_no},
    {"redis_cluster", CFG_STR, OFF(cluster), "", 0, 0, false,
     "Redis Cluster seed nodes, host:port,host:port...; when set, redis_url's host is not used (its password and TLS are). See docs/scale-out.md.", check_addrs},
    {"redis_replica_reads", CFG_STR, OFF(replica_reads), "no", 0, 0, true,
     "Redis Cluster: send read-only commands to replicas (READONLY) as well as primaries (yes or no).", check_yes_no},
    {"redis_sentinel", CFG_STR, OFF(sentinel), "", 0, 0, false,
     "Redis Sentinel addresses, host:port,...; with redis_sentinel_master, the primary is asked from them. See docs/scale-out.md.", check_addrs},
    {"redis_sentinel_master", CFG_STR, OFF(sentinel_master), "", 0, 0, false,
     "The name of the primary the sentinels watch (with redis_sentinel).", NULL},
    {"redis_sentinel_password", CFG_STR, OFF(sentinel_password), "", 0, 0, false,
     "The sentinels' own password, if they require one.", NULL},
};

static int validate(const void *values, char *err, size_t errlen)
{
    const struct rds_config *c = values;
    if (c->backoff_max_ms < c->backoff_min_ms) {
        snprintf(err, errlen, "key 'redis_backoff_max_ms': %ld is below redis_backoff_min_ms (%ld)",
                 c->backoff_max_ms, c->backoff_min_ms);
        return -1;
    }
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        snprintf(err, errlen, "key '%s': mutual TLS needs both redis_tls_cert and redis_tls_key",
                 c->tls_cert[0] ? "redis_tls_key" : "redis_tls_cert");
        return -1;
    }
    if (c->sentinel[0] && !c->sentinel_master[0]) {
        snprintf(err, errlen, "key 'redis_sentinel_master': redis_sentinel needs the name of the primary");
        return -1;
    }
    if (c->sentinel[0] && c->cluster[0]) {
        snprintf(err, errlen, "key 'redis_sentinel': redis_sentinel and redis_cluster exclude each other");
        return -1;
    }
    if (c->cluster[0] || c->sentinel[0]) {
        const char *key = c->cluster[0] ? "redis_cluster" : "redis_sentinel";
        struct url_redis u;
        memset(&u, 0, sizeof(u));
        char why2[256];
        int bad = 0;
        if (url_parse_redis(c->url, &u, why2, sizeof(why2)) == 0) {
            if (u.is_unix)
                bad = snprintf(err, errlen, "key '%s': redis_url must be redis:// (its host is replaced), not a Unix socket", key);
            else if (u.tls)
                bad = snprintf(err, errlen, "key '%s': rediss:// is not supported with %s yet", key, key);
            else if (u.db && c->cluster[0])
                bad = snprintf(err, errlen, "key 'redis_cluster': Redis Cluster has only database 0, redis_url selects %d", u.db);
        }
        url_redis_free(&u);
        if (bad)
            return -1;
    }
    /* What needs the keys together (a key that matches its certificate),
     * checked by building the context the start would build. */
    struct url_redis a;
    memset(&a, 0, sizeof(a));
    char why[256];
    if (url_parse_redis(c->url, &a, why, sizeof(why)) == 0 && a.tls) {
        struct rds_tls_settings ts;
        struct rds_tls_ctx x;
        rds_config_tls(c, a.host, &ts);
        int rc = rds_tls_ctx_init(&x, &ts, err, errlen);
        if (rc == 0)
            rds_tls_ctx_free(&x);
        url_redis_free(&a);
        return rc;
    }
    url_redis_free(&a);
    return 0;
}

void rds_config_tls(const struct rds_config *c, const char *host, struct rds_tls_settings *s)
{
    s->ca_file = c->tls_ca_file;
    s->ca_dir = c->tls_ca_dir;
    s->cert = c->tls_cert;
    s->key = c->tls_key;
    s->server_name = c->tls_server_name;
    s->host = host;
    s->min_version = c->tls_min_version;
    s->ciphers = c->tls_ciphers;
    s->verify = strcmp(c->tls_verify, "no") != 0;
}

const struct cfg_section rds_config_section = {
    "redis", keys, sizeof(keys) / sizeof(keys[0]), sizeof(struct rds_config), validate,
};
