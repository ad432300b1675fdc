/* mq_props.c: AMQP to CBOR; see mq_props.h. */
#include <math.h>
#include <stddef.h>

#include "codec.h"
#include "mq_props.h"

const struct mq_props_text mq_props_texts[] = {
    {"content_type", AMQP_BASIC_CONTENT_TYPE_FLAG, offsetof(amqp_basic_properties_t, content_type)},
    {"content_encoding", AMQP_BASIC_CONTENT_ENCODING_FLAG, offsetof(amqp_basic_properties_t, content_encoding)},
    {"correlation_id", AMQP_BASIC_CORRELATION_ID_FLAG, offsetof(amqp_basic_properties_t, correlation_id)},
    {"reply_to", AMQP_BASIC_REPLY_TO_FLAG, offsetof(amqp_basic_properties_t, reply_to)},
    {"expiration", AMQP_BASIC_EXPIRATION_FLAG, offsetof(amqp_basic_properties_t, expiration)},
    {"message_id", AMQP_BASIC_MESSAGE_ID_FLAG, offsetof(amqp_basic_properties_t, message_id)},
    {"type", AMQP_BASIC_TYPE_FLAG, offsetof(amqp_basic_properties_t, type)},
    {"user_id", AMQP_BASIC_USER_ID_FLAG, offsetof(amqp_basic_properties_t, user_id)},
    {"app_id", AMQP_BASIC_APP_ID_FLAG, offsetof(amqp_basic_properties_t, app_id)},
};
const size_t mq_props_ntexts = sizeof(mq_props_texts) / sizeof(mq_props_texts[0]);

static void put_bytes_as_text(struct cbuf *out, amqp_bytes_t b)
{
    /* AMQP short strings are bytes; send text when they are UTF-8, which
     * they nearly always are, and bytes when not. */
    if (utf8_valid(b.bytes, b.len))
        cbuf_text(out, b.bytes, b.len);
    else
        cbuf_bytes(out, b.bytes, b.len);
}

static void value(struct cbuf *out, const amqp_field_value_t *v)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN: cbuf_bool(out, v->value.boolean); break;
    case AMQP_FIELD_KIND_I8: cbuf_int(out, v->value.i8); break;
    case AMQP_FIELD_KIND_U8: cbuf_int(out, v->value.u8); break;
    case AMQP_FIELD_KIND_I16: cbuf_int(out, v->value.i16); break;
    case AMQP_FIELD_KIND_U16: cbuf_int(out, v->value.u16); break;
    case AMQP_FIELD_KIND_I32: cbuf_int(out, v->value.i32); break;
    case AMQP_FIELD_KIND_U32: cbuf_int(out, v->value.u32); break;
    case AMQP_FIELD_KIND_I64: cbuf_int(out, v->value.i64); break;
    case AMQP_FIELD_KIND_U64: cbuf_uint(out, v->value.u64); break;
    case AMQP_FIELD_KIND_TIMESTAMP: cbuf_uint(out, v->value.u64); break;
    case AMQP_FIELD_KIND_F32: cbuf_double(out, v->value.f32); break;
    case AMQP_FIELD_KIND_F64: cbuf_double(out, v->value.f64); break;
    case AMQP_FIELD_KIND_DECIMAL:
        cbuf_double(out, v->value.decimal.value / pow(10, v->value.decimal.decimals));
        break;
    case AMQP_FIELD_KIND_UTF8: put_bytes_as_text(out, v->value.bytes); break;
    case AMQP_FIELD_KIND_BYTES: cbuf_bytes(out, v->value.bytes.bytes, v->value.bytes.len); break;
    case AMQP_FIELD_KIND_ARRAY:
        cbuf_array(out, (size_t)v->value.array.num_entries);
        for (int i = 0; i < v->value.array.num_entries; i++)
            value(out, &v->value.array.entries[i]);
        break;
    case AMQP_FIELD_KIND_TABLE: mq_props_table(out, &v->value.table); break;
    default: cbuf_null(out); break;
    }
}

void mq_props_table(struct cbuf *out, const amqp_table_t *t)
{
    cbuf_map(out, (size_t)t->num_entries);
    for (int i = 0; i < t->num_entries; i++) {
        put_bytes_as_text(out, t->entries[i].key);
        value(out, &t->entries[i].value);
    }
}

void mq_props_properties(struct cbuf *out, const amqp_basic_properties_t *p)
{
    size_t n = 0;
    for (size_t t = 0; t < mq_props_ntexts; t++)
        n += (p->_flags & mq_props_texts[t].flag) != 0;
    n += (p->_flags & AMQP_BASIC_HEADERS_FLAG) != 0;
    n += (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) != 0;
    n += (p->_flags & AMQP_BASIC_PRIORITY_FLAG) != 0;
    n += (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) != 0;
    cbuf_map(out, n);
    for (size_t t = 0; t < mq_props_ntexts; t++)
        if (p->_flags & mq_props_texts[t].flag) {
            cbuf_str(out, mq_props_texts[t].name);
            put_bytes_as_text(out, *(const amqp_bytes_t *)((const char *)p + mq_props_texts[t].off));
        }
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
        cbuf_str(out, "headers");
        mq_props_table(out, &p->headers);
    }
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) {
        cbuf_str(out, "delivery_mode");
        cbuf_uint(out, p->delivery_mode);
    }
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG) {
        cbuf_str(out, "priority");
        cbuf_uint(out, p->priority);
    }
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
        cbuf_str(out, "timestamp");
        cbuf_uint(out, p->timestamp);
    }
}

void mq_props_message(struct cbuf *out, const amqp_bytes_t *exchange, const amqp_bytes_t *routing_key,
                      const amqp_message_t *m, size_t nextra, const uint8_t *extra, size_t extra_len)
{
    cbuf_map(out, 4 + nextra);
    cbuf_str(out, "exchange");
    put_bytes_as_text(out, *exchange);
    cbuf_str(out, "routing_key");
    put_bytes_as_text(out, *routing_key);
    cbuf_str(out, "body");
    cbuf_bytes(out, m->body.bytes, m->body.len);
    cbuf_str(out, "properties");
    mq_props_properties(out, &m->properties);
    cbuf_put(out, extra, extra_len);
}
