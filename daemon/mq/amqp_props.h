/* amqp_props.h: AMQP messages, properties and tables to and from CBOR.
 * Pure (no I/O), so the loop can validate a request's arguments before the
 * broker sees them, and unit tests can drive it. */
#ifndef FERRY_AMQP_PROPS_H
#define FERRY_AMQP_PROPS_H

#include <stdbool.h>
#include <amqp.h>
#include <cbor.h>

#include "cbuf.h"

/* One message to publish. Every byte it points to lives in a pool. */
struct amqp_out_msg {
    amqp_bytes_t exchange;
    amqp_bytes_t routing_key;
    amqp_bytes_t body;
    amqp_basic_properties_t props;
    bool mandatory;
};

/* libcbor 0.8's cbor_is_bool() and cbor_is_null() assert (abort) when
 * given a float, so a client could crash the daemon with 1.5 where a flag
 * belongs. These check the width first. */
bool item_is_bool(const cbor_item_t *it);
bool item_is_null(const cbor_item_t *it);
bool item_is_float(const cbor_item_t *it);

/* The CBOR text or byte string it, copied into pool. NULL when it is
 * neither. */
bool amqp_bytes_from_cbor(const cbor_item_t *it, amqp_bytes_t *out, amqp_pool_t *pool);
/* Looks up key in a CBOR map; NULL when absent. */
cbor_item_t *cbor_map_find(const cbor_item_t *map, const char *key);

/* A CBOR map to an AMQP field table: text -> S, bytes -> x, integers -> l,
 * booleans -> t, floats -> d, null -> V, arrays -> A, maps -> F (nested).
 * Returns NULL, or what is wrong. */
const char *amqp_table_from_cbor(const cbor_item_t *map, amqp_table_t *out, amqp_pool_t *pool);

/* "unknown key 'KEY' in WHERE args", in pool: every op with a map of args
 * refuses keys it does not know, naming the key, so a typo ("durabel") is
 * an error instead of a silently ignored flag. key must be a text item. */
const char *mq_unknown_key(const cbor_item_t *key, const char *where, amqp_pool_t *pool);

/* Fills msg from publish arguments: exchange, routing_key, body, mandatory,
 * persistent and the basic properties (content_type, content_encoding,
 * headers, delivery_mode, priority, correlation_id, reply_to, expiration,
 * message_id, timestamp, type, app_id, user_id). Unknown keys are errors
 * naming the key and where (the op) it was (mq_unknown_key), to catch
 * typos. Returns NULL, or what is wrong. */
const char *amqp_msg_from_cbor(const cbor_item_t *args, struct amqp_out_msg *msg, amqp_pool_t *pool,
                               size_t max_body, const char *where);

/* Appends CBOR for a message the broker delivered or returned:
 * {"exchange", "routing_key", "body", "properties": {...}} plus the
 * entries of extra (already-encoded key/value pairs, nextra of them). */
void amqp_message_to_cbor(struct cbuf *out, const amqp_bytes_t *exchange, const amqp_bytes_t *routing_key,
                          const amqp_message_t *m, size_t nextra, const uint8_t *extra, size_t extra_len);
void amqp_props_to_cbor(struct cbuf *out, const amqp_basic_properties_t *p);
void amqp_table_to_cbor(struct cbuf *out, const amqp_table_t *t);

#endif
