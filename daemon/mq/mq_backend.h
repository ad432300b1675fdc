/* mq_backend.h: the RabbitMQ backend (the AMQP ops), named "amqp" in
 * stats and health. */
#ifndef FERRY_MQ_BACKEND_H
#define FERRY_MQ_BACKEND_H

#include <stddef.h>

struct backend;
struct server;

/* Parses the AMQP settings in s->cfg and, when amqp_url names a broker,
 * registers the AMQP ops. Returns the backend, or NULL with a message
 * naming the key in err. */
struct backend *mq_backend_new(struct server *s, char *err, size_t errlen);

#endif
