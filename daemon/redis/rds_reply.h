/* rds_reply.h: how a Redis reply becomes CBOR. Pure, for unit tests. */
#ifndef FERRY_RDS_REPLY_H
#define FERRY_RDS_REPLY_H

#include <hiredis/hiredis.h>

#include "cbuf.h"

/* Appends one CBOR item for reply: bulk string -> byte string, status ->
 * text, integer -> integer, nil -> null, array -> array (nested). An error
 * reply is not a result: the caller turns it into a backend_error, and this
 * writes it as the map {"error": text} only when it sits inside an array
 * (as EXEC and scripts can return). */
void rds_reply_encode(const redisReply *reply, struct cbuf *out);

#endif
