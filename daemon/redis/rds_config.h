/* rds_config.h: the Redis backend's keys of ferryd.conf (redis_*). */
#ifndef FERRY_RDS_CONFIG_H
#define FERRY_RDS_CONFIG_H

#include "config.h"

struct rds_config {
    char *url;                /* owns; may hold a password, never logged raw */
    long pool;
    long connect_timeout_ms;
    long backoff_min_ms;
    long backoff_max_ms;
    long max_pending;
    char *deny;               /* owns */
    char *query_text;         /* owns: sanitized, full or off */
    /* TLS (rediss:// only); each owns its string, "" when unset. */
    char *tls_ca_file;
    char *tls_ca_dir;
    char *tls_cert;
    char *tls_key;
    char *tls_server_name;
    char *tls_min_version;    /* TLS1.2 or TLS1.3 */
    char *tls_ciphers;
    char *tls_verify;         /* yes or no */
    /* The patterns (daemon/patterns/). */
    long blocking_pool;       /* dedicated connections for blocking commands, stream consumers, WATCH */
    long pubsub_buffer;       /* bytes of unread pushes one subscriber may hold */
    char *pubsub_overflow;    /* owns: drop or disconnect */
    long stream_claim_idle_ms;/* pending this long: claimed and delivered again */
    long stream_max_deliveries; /* delivered this often: dead-lettered */
    char *single_flight;      /* owns: yes or no */
    /* Past one server (scale-out); "" when unset. */
    char *cluster;            /* owns: seed nodes host:port,... */
    char *replica_reads;      /* owns: yes or no */
    char *sentinel;           /* owns: sentinels host:port,... */
    char *sentinel_master;    /* owns: the master's name */
    char *sentinel_password;  /* owns */
};

extern const struct cfg_section rds_config_section;

/* One host:port of redis_cluster or redis_sentinel. */
struct rds_addr {
    char host[256];
    int port;
};
#define RDS_MAX_ADDRS 32
/* Reads a list "host:port,host:port" ([v6]:port too) into out (at most
 * max). Returns how many, or -1 with why. */
int rds_config_addrs(const char *list, struct rds_addr *out, int max, char *why, size_t len);

struct rds_tls_settings;
/* Fills s (borrowing c's strings) for a TLS target whose URL names host. */
void rds_config_tls(const struct rds_config *c, const char *host, struct rds_tls_settings *s);

/* The Redis values of c. */
static inline const struct rds_config *rds_config_of(const struct config *c)
{
    return config_section(c, &rds_config_section);
}

#endif
