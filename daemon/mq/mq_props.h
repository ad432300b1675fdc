/* mq_props.h: AMQP messages, properties and field tables as CBOR, for
 * what the broker delivers or returns, written with cbuf's encoders.
 * Pure (no I/O). The other way, CBOR to AMQP, is mq_args.c's. */
#ifndef FERRY_MQ_PROPS_H
#define FERRY_MQ_PROPS_H

#include <stddef.h>
#include <stdint.h>
#include <amqp.h>

#include "cbuf.h"

/* The text-valued basic properties: their names in ferry's protocol,
 * their flags, and where they sit in amqp_basic_properties_t. */
struct mq_props_text {
    const char *name;
    amqp_flags_t flag;
    size_t off;
};
extern const struct mq_props_text mq_props_texts[];
extern const size_t mq_props_ntexts;

/* Appends {"exchange", "routing_key", "body", "properties": {...}} plus
 * the entries of extra (already-encoded key/value pairs, nextra of them). */
void mq_props_message(struct cbuf *out, const amqp_bytes_t *exchange, const amqp_bytes_t *routing_key,
                      const amqp_message_t *m, size_t nextra, const uint8_t *extra, size_t extra_len);
void mq_props_properties(struct cbuf *out, const amqp_basic_properties_t *p);
/* A field table as a CBOR map: integers of every width, floats, decimals
 * (as floats), text (bytes when not UTF-8), bytes, booleans, arrays and
 * nested tables; anything else as null. */
void mq_props_table(struct cbuf *out, const amqp_table_t *t);

#endif
