/* config.c: the settings table, and loading it from file, environment and
 * flags. Pure apart from reading the file and the user database (for
 * socket_owner): unit tests drive it directly. */
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "cbuf.h"
#include "config.h"
#include "log.h"
#include "redis_deny.h"
#include "histogram.h"
#include "url.h"

#define OFF(f) offsetof(struct config, f)

/* The default deny-list: commands that would harm every client of a shared
 * connection (FLUSHALL, CONFIG, SHUTDOWN, MIGRATE ...), that change the
 * connection's own state under other clients' feet (SELECT, AUTH, MULTI,
 * CLIENT REPLY), or that block or subscribe, which later ops serve on
 * dedicated connections. It guards against mistakes, not attackers:
 * scripts can run any command (docs/protocol.md says how Redis's ACLs
 * make a policy that holds). The rule syntax is in redis_deny.h. */
#define DEFAULT_DENY                                                                 \
    "FLUSHALL, FLUSHDB, CONFIG, SHUTDOWN, DEBUG, MONITOR, SLAVEOF, REPLICAOF, "      \
    "CLIENT KILL, CLIENT PAUSE, CLIENT REPLY, SYNC, PSYNC, REPLCONF, SAVE, SWAPDB, " \
    "FAILOVER, MODULE, ACL, SCRIPT FLUSH, FUNCTION FLUSH, MIGRATE, "                 \
    "SELECT, AUTH, HELLO, RESET, QUIT, MULTI, EXEC, DISCARD, WATCH, UNWATCH, "       \
    "SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE, "   \
    "BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, "         \
    "WAIT, WAITAOF, XREAD [BLOCK] STREAMS, XREADGROUP GROUP * * [BLOCK] STREAMS"

/* ---- checks of single values, run wherever a value is set ---- */

static int check_socket(const char *v, char *why, size_t len)
{
    if (v[0] == '\0') {
        snprintf(why, len, "must not be empty");
        return -1;
    }
    if (strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(why, len, "path longer than %zu bytes",
                 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return -1;
    }
    return 0;
}

int config_owner_resolve(const char *owner, uid_t *uid, gid_t *gid, char *why, size_t len)
{
    char buf[256];
    if (strlen(owner) >= sizeof(buf)) {
        snprintf(why, len, "'%.40s...' is too long", owner);
        return -1;
    }
    snprintf(buf, sizeof(buf), "%s", owner);
    char *grp = strchr(buf, ':');
    if (grp)
        *grp++ = '\0';
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (buf[0]) {
        struct passwd *pw = getpwnam(buf);
        if (!pw) {
            snprintf(why, len, "no user named '%s'", buf);
            return -1;
        }
        *uid = pw->pw_uid;
    }
    if (grp && grp[0]) {
        struct group *gr = getgrnam(grp);
        if (!gr) {
            snprintf(why, len, "no group named '%s'", grp);
            return -1;
        }
        *gid = gr->gr_gid;
    }
    return 0;
}

static int check_owner(const char *v, char *why, size_t len)
{
    uid_t u;
    gid_t g;
    return config_owner_resolve(v, &u, &g, why, len);
}

static int check_redis_url(const char *v, char *why, size_t len)
{
    struct redis_addr a;
    memset(&a, 0, sizeof(a));
    int rc = url_parse_redis(v, &a, why, len);
    redis_addr_free(&a);
    return rc;
}

static int check_amqp_url(const char *v, char *why, size_t len)
{
    int rc = 0;
    char *copy = xstrdup(v);
    for (char *save = NULL, *u = strtok_r(copy, ",", &save); u && rc == 0; u = strtok_r(NULL, ",", &save)) {
        while (*u == ' ')
            u++;
        if (!*u)
            continue;
        struct url_amqp a;
        memset(&a, 0, sizeof(a));
        rc = url_parse_amqp(u, &a, why, len);
        url_amqp_free(&a);
    }
    free(copy);
    return rc;
}

static int check_deny(const char *v, char *why, size_t len)
{
    struct redis_deny d;
    if (redis_deny_parse(v, &d, why, len) != 0)
        return -1;
    redis_deny_free(&d);
    return 0;
}

static int check_buckets(const char *v, char *why, size_t len)
{
    double b[HISTOGRAM_MAX_BOUNDS];
    size_t n;
    if (histogram_parse_bounds(v, b, HISTOGRAM_MAX_BOUNDS, &n) != 0) {
        snprintf(why, len, "'%s' must be up to %d increasing numbers of seconds", v, HISTOGRAM_MAX_BOUNDS);
        return -1;
    }
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

const struct cfg_key cfg_keys[] = {
    {"socket", CFG_STR, OFF(socket), FERRY_DEFAULT_SOCKET, 0, 0, false,
     "Path of the Unix socket that clients connect to.", check_socket},
    {"socket_mode", CFG_MODE, OFF(socket_mode), "0660", 0, 07777, false,
     "Permission bits of the socket file, in octal.", NULL},
    {"socket_owner", CFG_STR, OFF(socket_owner), "", 0, 0, false,
     "Owner of the socket file as user[:group]; empty keeps the daemon's own.", check_owner},
    {"max_clients", CFG_INT, OFF(max_clients), "1024", 1, 1000000, true,
     "Connected clients allowed at once; one more is told 'overloaded' and closed.", NULL},
    {"max_frame", CFG_INT, OFF(max_frame), "16777216", 64, 1073741824, false,
     "Largest frame body in bytes, in either direction; a larger request gets 'too_large' and the connection is closed.", NULL},
    {"max_items", CFG_INT, OFF(max_items), "262144", 16, 100000000, true,
     "Most CBOR data items in one request; more gets 'too_large'.", NULL},
    {"max_depth", CFG_INT, OFF(max_depth), "32", 2, 64, true,
     "Deepest CBOR nesting in a request (the request map is level 1); deeper gets 'bad_request'.", NULL},
    {"client_max_inflight", CFG_INT, OFF(client_max_inflight), "4096", 1, 10000000, true,
     "Requests in flight per client before ferryd stops reading from it (backpressure, not an error).", NULL},
    {"client_max_output", CFG_INT, OFF(client_max_output), "67108864", 4096, 2147483647, true,
     "Bytes of responses queued for a client that is not reading; past this it is disconnected.", NULL},
    {"max_buffered", CFG_INT, OFF(max_buffered), "268435456", 1048576, 1099511627776, true,
     "Bytes buffered for all clients together (requests received and not yet handled, responses not yet written); past this the client holding the most is cut off.", NULL},
    {"frame_timeout_ms", CFG_INT, OFF(frame_timeout_ms), "10000", 10, 3600000, true,
     "How long a client may take to send the rest of a frame it has started; past this it gets 'timeout' and is closed.", NULL},
    {"default_deadline_ms", CFG_INT, OFF(default_deadline_ms), "5000", 1, 3600000, true,
     "Deadline of a request that names none.", NULL},
    {"max_deadline_ms", CFG_INT, OFF(max_deadline_ms), "300000", 1, 86400000, true,
     "Longer deadlines asked for by clients are cut to this.", NULL},
    {"drain_timeout_ms", CFG_INT, OFF(drain_timeout_ms), "10000", 0, 3600000, true,
     "On SIGTERM or SIGINT, how long in-flight requests may finish before the rest get 'shutting_down'.", NULL},
    {"ready_timeout_ms", CFG_INT, OFF(ready_timeout_ms), "10000", 0, 3600000, false,
     "At start, how long to wait for every configured backend to connect before telling systemd READY=1 anyway (Type=notify); 0: at once.", NULL},
    {"log_level", CFG_LEVEL, OFF(log_level), "info", 0, 3, true,
     "One of error, warn, info, debug.", NULL},
    {"redis_url", CFG_STR, OFF(redis_url), "redis://127.0.0.1:6379/0", 0, 0, false,
     "redis://[user:password@]host:port[/db] or unix:///path/redis.sock[?db=N].", check_redis_url},
    {"redis_pool", CFG_INT, OFF(redis_pool), "1", 1, 64, false,
     "Connections to Redis; each carries many pipelined requests.", NULL},
    {"redis_connect_timeout_ms", CFG_INT, OFF(redis_connect_timeout_ms), "2000", 10, 600000, true,
     "How long connecting (and the AUTH/SELECT/PING handshake) may take.", NULL},
    {"redis_backoff_min_ms", CFG_INT, OFF(redis_backoff_min_ms), "100", 1, 600000, true,
     "First delay before reconnecting; it doubles on each failure, with jitter.", NULL},
    {"redis_backoff_max_ms", CFG_INT, OFF(redis_backoff_max_ms), "5000", 1, 3600000, true,
     "Longest delay between reconnect attempts.", NULL},
    {"redis_max_pending", CFG_INT, OFF(redis_max_pending), "65536", 16, 10000000, true,
     "Commands awaiting replies on one Redis connection; past this requests get 'overloaded'.", NULL},
    {"redis_deny", CFG_STR, OFF(redis_deny), DEFAULT_DENY, 0, 0, true,
     "Comma-separated commands the 'redis' op refuses with 'denied'. 'CMD SUB' denies a subcommand; '*' is any argument; '[OPT] END' an option before END (see docs/protocol.md).", check_deny},
    {"amqp_url", CFG_STR, OFF(amqp_url), "", 0, 0, false,
     "RabbitMQ: amqp://user:password@host:port/vhost[?heartbeat=S&connection_name=N]; several, comma-separated, are tried in order. Empty disables the AMQP ops.", check_amqp_url},
    {"amqp_connect_timeout_ms", CFG_INT, OFF(amqp_connect_timeout_ms), "5000", 100, 600000, false,
     "How long connecting to the broker, and each broker RPC, may take.", NULL},
    {"amqp_backoff_min_ms", CFG_INT, OFF(amqp_backoff_min_ms), "100", 1, 600000, false,
     "First delay before reconnecting to the broker; it doubles on each failure, with jitter.", NULL},
    {"amqp_backoff_max_ms", CFG_INT, OFF(amqp_backoff_max_ms), "5000", 1, 3600000, false,
     "Longest delay between reconnect attempts to the broker.", NULL},
    {"amqp_max_pending", CFG_INT, OFF(amqp_max_pending), "65536", 16, 10000000, true,
     "AMQP requests queued for or awaiting the broker; past this requests get 'overloaded'.", NULL},
    {"amqp_prefetch", CFG_INT, OFF(amqp_prefetch), "100", 1, 65535, true,
     "Default prefetch (unacknowledged deliveries) of a consumer that names none.", NULL},
    {"duration_buckets", CFG_STR, OFF(duration_buckets),
     "0.00005,0.0001,0.00025,0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10", 0, 0, false,
     "Bucket bounds in seconds of the duration histograms (ferry.request.duration, db.client.operation.duration).", check_buckets},
    {"redis_query_text", CFG_STR, OFF(redis_query_text), "sanitized", 0, 0, true,
     "db.query.text on Redis spans: sanitized (arguments as ?), full, or off.", check_query_text},
};
const size_t cfg_nkeys = sizeof(cfg_keys) / sizeof(cfg_keys[0]);

const struct cfg_key *config_find(const char *name)
{
    for (size_t i = 0; i < cfg_nkeys; i++)
        if (strcmp(cfg_keys[i].name, name) == 0)
            return &cfg_keys[i];
    return NULL;
}

static char **str_field(struct config *c, const struct cfg_key *k)
{
    return (char **)((char *)c + k->offset);
}

static long *int_field(struct config *c, const struct cfg_key *k)
{
    return (long *)((char *)c + k->offset);
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < cfg_nkeys; i++) {
        char err[256];
        if (config_set(c, cfg_keys[i].name, cfg_keys[i].def, "default", err, sizeof(err)) != 0)
            abort(); /* a bad default is a programming error */
    }
}

void config_free(struct config *c)
{
    for (size_t i = 0; i < cfg_nkeys; i++)
        if (cfg_keys[i].type == CFG_STR) {
            free(*str_field(c, &cfg_keys[i]));
            *str_field(c, &cfg_keys[i]) = NULL;
        }
}

void config_copy(struct config *dst, const struct config *src)
{
    *dst = *src;
    for (size_t i = 0; i < cfg_nkeys; i++)
        if (cfg_keys[i].type == CFG_STR)
            *str_field(dst, &cfg_keys[i]) = xstrdup(*str_field((struct config *)src, &cfg_keys[i]));
}

int config_set(struct config *c, const char *key, const char *value, const char *where, char *err,
               size_t errlen)
{
    const struct cfg_key *k = config_find(key);
    if (!k) {
        snprintf(err, errlen, "%s: unknown key '%s'", where, key);
        return -1;
    }
    switch (k->type) {
    case CFG_STR: {
        char why[384];
        if (k->check && k->check(value, why, sizeof(why)) != 0) {
            /* Some parsers name the key themselves. */
            if (strncmp(why, "key '", 5) == 0)
                snprintf(err, errlen, "%s: %s", where, why);
            else
                snprintf(err, errlen, "%s: key '%s': %s", where, key, why);
            return -1;
        }
        free(*str_field(c, k));
        *str_field(c, k) = xstrdup(value);
        return 0;
    }
    case CFG_INT:
    case CFG_MODE: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, k->type == CFG_MODE ? 8 : 10);
        if (errno || end == value || *end != '\0') {
            snprintf(err, errlen, "%s: key '%s': '%s' is not %s", where, key, value,
                     k->type == CFG_MODE ? "an octal mode" : "an integer");
            return -1;
        }
        if (v < k->min || v > k->max) {
            snprintf(err, errlen, "%s: key '%s': %ld is outside %ld..%ld", where, key, v, k->min,
                     k->max);
            return -1;
        }
        *int_field(c, k) = v;
        return 0;
    }
    case CFG_LEVEL: {
        int lv = log_level_parse(value);
        if (lv < 0) {
            snprintf(err, errlen, "%s: key '%s': '%s' is not one of error, warn, info, debug",
                     where, key, value);
            return -1;
        }
        *int_field(c, k) = lv;
        return 0;
    }
    }
    return -1;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* The file format: "key = value" lines, '#' comments, blank lines. A value
 * may be wrapped in double quotes to keep leading or trailing spaces. */
int config_load_file(struct config *c, const char *path, bool must_exist, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!must_exist && errno == ENOENT)
            return 0;
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[8192];
    int lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char where[512];
        snprintf(where, sizeof(where), "%s line %d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s: line too long", where);
            rc = -1;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s: expected 'key = value'", where);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s);
        char *value = trim(eq + 1);
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            value[vl - 1] = '\0';
            value++;
        }
        if (config_set(c, key, value, where, err, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

int config_load_env(struct config *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg_nkeys; i++) {
        char var[128] = "FERRY_";
        size_t n = strlen(var);
        for (const char *p = cfg_keys[i].name; *p && n < sizeof(var) - 1; p++)
            var[n++] = (char)toupper((unsigned char)*p);
        var[n] = '\0';
        const char *v = getenv(var);
        if (!v)
            continue;
        char where[160];
        snprintf(where, sizeof(where), "environment %s", var);
        if (config_set(c, cfg_keys[i].name, v, where, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int config_validate(const struct config *c, char *err, size_t errlen)
{
    if (c->redis_backoff_max_ms < c->redis_backoff_min_ms) {
        snprintf(err, errlen, "key 'redis_backoff_max_ms': %ld is below redis_backoff_min_ms (%ld)",
                 c->redis_backoff_max_ms, c->redis_backoff_min_ms);
        return -1;
    }
    if (c->amqp_backoff_max_ms < c->amqp_backoff_min_ms) {
        snprintf(err, errlen, "key 'amqp_backoff_max_ms': %ld is below amqp_backoff_min_ms (%ld)",
                 c->amqp_backoff_max_ms, c->amqp_backoff_min_ms);
        return -1;
    }
    if (c->default_deadline_ms > c->max_deadline_ms) {
        snprintf(err, errlen, "key 'default_deadline_ms': %ld is above max_deadline_ms (%ld)",
                 c->default_deadline_ms, c->max_deadline_ms);
        return -1;
    }
    if (c->client_max_output < c->max_frame + 4) {
        snprintf(err, errlen,
                 "key 'client_max_output': %ld must be at least max_frame + 4 (%ld), or one "
                 "response could disconnect its client",
                 c->client_max_output, c->max_frame + 4);
        return -1;
    }
    if (c->max_buffered < 2 * (c->max_frame + 4)) {
        snprintf(err, errlen,
                 "key 'max_buffered': %ld must be at least twice max_frame + 4 (%ld), or one large request "
                 "and its response could cut their own client off",
                 c->max_buffered, 2 * (c->max_frame + 4));
        return -1;
    }
    return 0;
}

void config_format(const struct config *c, const struct cfg_key *k, char *buf, size_t len)
{
    const char *base = (const char *)c + k->offset;
    switch (k->type) {
    case CFG_STR:
        snprintf(buf, len, "%s", *(char *const *)base);
        break;
    case CFG_INT:
        snprintf(buf, len, "%ld", *(const long *)base);
        break;
    case CFG_MODE:
        snprintf(buf, len, "%04lo", *(const long *)base);
        break;
    case CFG_LEVEL:
        snprintf(buf, len, "%s", log_level_name((enum log_level) * (const long *)base));
        break;
    }
}

void config_write_example(FILE *f)
{
    fputs("# ferryd configuration.\n"
          "#\n"
          "# Every key is shown with its default. Precedence: defaults < this file <\n"
          "# environment (FERRY_<KEY>, e.g. FERRY_REDIS_URL) < flags (--socket, --redis,\n"
          "# --log-level, --set key=value). Keys marked 'reloadable' take effect on SIGHUP;\n"
          "# the others need a restart.\n"
          "# This file is generated by `ferryd --print-config`; the tests check that it\n"
          "# matches the daemon's table.\n",
          f);
    for (size_t i = 0; i < cfg_nkeys; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        fprintf(f, "\n# %s%s\n", k->help, k->reloadable ? " (reloadable)" : "");
        if (k->type == CFG_STR && strchr(k->def, ','))
            fprintf(f, "%s = \"%s\"\n", k->name, k->def);
        else
            fprintf(f, "%s = %s\n", k->name, k->def);
    }
}
