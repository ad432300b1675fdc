/* frame.h: ferry's framing, a 4-byte big-endian length and then one CBOR
 * item. Pure: it looks at bytes and does no I/O, so tests and fuzzers can
 * drive it directly. */
#ifndef FERRY_FRAME_H
#define FERRY_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HDR 4

/* Looks for one whole frame at the start of buf. Returns the frame's total
 * size (header included) and sets *body_len when it is all there, 0 when
 * more bytes are needed, and FE_TOO_LARGE when the header announces a body
 * over max_body: the stream can no longer be trusted and must be closed. */
long frame_next(const uint8_t *buf, size_t avail, size_t max_body, size_t *body_len)
    __attribute__((warn_unused_result));

#endif
