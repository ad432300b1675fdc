/* amqp_backend.h: the RabbitMQ backend (the AMQP ops). */
#ifndef FERRY_AMQP_BACKEND_H
#define FERRY_AMQP_BACKEND_H

#include <stddef.h>

struct backend;
struct server;

/* Parses the AMQP settings in s->cfg and registers the AMQP ops. With an
 * empty amqp_url the ops are registered but answer 'unavailable'. Returns
 * the backend, or NULL with a message naming the key in err. */
struct backend *amqp_backend_new(struct server *s, char *err, size_t errlen);

#endif
