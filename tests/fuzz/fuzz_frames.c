/* Fuzz target: what a client sends. The bytes are split into frames as
 * client.c does, and each body is decoded as a request (wire/frame.c,
 * wire/codec.c), then its args are walked with the cursor API, as every
 * op's argument conversion does. Properties: no crash, no overread (ASan),
 * and a decoded view points inside its frame. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "frame.h"

/* Walks one CBOR item and everything in it, as an op's argument parser
 * does; returns 0 or the cursor's error. */
static int walk(struct cursor *c, unsigned depth)
{
    struct tok t;
    int rc = cursor_next(c, &t);
    if (rc)
        return rc;
    if (depth > 40)
        return cursor_skip_rest(c, &t);
    if (t.type == TOK_ARRAY || t.type == TOK_MAP) {
        uint64_t n = t.type == TOK_MAP ? t.u * 2 : t.u;
        for (uint64_t i = 0; i < n; i++)
            if ((rc = walk(c, depth + 1)) != 0)
                return rc;
        return 0;
    }
    return cursor_skip_rest(c, &t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so that ASan sees any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    struct codec_limits lim = {.max_depth = 32, .max_items = 4096};
    size_t off = 0;
    while (off < size) {
        size_t body;
        long n = frame_next(buf + off, size - off, 1 << 20, &body);
        if (n <= 0)
            break; /* incomplete, or too large: the client is closed */
        const uint8_t *b = buf + off + FRAME_HDR;
        struct req_view v;
        const char *why = NULL;
        if (codec_decode_request(b, body, &lim, &v, &why) == 0) {
            assert(v.op >= (const char *)b && v.op + v.op_len <= (const char *)b + body);
            if (v.args) {
                assert(v.args >= b && v.args + v.args_len <= b + body);
                struct cursor c = {.buf = v.args, .len = v.args_len, .pos = 0};
                (void)walk(&c, 0);
            }
        } else {
            assert(why != NULL);
        }
        off += (size_t)n;
    }
    free(buf);
    return 0;
}
