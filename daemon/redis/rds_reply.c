/* rds_reply.c: see rds_reply.h. */
#include "codec.h"
#include "rds_reply.h"

void rds_reply_encode(const redisReply *r, struct cbuf *out)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
        cbuf_bytes(out, r->str, r->len);
        break;
    case REDIS_REPLY_ERROR:
        /* Only inside an array (a script's error_reply, EXEC's results):
         * a top-level error is the request's backend_error. A map tells it
         * from a status line, which is bare text. */
        cbuf_map(out, 1);
        cbuf_str(out, "error");
        /* fall through */
    case REDIS_REPLY_STATUS:
        /* Status lines are ASCII by protocol; guard anyway, since text on
         * the wire must be UTF-8. */
        if (utf8_valid((const uint8_t *)r->str, r->len))
            cbuf_text(out, r->str, r->len);
        else
            cbuf_bytes(out, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        cbuf_int(out, r->integer);
        break;
    case REDIS_REPLY_NIL:
        cbuf_null(out);
        break;
    case REDIS_REPLY_ARRAY:
        cbuf_array(out, r->elements);
        /* hiredis's reader nests at most 9 levels, so recursion is bounded. */
        for (size_t i = 0; i < r->elements; i++)
            rds_reply_encode(r->element[i], out);
        break;
    default:
        cbuf_null(out);
        break;
    }
}
