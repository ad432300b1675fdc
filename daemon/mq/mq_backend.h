/* mq_backend.h: the RabbitMQ backend (the AMQP ops), named "amqp" in
 * stats and health. With an empty amqp_url its ops are not registered. */
#ifndef FERRY_MQ_BACKEND_H
#define FERRY_MQ_BACKEND_H

#include "backend.h"

/* The backend table's row (backends.c). */
extern const struct backend_kind mq_backend_kind;

#endif
