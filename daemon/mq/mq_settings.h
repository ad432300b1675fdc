/* mq_settings.h: the RabbitMQ backend's keys of ferryd.conf (amqp_*). */
#ifndef FERRY_MQ_SETTINGS_H
#define FERRY_MQ_SETTINGS_H

#include "config.h"

struct mq_settings {
    char *url;                /* owns; comma-separated, tried in order; "" disables */
    long connect_timeout_ms;
    long backoff_min_ms;
    long backoff_max_ms;
    long max_pending;
    long prefetch;
    char *tls_ca_file;        /* owns; amqps:// (mq_tls.h), "" for the system's store */
    char *tls_cert;           /* owns; "" for no client certificate */
    char *tls_key;            /* owns */
    char *tls_verify;         /* owns; "yes" or "no" */
};

extern const struct cfg_section mq_settings_section;

/* The AMQP values of c. */
static inline const struct mq_settings *mq_settings_of(const struct config *c)
{
    return config_section(c, &mq_settings_section);
}

#endif
