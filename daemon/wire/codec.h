/* codec.h: decoding requests and encoding responses and pushes.
 *
 * Decoding walks the frame with libcbor's streaming decoder instead of
 * building an item tree: one pass checks well-formedness, nesting depth,
 * item count and UTF-8, and leaves a view whose fields point into the frame.
 * Nothing is allocated, and a hostile frame (a billion-element array header,
 * a million nested arrays) costs no more than its own bytes. */
#ifndef FERRY_CODEC_H
#define FERRY_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbuf.h"

#define FERRY_PROTOCOL_VERSION 1

enum tok_type {
    TOK_UINT, TOK_NEGINT, TOK_BYTES, TOK_TEXT, TOK_ARRAY, TOK_MAP, TOK_TAG,
    TOK_FLOAT, TOK_BOOL, TOK_NULL, TOK_UNDEF, TOK_INDEF, TOK_BREAK
};

/* One CBOR header, and a string's bytes. */
struct tok {
    enum tok_type type;
    uint64_t u;          /* integer value, tag, or array/map length */
    double f;            /* float value */
    const uint8_t *p;    /* refers: string bytes inside the frame */
    size_t n;            /* string length */
};

/* A read position in a buffer of CBOR. */
struct cursor {
    const uint8_t *buf; /* refers */
    size_t len;
    size_t pos;
};

struct codec_limits {
    unsigned max_depth; /* deepest nesting allowed; the request map is 1 */
    size_t max_items;   /* data items allowed in one request */
};

/* A decoded request. Every pointer refers into the frame it came from. */
struct req_view {
    bool has_id;
    uint64_t id;
    const char *op;
    size_t op_len;
    const uint8_t *args; /* the raw CBOR of "args", or NULL */
    size_t args_len;
    bool has_deadline;
    uint64_t deadline_ms;
    const char *traceparent;
    size_t traceparent_len;
    const char *tracestate;
    size_t tracestate_len;
};

/* Reads the next header. Returns 0, or FE_BAD_REQUEST when the bytes are
 * truncated or malformed. */
int cursor_next(struct cursor *c, struct tok *t) __attribute__((warn_unused_result));

/* Consumes the rest of the item whose first header is first. */
int cursor_skip_rest(struct cursor *c, const struct tok *first) __attribute__((warn_unused_result));

/* Decodes one request frame body. Returns 0, FE_BAD_REQUEST or FE_TOO_LARGE,
 * with *why saying what was wrong. v->has_id tells whether the id was read
 * before the fault, so that the error can still carry it. */
int codec_decode_request(const uint8_t *buf, size_t len, const struct codec_limits *lim,
                         struct req_view *v, const char **why)
    __attribute__((warn_unused_result));

bool utf8_valid(const uint8_t *p, size_t n);

/* Response and push frames. Each appends one whole frame, header
 * included, to out. */
void codec_error_frame(struct cbuf *out, bool has_id, uint64_t id, int code, const char *message);
void codec_result_frame(struct cbuf *out, uint64_t id, const uint8_t *result, size_t len);

/* For results built in place: begin writes the header and the map up to the
 * "result" key and returns the frame's offset; the caller appends one CBOR
 * item; end patches the length. */
size_t codec_result_begin(struct cbuf *out, uint64_t id);
void codec_result_end(struct cbuf *out, size_t at);

/* A push frame: {"sub": sub, "kind": kind, "data": <data>}, plus
 * "traceparent" when traceparent is not NULL. */
void codec_push_frame(struct cbuf *out, uint64_t sub, const char *kind, const uint8_t *data,
                      size_t len, const char *traceparent);

#endif
