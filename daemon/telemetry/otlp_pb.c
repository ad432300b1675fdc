/* otlp_pb.c: what the trace and metrics encoders share: packing a
 * protobuf-c message into a cbuf, key-values, the scope and resource
 * every export carries, and gzip (otlp_pb.h). Pure: no I/O. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "config.h"
#include "otlp_pb.h"

#define SCOPE_NAME "ferryd"

/* protobuf-c's pack_to_buffer appends into a cbuf: it sizes nested
 * messages as it goes, which saves the separate get_packed_size pass over
 * the whole batch. */
void otlp_pb_sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data)
{
    cbuf_put(((struct cbuf_sink *)b)->out, data, len);
}

void otlp_pb_pack(const ProtobufCMessage *m, struct cbuf *out)
{
    struct cbuf_sink sink = {.base = {.append = otlp_pb_sink_append}, .out = out};
    protobuf_c_message_pack_to_buffer(m, &sink.base);
}

void otlp_pb_arena_init(struct otlp_pb_arena *a, size_t cap)
{
    a->kv = xcalloc(cap, sizeof(*a->kv));
    a->av = xcalloc(cap, sizeof(*a->av));
    a->ptrs = xcalloc(cap, sizeof(*a->ptrs));
    a->used = 0;
    a->cap = cap;
}

void otlp_pb_arena_free(struct otlp_pb_arena *a)
{
    free(a->kv);
    free(a->av);
    free(a->ptrs);
}

KeyValue **otlp_pb_take(struct otlp_pb_arena *a, size_t n)
{
    if (a->used + n > a->cap)
        abort(); /* sized by the caller from the data */
    KeyValue **p = &a->ptrs[a->used];
    for (size_t i = 0; i < n; i++) {
        KeyValue *kv = &a->kv[a->used + i];
        AnyValue *av = &a->av[a->used + i];
        opentelemetry__proto__common__v1__key_value__init(kv);
        opentelemetry__proto__common__v1__any_value__init(av);
        kv->value = av;
        p[i] = kv;
    }
    a->used += n;
    return p;
}

void otlp_pb_set_str(KeyValue *kv, const char *key, char *v)
{
    kv->key = (char *)key;
    kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    kv->value->string_value = v;
}

void otlp_pb_set_int(KeyValue *kv, const char *key, int64_t v)
{
    kv->key = (char *)key;
    kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
    kv->value->int_value = v;
}

void otlp_pb_set_kv(KeyValue *kv, const struct otlp_kv *src)
{
    if (src->str)
        otlp_pb_set_str(kv, src->key, (char *)src->str);
    else
        otlp_pb_set_int(kv, src->key, src->ival);
}

static KeyValue **resource_attrs(struct otlp_pb_arena *a, const struct otlp_resource *r)
{
    KeyValue **kvs = otlp_pb_take(a, r->n);
    for (size_t i = 0; i < r->n; i++)
        otlp_pb_set_kv(kvs[i], &r->attrs[i]);
    return kvs;
}

/* The instrumentation scope (ferryd) and the resource every export carries. */
void otlp_pb_scope_and_resource(Opentelemetry__Proto__Common__V1__InstrumentationScope *scope,
                               Opentelemetry__Proto__Resource__V1__Resource *res, struct otlp_pb_arena *a,
                               const struct otlp_resource *r)
{
    opentelemetry__proto__common__v1__instrumentation_scope__init(scope);
    scope->name = (char *)SCOPE_NAME;
    scope->version = (char *)FERRY_VERSION;
    opentelemetry__proto__resource__v1__resource__init(res);
    res->n_attributes = r->n;
    res->attributes = resource_attrs(a, r);
}

int otlp_pb_gzip(struct cbuf *b)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    /* windowBits 15 + 16: a gzip wrapper, which Content-Encoding: gzip means. */
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    struct cbuf out;
    cbuf_init(&out);
    cbuf_reserve(&out, deflateBound(&z, b->len) + 32);
    z.next_in = b->data;
    z.avail_in = (uInt)b->len;
    z.next_out = out.data;
    z.avail_out = (uInt)out.cap;
    int rc = deflate(&z, Z_FINISH);
    out.len = out.cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        cbuf_free(&out);
        return -1;
    }
    cbuf_free(b);
    *b = out;
    return 0;
}
