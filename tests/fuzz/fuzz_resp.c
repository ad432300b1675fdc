/* Fuzz target: what a Redis server (or anything posing as one) sends. The
 * bytes go through the path of redis/rds_conn.c: the reply guard
 * (resp_guard.c) decides what hiredis's reader may see, the reader parses
 * it, and each reply becomes CBOR (rds_reply.c). Properties: no crash or
 * overread, the scan always makes progress (rds_conn.c's read loop would
 * spin otherwise), and every reply's CBOR is one well-formed item. A
 * reader error ends the input, as it ends the connection. The first byte
 * picks the replies nobody waits for. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <hiredis/hiredis.h>

#include "cbuf.h"
#include "rds_reply.h"
#include "resp_guard.h"

static bool wanted(void *ctx, uint64_t nth)
{
    uint8_t mask = *(const uint8_t *)ctx;
    return !(mask & (1u << (nth % 8)));
}

static void check_cbor(const struct cbuf *b)
{
    struct cbor_load_result r;
    cbor_item_t *item = cbor_load(b->data, b->len, &r);
    assert(item != NULL && r.error.code == CBOR_ERR_NONE && r.read == b->len);
    cbor_decref(&item);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mask = data[0];
    char *buf = malloc(size);
    memcpy(buf, data + 1, size - 1);
    size_t n = size - 1;

    struct resp_guard g;
    resp_guard_init(&g, 1 << 16, 1 << 12);
    g.wanted = wanted;
    g.ctx = &mask;
    redisReader *rd = redisReaderCreate();
    struct cbuf out;
    cbuf_init(&out);
    bool failed = false;
    size_t off = 0;
    while (off < n && !failed) {
        bool skipping = g.skipping;
        size_t k = resp_guard_scan(&g, buf + off, n - off);
        if (g.why == RESP_GUARD_PROTOCOL)
            break; /* rds_conn.c drops the connection */
        if (!skipping && k > 0) {
            if (redisReaderFeed(rd, buf + off, k) != REDIS_OK)
                failed = true;
            void *reply;
            while (!failed) {
                if (redisReaderGetReply(rd, &reply) != REDIS_OK) {
                    failed = true;
                    break;
                }
                if (!reply)
                    break;
                out.len = 0;
                rds_reply_encode(reply, &out);
                check_cbor(&out);
                freeReplyObject(reply);
            }
        }
        if (g.skipping && !skipping) {
            /* A refused reply begins: the reader starts afresh, as
             * rds_conn.c does. */
            redisReaderFree(rd);
            rd = redisReaderCreate();
        }
        assert(k > 0 || (!skipping && g.skipping));
        off += k;
    }
    cbuf_free(&out);
    redisReaderFree(rd);
    free(buf);
    return 0;
}
