/* url.c: see url.h. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>

#include "cbuf.h"
#include "url.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decodes n bytes of s into a new string, or returns NULL. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n) {
                free(out);
                return NULL;
            }
            int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

static int parse_db(const char *s, int *db)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *db = (int)v;
    return 0;
}

void url_redis_free(struct url_redis *a)
{
    free(a->user);
    free(a->password);
    a->user = a->password = NULL;
}

int url_parse_redis(const char *url, struct url_redis *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    a->port = 6379;
    if (strncmp(url, "unix://", 7) == 0) {
        const char *p = url + 7;
        const char *q = strchr(p, '?');
        size_t plen = q ? (size_t)(q - p) : strlen(p);
        if (plen == 0 || p[0] != '/') {
            snprintf(err, errlen, "unix URL needs an absolute path: unix:///path/redis.sock");
            return -1;
        }
        if (plen >= sizeof(a->path)) {
            snprintf(err, errlen, "unix socket path is longer than %zu bytes", sizeof(a->path) - 1);
            return -1;
        }
        memcpy(a->path, p, plen);
        a->is_unix = true;
        if (q) {
            if (strncmp(q + 1, "db=", 3) != 0 || parse_db(q + 4, &a->db) != 0) {
                snprintf(err, errlen, "unix URL query must be ?db=N with N in 0..65535");
                return -1;
            }
        }
        return 0;
    }
    if (strncmp(url, "rediss://", 9) == 0) {
        a->tls = true;
        url++; /* the rest parses as redis:// does */
    } else if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "URL must start with redis://, rediss:// or unix://");
        return -1;
    }
    const char *p = url + 8;
    const char *slash = strchr(p, '/');
    const char *hostend = slash ? slash : p + strlen(p);
    const char *at = memrchr(p, '@', (size_t)(hostend - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        if (uend > p && !(a->user = pct_decode(p, (size_t)(uend - p))))
            goto bad_escape;
        if (colon && !(a->password = pct_decode(colon + 1, (size_t)(at - colon - 1))))
            goto bad_escape;
        p = at + 1;
    }
    const char *portsep;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hostend - p));
        if (!rb) {
            snprintf(err, errlen, "unclosed '[' in IPv6 host");
            goto fail;
        }
        if ((size_t)(rb - p - 1) >= sizeof(a->host) || rb == p + 1) {
            snprintf(err, errlen, "bad IPv6 host");
            goto fail;
        }
        memcpy(a->host, p + 1, (size_t)(rb - p - 1));
        portsep = rb + 1 < hostend && rb[1] == ':' ? rb + 1 : NULL;
        if (!portsep && rb + 1 != hostend) {
            snprintf(err, errlen, "unexpected text after IPv6 host");
            goto fail;
        }
    } else {
        portsep = memchr(p, ':', (size_t)(hostend - p));
        const char *he = portsep ? portsep : hostend;
        if (he == p || (size_t)(he - p) >= sizeof(a->host)) {
            snprintf(err, errlen, "missing or overlong host");
            goto fail;
        }
        memcpy(a->host, p, (size_t)(he - p));
    }
    if (portsep) {
        char port[8] = {0};
        size_t n = (size_t)(hostend - portsep - 1);
        char *end;
        if (n == 0 || n >= sizeof(port))
            goto bad_port;
        memcpy(port, portsep + 1, n);
        long v = strtol(port, &end, 10);
        if (*end != '\0' || v < 1 || v > 65535)
            goto bad_port;
        a->port = (int)v;
    }
    if (slash && slash[1] != '\0' && parse_db(slash + 1, &a->db) != 0) {
        snprintf(err, errlen, "database must be a number in 0..65535");
        goto fail;
    }
    return 0;
bad_port:
    snprintf(err, errlen, "port must be a number in 1..65535");
    goto fail;
bad_escape:
    snprintf(err, errlen, "bad percent-escape in user or password");
fail:
    url_redis_free(a);
    return -1;
}

void url_redact(const char *url, char *out, size_t len)
{
    const char *scheme = strstr(url, "://");
    const char *p = scheme ? scheme + 3 : url;
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *at = memrchr(p, '@', (size_t)(end - p));
    const char *colon = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
    if (!colon) {
        snprintf(out, len, "%s", url);
        return;
    }
    snprintf(out, len, "%.*s***%s", (int)(colon + 1 - url), url, at);
}

void url_amqp_free(struct url_amqp *a)
{
    free(a->user);
    free(a->password);
    free(a->vhost);
    free(a->name);
    a->user = a->password = a->vhost = a->name = NULL;
}

/* The query string: heartbeat=N and connection_name=S, '&'-separated. */
static int parse_amqp_query(char *q, struct url_amqp *a, char *err, size_t errlen)
{
    for (char *kv = strtok(q, "&"); kv; kv = strtok(NULL, "&")) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            snprintf(err, errlen, "URL option '%.40s' needs a value", kv);
            return -1;
        }
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(kv, "heartbeat") == 0) {
            char *end;
            long h = strtol(v, &end, 10);
            if (*end || end == v || h < 0 || h > 65535) {
                snprintf(err, errlen, "heartbeat must be 0..65535 seconds");
                return -1;
            }
            a->heartbeat = (int)h;
        } else if (strcmp(kv, "connection_name") == 0) {
            free(a->name);
            a->name = pct_decode(v, strlen(v));
            if (!a->name) {
                snprintf(err, errlen, "bad percent-escape in connection_name");
                return -1;
            }
        } else {
            snprintf(err, errlen, "unknown URL option '%.40s' (heartbeat, connection_name)", kv);
            return -1;
        }
    }
    return 0;
}

int url_parse_amqp(const char *url, struct url_amqp *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    a->heartbeat = 10;
    url_redact(url, a->redacted, sizeof(a->redacted));
    if (strncmp(url, "amqp://", 7) != 0 && strncmp(url, "amqps://", 8) != 0) {
        snprintf(err, errlen, "URL must start with amqp:// or amqps://");
        return -1;
    }
    char *copy = xstrdup(url);
    char *q = strchr(copy, '?');
    if (q)
        *q++ = '\0';
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "not a valid amqp:// or amqps:// URL");
        free(copy);
        return -1;
    }
    if (strlen(ci.host) >= sizeof(a->host) || ci.port < 1 || ci.port > 65535) {
        snprintf(err, errlen, "bad host or port");
        free(copy);
        return -1;
    }
    snprintf(a->host, sizeof(a->host), "%s", ci.host);
    a->port = ci.port;
    a->tls = ci.ssl != 0; /* amqps://, whose default port amqp_parse_url makes 5671 */
    a->user = xstrdup(ci.user);
    a->password = xstrdup(ci.password);
    /* "amqp://host/" names the empty vhost by the letter of the AMQP URI
     * spec, which no one means: it is taken as the default "/", like
     * "amqp://host". Other vhosts are written as usual ("/%2f" is "/"). */
    a->vhost = xstrdup(ci.vhost[0] ? ci.vhost : "/");
    a->name = xstrdup("ferryd");
    int rc = q ? parse_amqp_query(q, a, err, errlen) : 0;
    free(copy);
    if (rc)
        url_amqp_free(a);
    return rc;
}
