/* otlp_pb.h: what the OTLP encoders share (otlp_trace_encode.c,
 * otlp_metrics.c): the resource's key-values, packing a protobuf-c message
 * into a cbuf, the scope and resource of every export, and gzip. Pure. */
#ifndef FERRY_OTLP_PB_H
#define FERRY_OTLP_PB_H

#include <stddef.h>
#include <stdint.h>

#include "cbuf.h"
#include "opentelemetry/proto/common/v1/common.pb-c.h"
#include "opentelemetry/proto/resource/v1/resource.pb-c.h"

/* One attribute of the resource or of a data point. */
struct otlp_kv {
    const char *key;
    const char *str;  /* a string value, or NULL for ival */
    int64_t ival;
};

struct otlp_resource {
    const struct otlp_kv *attrs;
    size_t n;
};

typedef Opentelemetry__Proto__Common__V1__KeyValue KeyValue;
typedef Opentelemetry__Proto__Common__V1__AnyValue AnyValue;

/* Key-value storage for one batch: each KeyValue needs its AnyValue. */
struct otlp_pb_arena {
    KeyValue *kv;
    AnyValue *av;
    KeyValue **ptrs;
    size_t used, cap;
};

void otlp_pb_arena_init(struct otlp_pb_arena *a, size_t cap);
void otlp_pb_arena_free(struct otlp_pb_arena *a);
/* n initialised key-values from a; it aborts past cap, which callers
 * size from the data. */
KeyValue **otlp_pb_take(struct otlp_pb_arena *a, size_t n);
void otlp_pb_set_str(KeyValue *kv, const char *key, char *v);
void otlp_pb_set_int(KeyValue *kv, const char *key, int64_t v);
void otlp_pb_set_kv(KeyValue *kv, const struct otlp_kv *src);

/* protobuf-c's pack_to_buffer appending into a cbuf; a sink that skips
 * some bytes (otlp_trace_encode.c's envelope) embeds it. */
struct cbuf_sink {
    ProtobufCBuffer base;
    struct cbuf *out;
};
void otlp_pb_sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data);

/* Appends m, packed, to out. */
void otlp_pb_pack(const ProtobufCMessage *m, struct cbuf *out);
/* The instrumentation scope (ferryd) and r as a Resource, their
 * key-values taken from a. */
void otlp_pb_scope_and_resource(Opentelemetry__Proto__Common__V1__InstrumentationScope *scope,
                                Opentelemetry__Proto__Resource__V1__Resource *res, struct otlp_pb_arena *a,
                                const struct otlp_resource *r);
/* Replaces b's bytes with their gzip form. Returns 0 or -1. */
int otlp_pb_gzip(struct cbuf *b) __attribute__((warn_unused_result));

#endif
