/* url.h: parsing backend URLs, and redacting them for logs. Pure. */
#ifndef FERRY_URL_H
#define FERRY_URL_H

#include <stdbool.h>
#include <stddef.h>

struct url_redis {
    bool is_unix;
    bool tls;            /* rediss://: TLS over TCP (redis/rds_tls.c) */
    char host[256];      /* TCP host, without IPv6 brackets */
    int port;
    char path[108];      /* Unix socket path (sun_path's size) */
    char *user;          /* owns; NULL when absent */
    char *password;      /* owns; NULL when absent; never logged */
    int db;
};

/* Accepts redis://[user:password@]host[:port][/db] (port 6379, db 0 by
 * default; user and password percent-decoded), rediss:// (the same, over
 * TLS) and
 * unix:///path/redis.sock[?db=N]. Returns 0, or -1 with a message in err. */
int url_parse_redis(const char *url, struct url_redis *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void url_redis_free(struct url_redis *a);

struct url_amqp {
    bool tls;            /* amqps://: TLS (mq/mq_tls.c), port 5671 by default */
    char host[256];
    int port;
    char *user;          /* owns */
    char *password;      /* owns; never logged */
    char *vhost;         /* owns */
    int heartbeat;       /* seconds; 0 turns heartbeats off */
    char *name;          /* owns: connection name shown by the broker */
    char redacted[512];  /* the URL with the password masked, for logs */
};

/* Accepts amqp://[user[:password]@]host[:port][/vhost][?heartbeat=N&connection_name=S]
 * and amqps:// (the same over TLS, port 5671 by default); rabbitmq-c's
 * amqp_parse_url does the URL proper (defaults guest, guest, localhost,
 * 5672, "/"; an empty vhost, as in "amqp://host/", also means "/").
 * Returns 0, or -1 with a message in err. */
int url_parse_amqp(const char *url, struct url_amqp *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void url_amqp_free(struct url_amqp *a);

/* Copies url with any password replaced by "***". */
void url_redact(const char *url, char *out, size_t len);

#endif
