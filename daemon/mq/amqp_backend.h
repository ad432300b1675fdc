/* amqp_backend.h: the RabbitMQ backend (the AMQP ops). With an empty
 * amqp_url its ops are not registered at all. */
#ifndef FERRY_AMQP_BACKEND_H
#define FERRY_AMQP_BACKEND_H

#include "backend.h"

/* The backend table's row (backends.c). */
extern const struct backend_kind amqp_backend_kind;

#endif
