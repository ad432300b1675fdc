/* libferry_check: drives a live ferryd through libferry, for
 * test_libferry.py: pipelining, out-of-order parking, push routing. Prints
 * one line per check and exits non-zero on the first failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"

#define CHECK(cond, what)                                              \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "FAILED: %s (line %d)\n", what, __LINE__); \
            exit(1);                                                   \
        }                                                              \
        printf("ok: %s\n", what);                                      \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: libferry_check SOCKET\n");
        return 64;
    }
    int err;
    ferry_t *f = ferry_connect(argv[1], &err);
    CHECK(f != NULL, "connect");

    /* Pipelining: 1000 INCRs sent before any response is read. */
    const char *incr[] = {"INCR", "libferry:n"};
    uint64_t first = 0, id;
    for (int i = 0; i < 1000; i++) {
        if (ferry_send_redis(f, 2, incr, NULL, 0, &id) != 0) {
            fprintf(stderr, "FAILED: send %d\n", i);
            return 1;
        }
        if (i == 0)
            first = id;
    }
    uint64_t sum = 0, ids = 0;
    for (int i = 0; i < 1000; i++) {
        ferry_msg_t *m;
        if (ferry_recv(f, &m, 10000) != 0 || m->err_code || !cbor_isa_uint(m->result)) {
            fprintf(stderr, "FAILED: pipelined response %d\n", i);
            return 1;
        }
        sum += cbor_get_int(m->result);
        ids += m->id - first;
        ferry_msg_free(m);
    }
    CHECK(sum == 1000ull * 1001 / 2, "1000 pipelined INCRs answered 1..1000");
    CHECK(ids == 999ull * 1000 / 2, "every id answered once");

    /* ferry_call parks responses to other requests for ferry_recv. */
    const char *get[] = {"GET", "libferry:n"};
    uint64_t early;
    CHECK(ferry_send_redis(f, 2, get, NULL, 0, &early) == 0, "send GET");
    ferry_msg_t *m;
    CHECK(ferry_call(f, "ping", NULL, 0, &m, 10000) == 0 && m->result &&
              cbor_isa_string(m->result) && cbor_string_length(m->result) == 4,
          "call ping while a GET is outstanding");
    ferry_msg_free(m);
    CHECK(ferry_recv(f, &m, 10000) == 0 && m->id == early && cbor_isa_bytestring(m->result) &&
              cbor_bytestring_length(m->result) == 4 &&
              memcmp(cbor_bytestring_handle(m->result), "1000", 4) == 0,
          "the parked GET response comes out of recv");
    ferry_msg_free(m);

    /* Errors come back as codes. */
    const char *bad[] = {"FLUSHALL"};
    CHECK(ferry_call_redis(f, 1, bad, NULL, 0, &m, 10000) == 0 && m->err_code &&
              strcmp(m->err_code, "denied") == 0,
          "denied command reports 'denied'");
    ferry_msg_free(m);

    /* A request with args built from libcbor items. */
    cbor_item_t *args = cbor_new_definite_map(1);
    cbor_map_add(args, (struct cbor_pair){cbor_move(cbor_build_string("protocol")),
                                          cbor_move(cbor_build_uint8(1))});
    CHECK(ferry_call(f, "hello", args, 0, &m, 10000) == 0 && !m->err_code && cbor_isa_map(m->result),
          "hello with libcbor args");
    ferry_msg_free(m);
    cbor_decref(&args);

    /* Timeouts on the client side. */
    CHECK(ferry_recv(f, &m, 50) == FERRY_ETIMEDOUT, "recv times out when nothing is due");
    ferry_close(f);
    printf("libferry_check: all checks passed\n");
    return 0;
}
