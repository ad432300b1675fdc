/* codec.c: see codec.h. */
#include <string.h>

#include <cbor.h>

#include "codec.h"
#include "errors.h"
#include "frame.h"

/* ---- reading headers through libcbor's streaming decoder ---- */

static void on_uint8(void *c, uint8_t v) { ((struct tok *)c)->type = TOK_UINT; ((struct tok *)c)->u = v; }
static void on_uint16(void *c, uint16_t v) { ((struct tok *)c)->type = TOK_UINT; ((struct tok *)c)->u = v; }
static void on_uint32(void *c, uint32_t v) { ((struct tok *)c)->type = TOK_UINT; ((struct tok *)c)->u = v; }
static void on_uint64(void *c, uint64_t v) { ((struct tok *)c)->type = TOK_UINT; ((struct tok *)c)->u = v; }
static void on_neg8(void *c, uint8_t v) { ((struct tok *)c)->type = TOK_NEGINT; ((struct tok *)c)->u = v; }
static void on_neg16(void *c, uint16_t v) { ((struct tok *)c)->type = TOK_NEGINT; ((struct tok *)c)->u = v; }
static void on_neg32(void *c, uint32_t v) { ((struct tok *)c)->type = TOK_NEGINT; ((struct tok *)c)->u = v; }
static void on_neg64(void *c, uint64_t v) { ((struct tok *)c)->type = TOK_NEGINT; ((struct tok *)c)->u = v; }

static void on_bytes(void *c, cbor_data p, size_t n)
{
    struct tok *t = c;
    t->type = TOK_BYTES;
    t->p = p;
    t->n = n;
}

static void on_text(void *c, cbor_data p, size_t n)
{
    struct tok *t = c;
    t->type = TOK_TEXT;
    t->p = p;
    t->n = n;
}

static void on_indef(void *c) { ((struct tok *)c)->type = TOK_INDEF; }
static void on_array(void *c, size_t n) { ((struct tok *)c)->type = TOK_ARRAY; ((struct tok *)c)->u = n; }
static void on_map(void *c, size_t n) { ((struct tok *)c)->type = TOK_MAP; ((struct tok *)c)->u = n; }
static void on_tag(void *c, uint64_t v) { ((struct tok *)c)->type = TOK_TAG; ((struct tok *)c)->u = v; }
static void on_float(void *c, float v) { ((struct tok *)c)->type = TOK_FLOAT; ((struct tok *)c)->f = v; }
static void on_double(void *c, double v) { ((struct tok *)c)->type = TOK_FLOAT; ((struct tok *)c)->f = v; }
static void on_undef(void *c) { ((struct tok *)c)->type = TOK_UNDEF; }
static void on_null(void *c) { ((struct tok *)c)->type = TOK_NULL; }
static void on_bool(void *c, bool v) { ((struct tok *)c)->type = TOK_BOOL; ((struct tok *)c)->u = v; }
static void on_break(void *c) { ((struct tok *)c)->type = TOK_BREAK; }

/* libcbor 0.8's field comments are swapped for strings; the field names
 * (byte_string = definite, byte_string_start = indefinite) are right. */
static const struct cbor_callbacks tok_callbacks = {
    .uint8 = on_uint8, .uint16 = on_uint16, .uint32 = on_uint32, .uint64 = on_uint64,
    .negint8 = on_neg8, .negint16 = on_neg16, .negint32 = on_neg32, .negint64 = on_neg64,
    .byte_string = on_bytes, .byte_string_start = on_indef,
    .string = on_text, .string_start = on_indef,
    .array_start = on_array, .indef_array_start = on_indef,
    .map_start = on_map, .indef_map_start = on_indef,
    .tag = on_tag, .float2 = on_float, .float4 = on_float, .float8 = on_double,
    .undefined = on_undef, .null = on_null, .boolean = on_bool, .indef_break = on_break,
};

int cursor_next(struct cursor *c, struct tok *t)
{
    if (c->pos >= c->len)
        return FE_BAD_REQUEST;
    t->type = TOK_BREAK;
    t->p = NULL;
    t->n = 0;
    struct cbor_decoder_result r =
        cbor_stream_decode(c->buf + c->pos, c->len - c->pos, &tok_callbacks, t);
    if (r.status != CBOR_DECODER_FINISHED || r.read == 0)
        return FE_BAD_REQUEST;
    c->pos += r.read;
    return 0;
}

/* ---- UTF-8 ---- */

/* RFC 3629: rejects overlong forms, surrogates and code points past
 * U+10FFFF, which some decoders would otherwise pass on to backends. */
bool utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
            cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            cp = b & 0x0F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            cp = b & 0x07;
        } else {
            return false;
        }
        if (n - i - 1 < need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

/* ---- walking whole items ---- */

struct walk {
    const struct codec_limits *lim;
    size_t items;
    const char *why;
};

/* Checks one header against the limits. depth is the nesting level the
 * header sits at. */
static int check_tok(struct walk *w, const struct tok *t, unsigned depth)
{
    if (++w->items > w->lim->max_items) {
        w->why = "too many data items in one request";
        return FE_TOO_LARGE;
    }
    switch (t->type) {
    case TOK_INDEF:
        w->why = "indefinite-length items are not accepted";
        return FE_BAD_REQUEST;
    case TOK_BREAK:
        /* 0xff only ends an indefinite-length item, which requests never
         * hold: as a first byte it is no item at all. */
        w->why = "unexpected 0xff (a CBOR 'break' outside an indefinite-length item)";
        return FE_BAD_REQUEST;
    case TOK_TEXT:
        if (!utf8_valid(t->p, t->n)) {
            w->why = "invalid UTF-8 in a text string";
            return FE_BAD_REQUEST;
        }
        break;
    case TOK_ARRAY:
    case TOK_MAP:
    case TOK_TAG:
        if (depth >= w->lim->max_depth) {
            w->why = "nesting is too deep";
            return FE_BAD_REQUEST;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Consumes the rest of an item whose first header, first, sitting at
 * depth, was already read and checked. Iterative, with a stack bounded by
 * max_depth, so deep input cannot exhaust the C stack. */
static int walk_rest(struct walk *w, struct cursor *c, const struct tok *first, unsigned depth)
{
    uint64_t stack[64];
    unsigned sp = 0;
    unsigned cap = w->lim->max_depth < 64 ? w->lim->max_depth : 64;

    if (first->type == TOK_ARRAY)
        stack[sp++] = first->u;
    else if (first->type == TOK_MAP)
        stack[sp++] = first->u * 2;
    else if (first->type == TOK_TAG)
        stack[sp++] = 1;
    else
        return 0;
    if (first->type == TOK_MAP && first->u > (UINT64_MAX / 2)) {
        w->why = "malformed CBOR";
        return FE_BAD_REQUEST;
    }

    while (sp > 0) {
        if (stack[sp - 1] == 0) {
            sp--;
            continue;
        }
        stack[sp - 1]--;
        struct tok t;
        if (cursor_next(c, &t) != 0) {
            w->why = "truncated or malformed CBOR";
            return FE_BAD_REQUEST;
        }
        int rc = check_tok(w, &t, depth + sp);
        if (rc)
            return rc;
        if (t.type == TOK_ARRAY || t.type == TOK_MAP || t.type == TOK_TAG) {
            if (sp >= cap) {
                w->why = "nesting is too deep";
                return FE_BAD_REQUEST;
            }
            if (t.type == TOK_MAP && t.u > (UINT64_MAX / 2)) {
                w->why = "malformed CBOR";
                return FE_BAD_REQUEST;
            }
            stack[sp++] = t.type == TOK_ARRAY ? t.u : t.type == TOK_MAP ? t.u * 2 : 1;
        }
    }
    return 0;
}

int cursor_skip_rest(struct cursor *c, const struct tok *first)
{
    /* The frame was validated by codec_decode_request(), so only nesting
     * within the validated limits can appear here. */
    static const struct codec_limits any = {.max_depth = 64, .max_items = SIZE_MAX};
    struct walk w = {.lim = &any, .items = 0, .why = NULL};
    return walk_rest(&w, c, first, 0);
}

#define key_is(k, name) ((k)->n == sizeof(name) - 1 && memcmp((k)->p, name, sizeof(name) - 1) == 0)

enum { F_ID = 1, F_OP = 2, F_ARGS = 4, F_DEADLINE = 8, F_TP = 16, F_TS = 32 };

int codec_decode_request(const uint8_t *buf, size_t len, const struct codec_limits *lim,
                         struct req_view *v, const char **why)
{
    struct walk w = {.lim = lim, .items = 0, .why = NULL};
    struct cursor c = {.buf = buf, .len = len, .pos = 0};
    struct tok t;
    int rc;
    unsigned seen = 0;
    const char *type_fault = NULL;

    memset(v, 0, sizeof(*v));
    if (len == 0) {
        *why = "empty frame";
        return FE_BAD_REQUEST;
    }
    if (cursor_next(&c, &t) != 0) {
        *why = "truncated or malformed CBOR";
        return FE_BAD_REQUEST;
    }
    if ((rc = check_tok(&w, &t, 0)) != 0) {
        *why = w.why;
        return rc;
    }
    if (t.type != TOK_MAP) {
        if ((rc = walk_rest(&w, &c, &t, 0)) != 0) {
            *why = w.why;
            return rc;
        }
        *why = "a request must be a CBOR map";
        return FE_BAD_REQUEST;
    }

    uint64_t pairs = t.u;
    for (uint64_t i = 0; i < pairs; i++) {
        struct tok k, val;
        if (cursor_next(&c, &k) != 0) {
            *why = "truncated or malformed CBOR";
            return FE_BAD_REQUEST;
        }
        if ((rc = check_tok(&w, &k, 1)) != 0 || (rc = walk_rest(&w, &c, &k, 1)) != 0) {
            *why = w.why;
            return rc;
        }
        size_t vstart = c.pos;
        if (cursor_next(&c, &val) != 0) {
            *why = "truncated or malformed CBOR";
            return FE_BAD_REQUEST;
        }
        if ((rc = check_tok(&w, &val, 1)) != 0 || (rc = walk_rest(&w, &c, &val, 1)) != 0) {
            *why = w.why;
            return rc;
        }
        if (k.type != TOK_TEXT) {
            type_fault = type_fault ? type_fault : "request map keys must be text";
            continue;
        }
        unsigned f = key_is(&k, "id") ? F_ID : key_is(&k, "op") ? F_OP
                   : key_is(&k, "args") ? F_ARGS : key_is(&k, "deadline") ? F_DEADLINE
                   : key_is(&k, "traceparent") ? F_TP : key_is(&k, "tracestate") ? F_TS : 0;
        if (f == 0)
            continue; /* unknown keys are ignored, so the protocol can grow */
        if (seen & f) {
            type_fault = type_fault ? type_fault : "duplicate key in request";
            continue;
        }
        seen |= f;
        switch (f) {
        case F_ID:
            if (val.type == TOK_UINT) {
                v->has_id = true;
                v->id = val.u;
            } else {
                type_fault = type_fault ? type_fault
                           : val.type == TOK_FLOAT ? "id must be an unsigned integer, not a float"
                                                   : "id must be an unsigned integer";
            }
            break;
        case F_OP:
            if (val.type == TOK_TEXT) {
                v->op = (const char *)val.p;
                v->op_len = val.n;
            } else {
                type_fault = type_fault ? type_fault : "op must be a text string";
            }
            break;
        case F_ARGS:
            v->args = buf + vstart;
            v->args_len = c.pos - vstart;
            break;
        case F_DEADLINE:
            /* The protocol's range (deadline-ms in the CDDL): a client
             * that sends more has a units bug, better told than capped. */
            if (val.type == TOK_UINT && val.u > 0 && val.u <= UINT32_MAX) {
                v->has_deadline = true;
                v->deadline_ms = val.u;
            } else {
                type_fault = type_fault ? type_fault : "deadline must be an integer in 1..4294967295 (ms)";
            }
            break;
        case F_TP:
            if (val.type == TOK_TEXT) {
                v->traceparent = (const char *)val.p;
                v->traceparent_len = val.n;
            } else {
                type_fault = type_fault ? type_fault : "traceparent must be a text string";
            }
            break;
        case F_TS:
            if (val.type == TOK_TEXT) {
                v->tracestate = (const char *)val.p;
                v->tracestate_len = val.n;
            } else {
                type_fault = type_fault ? type_fault : "tracestate must be a text string";
            }
            break;
        }
    }
    if (c.pos != len) {
        *why = "trailing bytes after the request";
        return FE_BAD_REQUEST;
    }
    if (type_fault) {
        *why = type_fault;
        return FE_BAD_REQUEST;
    }
    if (!v->has_id) {
        *why = "missing id";
        return FE_BAD_REQUEST;
    }
    if (!v->op) {
        *why = "missing op";
        return FE_BAD_REQUEST;
    }
    return 0;
}

/* ---- encoding ---- */

static size_t frame_begin(struct cbuf *out)
{
    size_t at = out->len;
    cbuf_reserve(out, FRAME_HDR);
    out->len += FRAME_HDR;
    return at;
}

void codec_error_frame(struct cbuf *out, bool has_id, uint64_t id, int code, const char *message)
{
    size_t at = frame_begin(out);
    cbuf_map(out, has_id ? 2 : 1);
    if (has_id) {
        cbuf_str(out, "id");
        cbuf_uint(out, id);
    }
    cbuf_str(out, "error");
    cbuf_map(out, 2);
    cbuf_str(out, "code");
    cbuf_str(out, fe_name(code));
    cbuf_str(out, "message");
    const char *m = message ? message : fe_message(code);
    size_t n = strlen(m);
    /* A backend's message may hold any bytes; text on the wire must be
     * valid UTF-8, so a message that is not gets the table's instead. */
    if (!utf8_valid((const uint8_t *)m, n)) {
        m = fe_message(code);
        n = strlen(m);
    }
    cbuf_text(out, m, n);
    cbuf_patch_len(out, at);
}

/* Every response starts with the same bytes; they are written as
 * constants because this runs once per request. */
static const uint8_t map2_id[] = {0xa2, 0x62, 'i', 'd'};
static const uint8_t key_result[] = {0x66, 'r', 'e', 's', 'u', 'l', 't'};

size_t codec_result_begin(struct cbuf *out, uint64_t id)
{
    size_t at = frame_begin(out);
    cbuf_put(out, map2_id, sizeof(map2_id));
    cbuf_uint(out, id);
    cbuf_put(out, key_result, sizeof(key_result));
    return at;
}

void codec_result_end(struct cbuf *out, size_t at) { cbuf_patch_len(out, at); }

void codec_result_frame(struct cbuf *out, uint64_t id, const uint8_t *result, size_t len)
{
    size_t at = codec_result_begin(out, id);
    cbuf_put(out, result, len);
    codec_result_end(out, at);
}

void codec_push_frame(struct cbuf *out, uint64_t sub, const char *kind, const uint8_t *data,
                      size_t len, const char *traceparent)
{
    size_t at = frame_begin(out);
    cbuf_map(out, traceparent ? 4 : 3);
    if (traceparent) {
        cbuf_str(out, "traceparent");
        cbuf_str(out, traceparent);
    }
    cbuf_str(out, "sub");
    cbuf_uint(out, sub);
    cbuf_str(out, "kind");
    cbuf_str(out, kind);
    cbuf_str(out, "data");
    cbuf_put(out, data, len);
    cbuf_patch_len(out, at);
}
