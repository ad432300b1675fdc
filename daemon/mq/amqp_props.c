/* amqp_props.c: see amqp_props.h. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "amqp_props.h"
#include "codec.h"

#define MAX_TABLE_DEPTH 16

static bool is_ctrl(const cbor_item_t *it)
{
    return cbor_isa_float_ctrl(it) && cbor_float_get_width(it) == CBOR_FLOAT_0;
}

bool item_is_bool(const cbor_item_t *it) { return is_ctrl(it) && cbor_is_bool(it); }
bool item_is_null(const cbor_item_t *it) { return is_ctrl(it) && (cbor_is_null(it) || cbor_is_undef(it)); }
bool item_is_float(const cbor_item_t *it) { return cbor_isa_float_ctrl(it) && !is_ctrl(it); }

cbor_item_t *cbor_map_find(const cbor_item_t *map, const char *key)
{
    if (!map || !cbor_isa_map(map))
        return NULL;
    size_t n = cbor_map_size(map), kl = strlen(key);
    struct cbor_pair *p = cbor_map_handle(map);
    for (size_t i = 0; i < n; i++)
        if (cbor_isa_string(p[i].key) && cbor_string_length(p[i].key) == kl &&
            memcmp(cbor_string_handle(p[i].key), key, kl) == 0)
            return p[i].value;
    return NULL;
}

bool amqp_bytes_from_cbor(const cbor_item_t *it, amqp_bytes_t *out, amqp_pool_t *pool)
{
    const unsigned char *src;
    size_t n;
    if (cbor_isa_string(it) && cbor_string_is_definite(it)) {
        src = cbor_string_handle(it);
        n = cbor_string_length(it);
    } else if (cbor_isa_bytestring(it) && cbor_bytestring_is_definite(it)) {
        src = cbor_bytestring_handle(it);
        n = cbor_bytestring_length(it);
    } else {
        return false;
    }
    amqp_pool_alloc_bytes(pool, n, out);
    if (n && !out->bytes)
        return false;
    if (n)
        memcpy(out->bytes, src, n);
    return true;
}

static bool cbor_int(const cbor_item_t *it, int64_t *v)
{
    if (cbor_isa_uint(it)) {
        uint64_t u = cbor_get_int(it);
        if (u > INT64_MAX)
            return false;
        *v = (int64_t)u;
        return true;
    }
    if (cbor_isa_negint(it)) {
        uint64_t u = cbor_get_int(it);
        if (u > INT64_MAX)
            return false;
        *v = -(int64_t)u - 1;
        return true;
    }
    return false;
}

static const char *value_from_cbor(const cbor_item_t *it, amqp_field_value_t *v, amqp_pool_t *pool,
                                   int depth);

static const char *table_from_cbor(const cbor_item_t *map, amqp_table_t *out, amqp_pool_t *pool, int depth)
{
    if (!cbor_isa_map(map) || !cbor_map_is_definite(map))
        return "a table must be a map";
    if (depth > MAX_TABLE_DEPTH)
        return "table nesting is too deep";
    size_t n = cbor_map_size(map);
    out->num_entries = (int)n;
    out->entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_table_entry_t)) : NULL;
    struct cbor_pair *p = cbor_map_handle(map);
    for (size_t i = 0; i < n; i++) {
        if (!cbor_isa_string(p[i].key))
            return "table keys must be text";
        if (cbor_string_length(p[i].key) > 128)
            return "table keys are at most 128 bytes";
        amqp_bytes_from_cbor(p[i].key, &out->entries[i].key, pool);
        const char *bad = value_from_cbor(p[i].value, &out->entries[i].value, pool, depth + 1);
        if (bad)
            return bad;
    }
    return NULL;
}

static const char *value_from_cbor(const cbor_item_t *it, amqp_field_value_t *v, amqp_pool_t *pool,
                                   int depth)
{
    int64_t i;
    if (depth > MAX_TABLE_DEPTH)
        return "table nesting is too deep";
    if (cbor_int(it, &i)) {
        v->kind = AMQP_FIELD_KIND_I64;
        v->value.i64 = i;
    } else if (cbor_isa_string(it)) {
        v->kind = AMQP_FIELD_KIND_UTF8;
        amqp_bytes_from_cbor(it, &v->value.bytes, pool);
    } else if (cbor_isa_bytestring(it)) {
        v->kind = AMQP_FIELD_KIND_BYTES;
        amqp_bytes_from_cbor(it, &v->value.bytes, pool);
    } else if (item_is_bool(it)) {
        v->kind = AMQP_FIELD_KIND_BOOLEAN;
        v->value.boolean = cbor_get_bool(it);
    } else if (item_is_null(it)) {
        v->kind = AMQP_FIELD_KIND_VOID;
    } else if (item_is_float(it)) {
        v->kind = AMQP_FIELD_KIND_F64;
        v->value.f64 = cbor_float_get_float(it);
    } else if (cbor_isa_array(it)) {
        size_t n = cbor_array_size(it);
        v->kind = AMQP_FIELD_KIND_ARRAY;
        v->value.array.num_entries = (int)n;
        v->value.array.entries = n ? amqp_pool_alloc(pool, n * sizeof(amqp_field_value_t)) : NULL;
        for (size_t k = 0; k < n; k++) {
            const char *bad = value_from_cbor(cbor_array_handle((cbor_item_t *)it)[k],
                                              &v->value.array.entries[k], pool, depth + 1);
            if (bad)
                return bad;
        }
    } else if (cbor_isa_map(it)) {
        v->kind = AMQP_FIELD_KIND_TABLE;
        return table_from_cbor(it, &v->value.table, pool, depth + 1);
    } else {
        return "unsupported value type in a table (tags, or integers beyond 64 bits)";
    }
    return NULL;
}

const char *amqp_table_from_cbor(const cbor_item_t *map, amqp_table_t *out, amqp_pool_t *pool)
{
    return table_from_cbor(map, out, pool, 0);
}

/* Text-valued basic properties: name, flag, field offset. */
static const struct {
    const char *name;
    amqp_flags_t flag;
    size_t off;
} text_props[] = {
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
#define NTEXT (sizeof(text_props) / sizeof(text_props[0]))

static bool key_eq(const cbor_item_t *k, const char *s)
{
    size_t n = strlen(s);
    return cbor_string_length(k) == n && memcmp(cbor_string_handle(k), s, n) == 0;
}

const char *mq_unknown_key(const cbor_item_t *key, const char *where, amqp_pool_t *pool)
{
    /* At most 64 bytes of the key, cut at a character boundary: the
     * message goes out as CBOR text, which must stay valid UTF-8. */
    size_t n = cbor_string_length(key);
    const unsigned char *p = cbor_string_handle(key);
    if (n > 64) {
        n = 64;
        while (n > 0 && (p[n] & 0xc0) == 0x80)
            n--;
    }
    char buf[160];
    int len = snprintf(buf, sizeof(buf), "unknown key '%.*s' in %s args", (int)n, (const char *)p, where);
    if (len < 0 || (size_t)len >= sizeof(buf))
        return "unknown key in args";
    char *out = amqp_pool_alloc(pool, (size_t)len + 1);
    if (!out)
        return "unknown key in args";
    memcpy(out, buf, (size_t)len + 1);
    return out;
}

const char *amqp_msg_from_cbor(const cbor_item_t *args, struct amqp_out_msg *m, amqp_pool_t *pool,
                               size_t max_body, const char *where)
{
    memset(m, 0, sizeof(*m));
    m->exchange = amqp_empty_bytes;
    m->routing_key = amqp_empty_bytes;
    m->body = amqp_empty_bytes;
    if (!args || !cbor_isa_map(args))
        return "publish args must be a map";
    struct cbor_pair *p = cbor_map_handle(args);
    bool has_body = false;
    for (size_t i = 0; i < cbor_map_size(args); i++) {
        const cbor_item_t *k = p[i].key, *v = p[i].value;
        if (!cbor_isa_string(k))
            return "publish args keys must be text";
        if (key_eq(k, "exchange")) {
            if (!cbor_isa_string(v) || !amqp_bytes_from_cbor(v, &m->exchange, pool))
                return "exchange must be text";
            if (m->exchange.len > 255)
                return "exchange names are at most 255 bytes";
        } else if (key_eq(k, "routing_key")) {
            if (!cbor_isa_string(v) || !amqp_bytes_from_cbor(v, &m->routing_key, pool))
                return "routing_key must be text";
            if (m->routing_key.len > 255)
                return "routing keys are at most 255 bytes";
        } else if (key_eq(k, "body")) {
            if (!amqp_bytes_from_cbor(v, &m->body, pool))
                return "body must be a byte string (or text)";
            if (m->body.len > max_body)
                return "body is larger than the broker's limit";
            has_body = true;
        } else if (key_eq(k, "mandatory")) {
            if (!item_is_bool(v))
                return "mandatory must be a boolean";
            m->mandatory = cbor_get_bool(v);
        } else if (key_eq(k, "persistent")) {
            if (!item_is_bool(v))
                return "persistent must be a boolean";
            m->props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
            m->props.delivery_mode = cbor_get_bool(v) ? 2 : 1;
        } else if (key_eq(k, "delivery_mode")) {
            int64_t dm;
            if (!cbor_int(v, &dm) || (dm != 1 && dm != 2))
                return "delivery_mode must be 1 (transient) or 2 (persistent)";
            m->props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
            m->props.delivery_mode = (uint8_t)dm;
        } else if (key_eq(k, "priority")) {
            int64_t pr;
            if (!cbor_int(v, &pr) || pr < 0 || pr > 255)
                return "priority must be an integer 0..255";
            m->props._flags |= AMQP_BASIC_PRIORITY_FLAG;
            m->props.priority = (uint8_t)pr;
        } else if (key_eq(k, "timestamp")) {
            int64_t ts;
            if (!cbor_int(v, &ts) || ts < 0)
                return "timestamp must be a non-negative integer (seconds since the epoch)";
            m->props._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
            m->props.timestamp = (uint64_t)ts;
        } else if (key_eq(k, "headers")) {
            const char *bad = amqp_table_from_cbor(v, &m->props.headers, pool);
            if (bad)
                return bad;
            m->props._flags |= AMQP_BASIC_HEADERS_FLAG;
        } else {
            size_t t;
            for (t = 0; t < NTEXT; t++)
                if (key_eq(k, text_props[t].name))
                    break;
            if (t == NTEXT)
                return mq_unknown_key(k, where, pool);
            amqp_bytes_t *field = (amqp_bytes_t *)((char *)&m->props + text_props[t].off);
            int64_t ms;
            /* expiration is a string of milliseconds in AMQP; accept a number too. */
            if (text_props[t].flag == AMQP_BASIC_EXPIRATION_FLAG && cbor_int(v, &ms)) {
                if (ms < 0)
                    return "expiration must not be negative";
                char buf[24];
                int n = snprintf(buf, sizeof(buf), "%lld", (long long)ms);
                amqp_pool_alloc_bytes(pool, (size_t)n, field);
                memcpy(field->bytes, buf, (size_t)n);
            } else if (!cbor_isa_string(v) || !amqp_bytes_from_cbor(v, field, pool)) {
                return "message properties must be text (see docs/protocol.md)";
            }
            if (field->len > 255)
                return "message properties are at most 255 bytes";
            m->props._flags |= text_props[t].flag;
        }
    }
    if (!has_body)
        return "publish needs a body";
    return NULL;
}

/* ---- to CBOR ---- */

static void put_bytes_as_text(struct cbuf *out, amqp_bytes_t b)
{
    /* AMQP short strings are bytes; send text when they are UTF-8, which
     * they nearly always are, and bytes when not. */
    if (utf8_valid(b.bytes, b.len))
        cbuf_text(out, b.bytes, b.len);
    else
        cbuf_bytes(out, b.bytes, b.len);
}

static void value_to_cbor(struct cbuf *out, const amqp_field_value_t *v)
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
            value_to_cbor(out, &v->value.array.entries[i]);
        break;
    case AMQP_FIELD_KIND_TABLE: amqp_table_to_cbor(out, &v->value.table); break;
    default: cbuf_null(out); break;
    }
}

void amqp_table_to_cbor(struct cbuf *out, const amqp_table_t *t)
{
    cbuf_map(out, (size_t)t->num_entries);
    for (int i = 0; i < t->num_entries; i++) {
        put_bytes_as_text(out, t->entries[i].key);
        value_to_cbor(out, &t->entries[i].value);
    }
}

void amqp_props_to_cbor(struct cbuf *out, const amqp_basic_properties_t *p)
{
    size_t n = 0;
    for (size_t t = 0; t < NTEXT; t++)
        n += (p->_flags & text_props[t].flag) != 0;
    n += (p->_flags & AMQP_BASIC_HEADERS_FLAG) != 0;
    n += (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) != 0;
    n += (p->_flags & AMQP_BASIC_PRIORITY_FLAG) != 0;
    n += (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) != 0;
    cbuf_map(out, n);
    for (size_t t = 0; t < NTEXT; t++)
        if (p->_flags & text_props[t].flag) {
            cbuf_str(out, text_props[t].name);
            put_bytes_as_text(out, *(const amqp_bytes_t *)((const char *)p + text_props[t].off));
        }
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
        cbuf_str(out, "headers");
        amqp_table_to_cbor(out, &p->headers);
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

void amqp_message_to_cbor(struct cbuf *out, const amqp_bytes_t *exchange, const amqp_bytes_t *routing_key,
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
    amqp_props_to_cbor(out, &m->properties);
    cbuf_put(out, extra, extra_len);
}
