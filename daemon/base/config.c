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
#include "policy.h"
#include "text.h"
#include "histogram.h"

#define OFF(f) offsetof(struct config, f)

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

/* The file's syntax and names are checked where the key is set; its op
 * names are checked against the op table when the daemon loads it. */
static int check_policy_file(const char *v, char *why, size_t len)
{
    if (!v[0])
        return 0;
    struct policy_set set;
    if (policy_load(&set, v, NULL, NULL, why, len) != 0)
        return -1;
    policy_free(&set);
    return 0;
}

static int check_owner(const char *v, char *why, size_t len)
{
    uid_t u;
    gid_t g;
    return config_owner_resolve(v, &u, &g, why, len);
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

static const struct cfg_key core_keys[] = {
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
    {"policy_file", CFG_STR, OFF(policy_file), "", 0, 0, true,
     "Access policy by peer credentials (uid, gid): which ops, Redis commands and keys, and RabbitMQ names each may use (see docs/security.md). Empty: every peer that can open the socket may do everything.", check_policy_file},
    {"duration_buckets", CFG_STR, OFF(duration_buckets),
     "0.00005,0.0001,0.00025,0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10", 0, 0, false,
     "Bucket bounds in seconds of the duration histograms (ferry.request.duration, db.client.operation.duration).", check_buckets},
};

static int core_validate(const void *values, char *err, size_t errlen);

static const struct cfg_section core_section = {
    "ferryd", core_keys, sizeof(core_keys) / sizeof(core_keys[0]), sizeof(struct config), core_validate,
};

/* The registry: the daemon's own section, then the registered ones, each
 * with its offset in struct config (the core's is 0: its offsets are
 * struct config's own). Written once at start, read-only after. */
static const struct cfg_section *sections[CFG_MAX_SECTIONS] = {&core_section};
static size_t section_at[CFG_MAX_SECTIONS];
static size_t nsections = 1;

void config_register(const struct cfg_section *const *secs, size_t n)
{
    size_t used = 0;
    for (size_t i = 1; i < nsections; i++)
        used = section_at[i] - offsetof(struct config, sections) + sections[i]->size;
    for (size_t i = 0; i < n; i++) {
        used = (used + 15) & ~(size_t)15;
        if (nsections == CFG_MAX_SECTIONS || used + secs[i]->size > CFG_SECTIONS_BYTES)
            abort(); /* raise CFG_SECTIONS_BYTES or CFG_MAX_SECTIONS */
        section_at[nsections] = offsetof(struct config, sections) + used;
        sections[nsections++] = secs[i];
        used += secs[i]->size;
    }
}

const void *config_section(const struct config *c, const struct cfg_section *sec)
{
    for (size_t i = 0; i < nsections; i++)
        if (sections[i] == sec)
            return (const char *)c + section_at[i];
    abort(); /* a section that was never registered */
}

size_t config_nkeys(void)
{
    size_t n = 0;
    for (size_t i = 0; i < nsections; i++)
        n += sections[i]->nkeys;
    return n;
}

const struct cfg_key *config_key(size_t i)
{
    for (size_t j = 0; j < nsections; j++) {
        if (i < sections[j]->nkeys)
            return &sections[j]->keys[i];
        i -= sections[j]->nkeys;
    }
    return NULL;
}

const struct cfg_key *config_find(const char *name)
{
    for (size_t j = 0; j < nsections; j++)
        for (size_t i = 0; i < sections[j]->nkeys; i++)
            if (strcmp(sections[j]->keys[i].name, name) == 0)
                return &sections[j]->keys[i];
    return NULL;
}

/* Where key k's value lives in c. */
static void *field(const struct config *c, const struct cfg_key *k)
{
    for (size_t j = 0; j < nsections; j++)
        if (k >= sections[j]->keys && k < sections[j]->keys + sections[j]->nkeys)
            return (char *)c + section_at[j] + k->offset;
    abort();
}

static char **str_field(struct config *c, const struct cfg_key *k)
{
    return (char **)field(c, k);
}

static long *int_field(struct config *c, const struct cfg_key *k)
{
    return (long *)field(c, k);
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0, n = config_nkeys(); i < n; i++) {
        char err[256];
        const struct cfg_key *k = config_key(i);
        if (config_set(c, k->name, k->def, "default", err, sizeof(err)) != 0)
            abort(); /* a bad default is a programming error */
    }
}

void config_free(struct config *c)
{
    for (size_t i = 0, n = config_nkeys(); i < n; i++)
        if (config_key(i)->type == CFG_STR) {
            free(*str_field(c, config_key(i)));
            *str_field(c, config_key(i)) = NULL;
        }
}

void config_copy(struct config *dst, const struct config *src)
{
    *dst = *src;
    for (size_t i = 0, n = config_nkeys(); i < n; i++)
        if (config_key(i)->type == CFG_STR)
            *str_field(dst, config_key(i)) = xstrdup(*str_field((struct config *)src, config_key(i)));
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
        char *s = text_trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s: expected 'key = value'", where);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = text_trim(s);
        char *value = text_trim(eq + 1);
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
    for (size_t i = 0, nk = config_nkeys(); i < nk; i++) {
        const struct cfg_key *k = config_key(i);
        char var[128] = "FERRY_";
        size_t n = strlen(var);
        for (const char *p = k->name; *p && n < sizeof(var) - 1; p++)
            var[n++] = (char)toupper((unsigned char)*p);
        var[n] = '\0';
        const char *v = getenv(var);
        if (!v)
            continue;
        char where[160];
        snprintf(where, sizeof(where), "environment %s", var);
        if (config_set(c, k->name, v, where, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int config_validate(const struct config *c, char *err, size_t errlen)
{
    for (size_t j = 0; j < nsections; j++)
        if (sections[j]->validate &&
            sections[j]->validate((const char *)c + section_at[j], err, errlen) != 0)
            return -1;
    return 0;
}

static int core_validate(const void *values, char *err, size_t errlen)
{
    const struct config *c = values;
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
    const char *base = field(c, k);
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
    for (size_t j = 0; j < nsections; j++) {
        if (j > 0)
            fprintf(f, "\n# ---- %s ----\n", sections[j]->name);
        for (size_t i = 0; i < sections[j]->nkeys; i++) {
            const struct cfg_key *k = &sections[j]->keys[i];
            fprintf(f, "\n# %s%s\n", k->help, k->reloadable ? " (reloadable)" : "");
            if (k->type == CFG_STR && strchr(k->def, ','))
                fprintf(f, "%s = \"%s\"\n", k->name, k->def);
            else
                fprintf(f, "%s = %s\n", k->name, k->def);
        }
    }
}
