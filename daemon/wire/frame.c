/* frame.c: see frame.h. */
#include "errors.h"
#include "frame.h"

long frame_next(const uint8_t *buf, size_t avail, size_t max_body, size_t *body_len)
{
    if (avail < FRAME_HDR)
        return 0;
    size_t n = ((size_t)buf[0] << 24) | ((size_t)buf[1] << 16) | ((size_t)buf[2] << 8) | buf[3];
    if (n > max_body)
        return FE_TOO_LARGE;
    if (avail - FRAME_HDR < n)
        return 0;
    *body_len = n;
    return (long)(n + FRAME_HDR);
}
