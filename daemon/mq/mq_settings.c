/* mq_settings.c: the RabbitMQ backend's keys, checked with the URL parser
 * and the TLS calls the backend uses at start. */
#include <stdlib.h>
#include <string.h>

#include "cbuf.h"
#include "mq_settings.h"
#include "mq_tls.h"
#include "url.h"

#define OFF(f) offsetof(struct mq_settings, f)

static int check_url(const char *v, char *why, size_t len)
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

static const struct cfg_key keys[] = {
    {"amqp_url", CFG_STR, OFF(url), "", 0, 0, false,
     "RabbitMQ: amqp://user:password@host:port/vhost[?heartbeat=S&connection_name=N], or amqps://... (the same over TLS, port 5671 by default: amqp_tls_*); several, comma-separated, are tried in order. Empty disables the AMQP ops.", check_url},
    {"amqp_connect_timeout_ms", CFG_INT, OFF(connect_timeout_ms), "5000", 100, 600000, false,
     "How long connecting to the broker, and each broker RPC, may take.", NULL},
    {"amqp_backoff_min_ms", CFG_INT, OFF(backoff_min_ms), "100", 1, 600000, false,
     "First delay before reconnecting to the broker; it doubles on each failure, with jitter.", NULL},
    {"amqp_backoff_max_ms", CFG_INT, OFF(backoff_max_ms), "5000", 1, 3600000, false,
     "Longest delay between reconnect attempts to the broker.", NULL},
    {"amqp_max_pending", CFG_INT, OFF(max_pending), "65536", 16, 10000000, true,
     "AMQP requests queued for or awaiting the broker; past this requests get 'overloaded'.", NULL},
    {"amqp_prefetch", CFG_INT, OFF(prefetch), "100", 1, 65535, true,
     "Default prefetch (unacknowledged deliveries) of a consumer that names none.", NULL},
    {"amqp_tls_ca_file", CFG_STR, OFF(tls_ca_file), "", 0, 0, true,
     "amqps://: PEM file of the CAs that may sign the broker's certificate; empty: the system's store.", mq_tls_check_ca_file},
    {"amqp_tls_cert", CFG_STR, OFF(tls_cert), "", 0, 0, true,
     "amqps://: ferryd's client certificate chain (PEM), for a broker that asks for one (fail_if_no_peer_cert); needs amqp_tls_key.", mq_tls_check_cert},
    {"amqp_tls_key", CFG_STR, OFF(tls_key), "", 0, 0, true,
     "amqps://: the private key (PEM, unencrypted) of amqp_tls_cert.", mq_tls_check_key},
    {"amqp_tls_verify", CFG_STR, OFF(tls_verify), "yes", 0, 0, true,
     "amqps://: check the broker's certificate and name (yes), or not (no: a warning at every connect).", mq_tls_check_yes_no},
};

static int validate(const void *values, char *err, size_t errlen)
{
    const struct mq_settings *c = values;
    if (c->backoff_max_ms < c->backoff_min_ms) {
        snprintf(err, errlen, "key 'amqp_backoff_max_ms': %ld is below amqp_backoff_min_ms (%ld)",
                 c->backoff_max_ms, c->backoff_min_ms);
        return -1;
    }
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        snprintf(err, errlen, "key '%s': a client certificate needs both amqp_tls_cert and amqp_tls_key",
                 c->tls_cert[0] ? "amqp_tls_key" : "amqp_tls_cert");
        return -1;
    }
    char why[300];
    if (c->tls_cert[0] && mq_tls_check_pair(c->tls_cert, c->tls_key, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "key 'amqp_tls_key': %s", why);
        return -1;
    }
    return 0;
}

const struct cfg_section mq_settings_section = {
    "amqp", keys, sizeof(keys) / sizeof(keys[0]), sizeof(struct mq_settings), validate,
};
