/* Fuzz target: what a client sends. The bytes are split into frames as
 * client.c does, and each body is decoded as a request (wire/frame.c,
 * wire/codec.c), then its args are walked with the cursor API, as every
 * op's argument conversion does, and read as the 'redis' op reads them
 * (rds_command.c), matched against a deny-list and written as RESP.
 * Properties: no crash, no overread (ASan), a decoded view points inside
 * its frame, and the RESP written parses back (hiredis's reader) to the
 * same arguments. (The AMQP ops' conversion has its own, fuzz_amqp.c.) */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cbuf.h"
#include "codec.h"
#include "frame.h"
#include "rds_command.h"
#include "rds_deny.h"

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

static struct rds_deny deny;
static int deny_ready;

/* The redis op's path short of the socket. */
static void redis_args(const uint8_t *args, size_t len)
{
    const char *small[RDS_COMMAND_SMALL];
    size_t small_lens[RDS_COMMAND_SMALL];
    const char **argv;
    size_t *lens;
    int argc;
    const char *bad = rds_command_parse(args, len, &argc, &argv, &lens, small, small_lens);
    if (!bad) {
        assert(argc > 0);
        (void)rds_deny_match(&deny, argc, argv, lens);
        struct cbuf out;
        cbuf_init(&out);
        rds_command_format(&out, argc, argv, lens);
        redisReader *rd = redisReaderCreate();
        void *reply = NULL;
        assert(redisReaderFeed(rd, (const char *)out.data, out.len) == REDIS_OK);
        assert(redisReaderGetReply(rd, &reply) == REDIS_OK && reply);
        const redisReply *r = reply;
        assert(r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)argc);
        for (int i = 0; i < argc; i++)
            assert(r->element[i]->len == lens[i] && !memcmp(r->element[i]->str, argv[i], lens[i]));
        freeReplyObject(reply);
        redisReaderFree(rd);
        cbuf_free(&out);
    }
    if (argv && argv != small) {
        free(argv);
        free(lens);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!deny_ready) {
        char why[128];
        assert(rds_deny_parse("FLUSHALL, CLIENT KILL, XREAD [BLOCK] STREAMS, XREADGROUP GROUP * * [BLOCK] STREAMS",
                              &deny, why, sizeof(why)) == 0);
        deny_ready = 1;
    }
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
                redis_args(v.args, v.args_len);
            }
        } else {
            assert(why != NULL);
        }
        off += (size_t)n;
    }
    free(buf);
    return 0;
}
