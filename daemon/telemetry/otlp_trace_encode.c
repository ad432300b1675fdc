/* otlp_trace_encode.c: see otlp_trace_encode.h. A span is added to its
 * batch when it ends, mostly as its shape's template and the values that
 * differ, and written out as the body is read (see "span templates" and
 * "batches"). */
#define _GNU_SOURCE /* memmem */
#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/otlp_packed.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "config.h"
#include "otlp_trace_encode.h"
#include "trace_context.h"

/* ---- packed attributes, cached ---- */

#define CACHE_SLOTS 512
#define CACHE_VALUE 64
#define TPL_SLOTS 256
#define SHAPE_TPL_SLOTS 512
struct cache_entry {
    const char *key;     /* refers: attribute keys are static strings */
    uint8_t type;
    int64_t i;
    uint16_t vlen;
    char value[CACHE_VALUE];
    uint8_t *packed;     /* owns */
    size_t packed_len;
};

/* A template's slot, found by the shape's bytes (see shape_key). */
struct key_tpl {
    uint64_t hash;
    uint8_t *key;        /* owns */
    size_t key_len;
    struct span_tpl *t;  /* NULL until made, or when this shape cannot be a template */
    bool tried;          /* making the template was attempted (t says how it went) */
};

/* The template of spans that refer to a shape (span.h): found by the
 * shape's address, with no key to build. Shapes live as long as the
 * cache, so an address is never reused for another shape. */
struct shape_tpl {
    const struct span_shape *shape; /* refers */
    bool has_parent;
    struct span_tpl *t;             /* NULL: the shape cannot be a template */
};

struct otlp_span_cache {
    struct cache_entry e[CACHE_SLOTS];
    struct shape_tpl st[SHAPE_TPL_SLOTS];
    uint8_t **graveyard; /* packed buffers evicted while packing one span */
    size_t ngrave, cgrave;
    struct key_tpl t[TPL_SLOTS];
    struct cbuf packed;  /* a span packed whole, before framing; kept to reuse its memory */
    uint64_t batches;    /* batch ids given out */
    uint64_t templated, packed_whole; /* spans emitted each way, for tests */
};

struct otlp_span_cache *otlp_span_cache_new(void) { return xcalloc(1, sizeof(struct otlp_span_cache)); }

void otlp_span_cache_free(struct otlp_span_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        free(c->e[i].packed);
    for (size_t i = 0; i < TPL_SLOTS; i++) {
        free(c->t[i].key);
        otlp_body_tpl_release(c->t[i].t, true);
    }
    for (size_t i = 0; i < SHAPE_TPL_SLOTS; i++)
        otlp_body_tpl_release(c->st[i].t, true);
    free(c->graveyard);
    cbuf_free(&c->packed);
    free(c);
}

void otlp_span_cache_counts(const struct otlp_span_cache *c, uint64_t *templated, uint64_t *whole)
{
    *templated = c->templated;
    *whole = c->packed_whole;
}

/* Packs one attribute as a KeyValue into a new buffer. */
static uint8_t *pack_attr(const struct span *s, const struct span_attr *at, size_t *len)
{
    KeyValue kv;
    AnyValue av;
    opentelemetry__proto__common__v1__key_value__init(&kv);
    opentelemetry__proto__common__v1__any_value__init(&av);
    kv.key = (char *)at->key;
    kv.value = &av;
    char tmp[SPAN_ARENA + 1];
    if (at->type == SA_STR) {
        memcpy(tmp, s->d->arena + at->off, at->len);
        tmp[at->len] = '\0';
        av.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
        av.string_value = tmp;
    } else if (at->type == SA_BOOL) {
        av.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
        av.bool_value = at->i != 0;
    } else {
        av.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
        av.int_value = at->i;
    }
    *len = opentelemetry__proto__common__v1__key_value__get_packed_size(&kv);
    uint8_t *out = xmalloc(*len ? *len : 1);
    opentelemetry__proto__common__v1__key_value__pack(&kv, out);
    return out;
}

/* The packed bytes of an attribute, from the cache when the same key and
 * value were packed before. Long string values are packed each time into
 * *scratch (freed by the caller once the span is packed). */
static ProtobufCBinaryData attr_bytes(struct otlp_span_cache *c, const struct span *s, const struct span_attr *at,
                                      uint8_t **scratch)
{
    ProtobufCBinaryData b;
    const char *v = s->d->arena + at->off;
    if (at->type == SA_STR && at->len > CACHE_VALUE) {
        *scratch = pack_attr(s, at, &b.len);
        b.data = *scratch;
        return b;
    }
    uint64_t h = (uint64_t)(uintptr_t)at->key * 0x9e3779b97f4a7c15ull ^ at->type;
    if (at->type == SA_STR)
        for (uint16_t i = 0; i < at->len; i++)
            h = (h ^ (uint8_t)v[i]) * 1099511628211ull;
    else
        h ^= (uint64_t)at->i * 0xff51afd7ed558ccdull;
    struct cache_entry *e = &c->e[(h >> 17) % CACHE_SLOTS];
    bool hit = e->packed && e->key == at->key && e->type == at->type &&
               (at->type == SA_STR ? e->vlen == at->len && !memcmp(e->value, v, at->len) : e->i == at->i);
    if (!hit) {
        if (e->packed) {
            if (c->ngrave == c->cgrave) {
                c->cgrave = c->cgrave ? c->cgrave * 2 : 16;
                c->graveyard = xrealloc(c->graveyard, c->cgrave * sizeof(*c->graveyard));
            }
            c->graveyard[c->ngrave++] = e->packed;
        }
        e->key = at->key;
        e->type = at->type;
        e->i = at->i;
        e->vlen = at->type == SA_STR ? at->len : 0;
        if (at->type == SA_STR)
            memcpy(e->value, v, at->len);
        e->packed = pack_attr(s, at, &e->packed_len);
    }
    b.data = e->packed;
    b.len = e->packed_len;
    return b;
}

/* ---- one span, packed by protobuf-c ---- */

/* The fields that differ between spans of the same shape. */
struct span_vars {
    const uint8_t *trace_id, *span_id, *parent_id; /* 16, 8, 8 bytes; parent_id NULL for a root */
    uint64_t start, end;
    uint32_t flags;
};

static void vars_of(const struct span *s, struct span_vars *v)
{
    v->trace_id = s->ctx.trace_id;
    v->span_id = s->ctx.span_id;
    v->parent_id = s->has_parent ? s->parent_id : NULL;
    v->start = s->start_ns;
    v->end = s->end_ns;
    v->flags = s->ctx.flags;
}

/* Appends s, with v's ids and times, to out as a packed Span framed as one
 * element of ScopeSpans.spans. */
static void pack_span(struct otlp_span_cache *c, const struct span *s, const struct span_vars *v, struct cbuf *out)
{
    ProtobufCBinaryData ab[SPAN_MAX_ATTRS];
    uint8_t *scratch[SPAN_MAX_ATTRS] = {NULL};
    Ferry__Otlp__SpanPacked sp;
    Opentelemetry__Proto__Trace__V1__Status st;
    ferry__otlp__span_packed__init(&sp);
    sp.trace_id.data = (uint8_t *)v->trace_id;
    sp.trace_id.len = 16;
    sp.span_id.data = (uint8_t *)v->span_id;
    sp.span_id.len = 8;
    if (v->parent_id) {
        sp.parent_span_id.data = (uint8_t *)v->parent_id;
        sp.parent_span_id.len = 8;
    }
    sp.trace_state = s->trace_state_len ? (char *)s->d->trace_state : (char *)"";
    sp.name = (char *)s->name;
    sp.kind = (Opentelemetry__Proto__Trace__V1__Span__SpanKind)s->kind;
    sp.start_time_unix_nano = v->start;
    sp.end_time_unix_nano = v->end;
    sp.flags = v->flags;
    sp.n_attributes = s->nattrs;
    sp.attributes = ab;
    for (size_t k = 0; k < s->nattrs; k++)
        ab[k] = attr_bytes(c, s, &s->d->attrs[k], &scratch[k]);
    opentelemetry__proto__trace__v1__status__init(&st);
    st.code = s->error ? OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR
                       : OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_UNSET;
    st.message = s->error ? (char *)s->d->status_msg : (char *)"";
    sp.status = &st;
    /* protobuf-c would size the span once more before packing it; an
     * upper bound of its size lets otlp_pb_pack() run alone. The bound: every
     * field's tag (<= 2 bytes), length or varint (<= 10) and payload. */
    size_t bound = 160 + strlen(sp.name) + strlen(sp.trace_state) + strlen(st.message);
    for (size_t k = 0; k < sp.n_attributes; k++)
        bound += 12 + sp.attributes[k].len;
    struct cbuf *one = &c->packed;
    one->len = 0;
    cbuf_reserve(one, bound);
    size_t len = ferry__otlp__span_packed__pack(&sp, one->data);
    if (len > bound)
        abort(); /* the bound above is wrong: a bug to hear of at once */
    one->len = len;
    /* Framed as a ScopeSpans' spans field (tag and length, by protobuf-c):
     * a body's spans are these framed spans end to end (see "batches"). */
    Ferry__Otlp__ScopeSpansPacked frame;
    ferry__otlp__scope_spans_packed__init(&frame);
    ProtobufCBinaryData blob = {one->len, one->data};
    frame.n_spans = 1;
    frame.spans = &blob;
    otlp_pb_pack(&frame.base, out);
    for (size_t k = 0; k < s->nattrs; k++)
        free(scratch[k]);
    for (size_t i = 0; i < c->ngrave; i++)
        free(c->graveyard[i]);
    c->ngrave = 0;
}

/* ---- span templates ----
 *
 * Even from cached attributes, protobuf-c spends thousands of instructions
 * packing a span (it walks every field descriptor of every message;
 * docs/performance.md has the figures), and
 * spans of the same shape (a Redis GET against the same server, say)
 * differ only in their ids, times and flags, all fixed-width fields. So
 * each shape is packed by protobuf-c once, with sentinel values in those
 * fields, and each span is a copy of that template with its own values
 * written over the sentinels. A sentinel that is not found exactly once
 * (an attribute happens to contain its bytes) makes the shape ineligible,
 * and its spans are packed whole. */

static const uint8_t SENTINEL[AT_N][16] = {
    {0x9b, 0x51, 0xe7, 0x2c, 0x88, 0x0d, 0xf4, 0x63, 0xa1, 0x3e, 0xd6, 0x75, 0x1f, 0xc2, 0x4a, 0xb9},
    {0x6e, 0xc3, 0x17, 0xf8, 0x52, 0xad, 0x39, 0xe4},
    {0xd2, 0x0f, 0x8c, 0x61, 0xb7, 0x4e, 0xf3, 0x95},
    {0x47, 0xe9, 0x13, 0xba, 0x5c, 0x86, 0x2d, 0x71},
    {0xc8, 0x34, 0xfb, 0x06, 0x9d, 0x62, 0xae, 0x58},
    {0xe5, 0x7b, 0x29, 0xd4},
};
static const uint8_t SENTINEL_LEN[AT_N] = {16, 8, 8, 8, 8, 4};

const uint8_t *otlp_template_sentinel(size_t *len)
{
    *len = SENTINEL_LEN[AT_TRACE];
    return SENTINEL[AT_TRACE];
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Everything a template depends on, as bytes: what the encoder reads from
 * a span apart from its span_vars. Attribute keys are static strings, so
 * the pointer stands for the key. */
#define SHAPE_KEY_MAX (5 + SPAN_NAME_MAX + 160 + SPAN_MAX_ATTRS * (8 + 1 + 8) + SPAN_ARENA)

static size_t shape_key(const struct span *s, uint8_t *k)
{
    size_t n = 0, nl = strnlen(s->name, SPAN_NAME_MAX - 1), ml = s->error ? strnlen(s->d->status_msg, 160) : 0;
    k[n++] = s->kind;
    k[n++] = (uint8_t)(s->has_parent | s->error << 1);
    k[n++] = s->nattrs;
    k[n++] = (uint8_t)nl;
    memcpy(k + n, s->name, nl);
    n += nl;
    k[n++] = (uint8_t)ml;
    memcpy(k + n, s->d->status_msg, ml);
    n += ml;
    for (size_t i = 0; i < s->nattrs; i++) {
        const struct span_attr *a = &s->d->attrs[i];
        memcpy(k + n, &a->key, sizeof(a->key));
        n += sizeof(a->key);
        k[n++] = a->type;
        if (a->type == SA_STR) {
            memcpy(k + n, &a->len, 2); /* the bytes themselves follow, from the arena */
            n += 2;
        } else {
            memcpy(k + n, &a->i, 8);
            n += 8;
        }
    }
    memcpy(k + n, s->d->arena, s->arena_used);
    return n + s->arena_used;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x243f6a8885a308d3ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    return h ^ h >> 32;
}

/* Finds where protobuf-c put each sentinel; false unless each is there
 * exactly once. */
static bool find_sentinels(struct span_tpl *t)
{
    for (int f = 0; f < AT_N; f++) {
        if (f == AT_PARENT && !t->has_parent)
            continue;
        const uint8_t *p = memmem(t->bytes, t->len, SENTINEL[f], SENTINEL_LEN[f]);
        if (!p)
            return false;
        size_t at = (size_t)(p - t->bytes);
        if (memmem(p + 1, t->len - at - 1, SENTINEL[f], SENTINEL_LEN[f]))
            return false;
        t->at[f] = (uint32_t)at;
    }
    return true;
}

/* Packs s with sentinel ids and times into a new template, held by the
 * cache; NULL when it is too large or the sentinels cannot be found
 * again. */
static struct span_tpl *build_template(struct otlp_span_cache *c, const struct span *s)
{
    struct span_vars v = {SENTINEL[AT_TRACE], SENTINEL[AT_SPAN], s->has_parent ? SENTINEL[AT_PARENT] : NULL,
                          le64(SENTINEL[AT_START]), le64(SENTINEL[AT_END]),
                          (uint32_t)le64((const uint8_t[8]){SENTINEL[AT_FLAGS][0], SENTINEL[AT_FLAGS][1],
                                                            SENTINEL[AT_FLAGS][2], SENTINEL[AT_FLAGS][3]})};
    struct cbuf b;
    cbuf_init(&b);
    pack_span(c, s, &v, &b);
    struct span_tpl *t = xcalloc(1, sizeof(*t));
    t->bytes = b.data;
    t->len = b.len;
    t->has_parent = s->has_parent;
    t->cached = true;
    if (t->len > TPL_MAX || !find_sentinels(t)) {
        otlp_body_tpl_release(t, true);
        return NULL;
    }
    return t;
}

/* A trace state varies in length, and zero-valued fields would be left
 * out of a template: such spans are packed whole. */
static bool templatable(const struct span *s)
{
    return !s->trace_state_len && s->ctx.flags && s->start_ns && s->end_ns;
}

/* The template for s's shape, made on first sight; NULL when s must be
 * packed whole. */
static struct span_tpl *template_for(struct otlp_span_cache *c, const struct span *s)
{
    if (!templatable(s))
        return NULL;
    uint8_t key[SHAPE_KEY_MAX];
    size_t kl = shape_key(s, key);
    uint64_t h = hash_bytes(key, kl);
    struct key_tpl *k = &c->t[h % TPL_SLOTS];
    if (k->key && k->hash == h && k->key_len == kl && !memcmp(k->key, key, kl)) {
        if (!k->tried) { /* seen before: now it is worth a template */
            k->tried = true;
            k->t = build_template(c, s);
        }
        return k->t;
    }
    /* A template costs a whole pack, and some spans never repeat (an
     * AMQP delivery's tag differs every time): the first sighting only
     * notes the key, and the span is packed whole. */
    free(k->key);
    otlp_body_tpl_release(k->t, true);
    k->t = NULL;
    k->tried = false;
    k->hash = h;
    k->key = memcpy(xmalloc(kl), key, kl);
    k->key_len = kl;
    return NULL;
}

static struct shape_tpl *shape_slot(struct otlp_span_cache *c, const struct span_shape *sh, bool has_parent)
{
    uint64_t h = ((uint64_t)(uintptr_t)sh * 0x9e3779b97f4a7c15ull) >> 20 ^ has_parent;
    return &c->st[h % SHAPE_TPL_SLOTS];
}

/* The same for a span that refers to a shape: found by the shape's
 * address. Materializes s when it is packed whole or makes the template. */
static struct span_tpl *shape_template(struct otlp_span_cache *c, struct span *s)
{
    const struct span_shape *sh = s->shape;
    if (!templatable(s)) {
        span_materialize(s);
        return NULL;
    }
    struct shape_tpl *st = shape_slot(c, sh, s->has_parent);
    if (st->shape == sh && st->has_parent == s->has_parent) {
        if (!st->t)
            span_materialize(s);
        return st->t;
    }
    otlp_body_tpl_release(st->t, true);
    st->shape = sh;
    st->has_parent = s->has_parent;
    span_materialize(s);
    st->t = build_template(c, s);
    return st->t;
}

/* ---- batches ----
 *
 * A batch is recorded as its spans end, and written out only as the HTTP
 * client reads the body. A span that has a template is kept as an entry:
 * the template and the values written over its sentinels (64 bytes where
 * the span is about 270). Other spans are packed whole at once into the
 * body's `whole` buffer, and their entry points there; the span's record
 * is free again either way. Reading the body copies each template into
 * the reader's buffer with its values written in: one copy of each span
 * from a template in cache into a buffer in cache, where building the
 * body up front took one copy into a megabyte of cold memory and another
 * out of it into libcurl's buffer (the largest part of what tracing cost
 * the loop, as measured in docs/performance.md).
 *
 * The envelope (resource, scope, and the lengths that count the spans) is
 * packed by protobuf-c when the batch is finished: the spans go in as one
 * unknown field of ScopeSpans of the right length, whose bytes the sink
 * skips (protobuf-c packs an unknown field's tag and then its bytes
 * verbatim). The field's tag is the first span's own, so the envelope's
 * last byte is dropped, and the spans follow it. */

/* The seeds of a body's drawn ids (see "ids" in otlp_body.c). */
static void draw_seeds(uint64_t seed[3])
{
    trace_random_id((uint8_t *)seed, 3 * sizeof(seed[0]));
    for (int k = 0; k < 3; k++)
        seed[k] = (seed[k] >> 1) | 1;
}

/* Stands for the spans among the envelope's bytes: never dereferenced. */
static const uint8_t SPANS_MARK;

/* Appends what protobuf-c packs, except the spans' bytes, which the
 * reader of the body writes out. */
struct envelope_sink {
    struct cbuf_sink base;
    bool seen;
};

static void envelope_append(ProtobufCBuffer *b, size_t len, const uint8_t *data)
{
    struct envelope_sink *k = (struct envelope_sink *)b;
    if (data == &SPANS_MARK) {
        k->seen = true;
        return;
    }
    if (k->seen)
        abort(); /* protobuf-c put something after the spans: the layout below would be wrong */
    otlp_pb_sink_append(b, len, data);
}

/* Packs the envelope (b's resource and scope, and spans_len bytes of
 * spans as an unknown field, when there are any) into out. */
static void pack_envelope(const struct otlp_span_batch *b, size_t spans_len, struct cbuf *out)
{
    ProtobufCMessageUnknownField uf = {.tag = 2, .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED,
                                       .len = spans_len, .data = (uint8_t *)&SPANS_MARK};
    Ferry__Otlp__ScopeSpansPacked ss;
    ferry__otlp__scope_spans_packed__init(&ss);
    ss.scope.data = b->env.data + b->resource_len;
    ss.scope.len = b->env.len - b->resource_len;
    if (spans_len) {
        ss.base.n_unknown_fields = 1;
        ss.base.unknown_fields = &uf;
    }
    Ferry__Otlp__ScopeSpansPacked *ssp = &ss;
    Ferry__Otlp__ResourceSpansPacked rs;
    ferry__otlp__resource_spans_packed__init(&rs);
    rs.resource.data = b->env.data;
    rs.resource.len = b->resource_len;
    rs.n_scope_spans = 1;
    rs.scope_spans = &ssp;
    Ferry__Otlp__ResourceSpansPacked *rsp = &rs;
    Ferry__Otlp__ExportTraceServiceRequestPacked req;
    ferry__otlp__export_trace_service_request_packed__init(&req);
    req.n_resource_spans = 1;
    req.resource_spans = &rsp;
    struct envelope_sink sink = {.base = {.base = {.append = envelope_append}, .out = out}};
    protobuf_c_message_pack_to_buffer(&req.base, &sink.base.base);
    if (spans_len && !sink.seen)
        abort();
}

void otlp_batch_begin(const struct otlp_resource *r, struct otlp_span_batch *b, struct otlp_body *mem)
{
    /* The resource and the scope, packed for the first batch and kept:
     * at the default batch of 512, busy ferryds start thousands a
     * second. */
    if (!b->env.len) {
        struct otlp_pb_arena a;
        otlp_pb_arena_init(&a, r->n);
        Opentelemetry__Proto__Common__V1__InstrumentationScope scope;
        Opentelemetry__Proto__Resource__V1__Resource res;
        otlp_pb_scope_and_resource(&scope, &res, &a, r);
        otlp_pb_pack(&res.base, &b->env);
        b->resource_len = b->env.len;
        otlp_pb_pack(&scope.base, &b->env);
        otlp_pb_arena_free(&a);
    }

    b->body = *mem;
    otlp_body_init(mem);
    otlp_body_clear(&b->body);
    draw_seeds(b->body.id_seed);
    b->spans_len = 0;
    b->id = 0;
    b->last_shape = NULL;
    b->last_t = NULL;
}

static struct otlp_entry *new_entry(struct otlp_body *body)
{
    if (body->ne == body->cap) {
        body->cap = body->cap ? body->cap * 2 : 1024;
        body->e = xrealloc(body->e, body->cap * sizeof(*body->e));
    }
    /* The entries were last written a batch ago, or never: ask for a
     * later one now, so that writing it then does not wait on memory. */
    if (body->ne + 4 < body->cap)
        __builtin_prefetch(&body->e[body->ne + 4], 1);
    return &body->e[body->ne++];
}

/* The body holds each template its entries use until it is sent, with
 * one reference per batch. */
static inline __attribute__((always_inline)) void hold(struct otlp_span_cache *c, struct otlp_span_batch *b,
                                                       struct span_tpl *t)
{
    struct otlp_body *body = &b->body;
    if (!b->id)
        b->id = ++c->batches;
    if (t->last_batch != b->id) {
        t->last_batch = b->id;
        t->refs++;
        if (body->ntpls == body->ctpls) {
            body->ctpls = body->ctpls ? body->ctpls * 2 : 16;
            body->tpls = xrealloc(body->tpls, body->ctpls * sizeof(*body->tpls));
        }
        body->tpls[body->ntpls++] = t;
    }
}

/* Adds a span of template t, which b holds, with v's values.
 * v->trace_id NULL: a root span whose ids are drawn when it is written
 * out (see "ids"). Inlined into both callers: the call and the span_vars
 * it reads were a measurable part of adding a span. */
static inline __attribute__((always_inline)) void add_templated(struct otlp_span_cache *c,
                                                                struct otlp_span_batch *b, struct span_tpl *t,
                                                                const struct span_vars *v)
{
    struct otlp_entry *e = new_entry(&b->body);
    e->t = t;
    e->v.draw = !v->trace_id;
    if (v->trace_id) {
        memcpy(e->v.trace_id, v->trace_id, 16);
        memcpy(e->v.span_id, v->span_id, 8);
    }
    if (v->parent_id)
        memcpy(e->v.parent_id, v->parent_id, 8);
    e->v.start = v->start;
    e->v.end = v->end;
    e->v.flags = v->flags;
    c->templated++;
    b->spans_len += t->len;
}

bool otlp_batch_add_shaped(struct otlp_span_cache *c, struct otlp_span_batch *b, const struct span_shape *shape,
                           const uint8_t *ids, uint64_t start, uint64_t end)
{
    if (!start || !end)
        return false;
    /* Spans of one shape come in runs (a client's pipeline of GETs):
     * the run's template is already found and held by this batch. */
    struct span_tpl *t = b->last_t;
    if (shape != b->last_shape) {
        const struct shape_tpl *st = shape_slot(c, shape, false);
        t = st->shape == shape && !st->has_parent ? st->t : NULL;
        if (!t)
            return false;
        hold(c, b, t);
        b->last_shape = shape;
        b->last_t = t;
    }
    struct span_vars v = {ids, ids ? ids + 16 : NULL, NULL, start, end, 1};
    add_templated(c, b, t, &v);
    return true;
}

void otlp_batch_add(struct otlp_span_cache *c, struct otlp_span_batch *b, struct span *s)
{
    struct otlp_body *body = &b->body;
    struct span_tpl *t = s->shape ? shape_template(c, s) : template_for(c, s);
    struct span_vars v;
    vars_of(s, &v);
    if (t) {
        hold(c, b, t);
        add_templated(c, b, t, &v);
    } else {
        struct otlp_entry *e = new_entry(body);
        e->t = NULL;
        e->w.off = body->whole.len;
        pack_span(c, s, &v, &body->whole);
        e->w.len = body->whole.len - e->w.off;
        c->packed_whole++;
        b->spans_len += e->w.len;
    }
    /* Keep the scratch buffer for the next span, unless one unusually
     * large span grew it. */
    if (c->packed.cap > ((size_t)1 << 16))
        cbuf_reset(&c->packed, (size_t)1 << 16);
}

void otlp_batch_free(struct otlp_span_batch *b)
{
    otlp_body_free(&b->body);
    cbuf_free(&b->env);
}

void otlp_batch_finish(struct otlp_span_batch *b, struct otlp_body *body)
{
    *body = b->body;
    otlp_body_init(&b->body);
    body->head.len = 0;
    if (body->ne) {
        /* The unknown field is the spans after the first one's tag, which
         * protobuf-c writes itself, as the envelope's last byte. Every
         * framed span starts with that tag. */
        pack_envelope(b, b->spans_len - 1, &body->head);
        const struct otlp_entry *first = &body->e[0];
        uint8_t tag = first->t ? first->t->bytes[0] : body->whole.data[first->w.off];
        if (body->head.data[body->head.len - 1] != tag)
            abort(); /* the envelope does not end where the spans begin: a bug */
        body->head.len--;
    } else {
        pack_envelope(b, 0, &body->head);
    }
    body->len = body->head.len + b->spans_len;
    b->spans_len = 0;
    b->id = 0;
    b->last_shape = NULL;
    b->last_t = NULL;
}

