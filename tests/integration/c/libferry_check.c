/* libferry_check: drives a live ferryd through libferry, for
 * test_libferry.py: pipelining, out-of-order parking, push routing, frames
 * read in place (views). Prints one line per check and exits non-zero on
 * the first failure.
 *
 *   libferry_check SOCKET              Redis ops, trees and views
 *   libferry_check SOCKET amqp QUEUE   publish and consume through views
 *   libferry_check SOCKET patterns     the Redis patterns' ops through ferry_call */
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

/* Serializes a libcbor item for ferry_send_cbor(); frees the item. */
static size_t enc(cbor_item_t *it, unsigned char **buf)
{
    size_t cap = 0, n = cbor_serialize_alloc(it, buf, &cap);
    cbor_decref(&it);
    return n;
}

static cbor_item_t *pair_map(int n, const char **keys, cbor_item_t **vals)
{
    cbor_item_t *m = cbor_new_definite_map((size_t)n);
    for (int i = 0; i < n; i++)
        cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string(keys[i])), cbor_move(vals[i])});
    return m;
}

/* Waits for the response to id as a view, failing on an error. */
static void view_ok(ferry_t *f, uint64_t id, ferry_view_t *v, const char *what)
{
    for (;;) {
        int rc = ferry_recv_view(f, v, 10000);
        if (rc != 0) {
            fprintf(stderr, "FAILED: %s: %s\n", what, ferry_strerror(rc));
            exit(1);
        }
        if (v->kind == FERRY_RESPONSE && v->id == id)
            break;
    }
    if (v->error) {
        fprintf(stderr, "FAILED: %s: %.*s %.*s\n", what, (int)v->err_code_len, v->err_code,
                (int)v->err_message_len, v->err_message);
        exit(1);
    }
}

static int amqp_checks(const char *sock, const char *queue)
{
    int err;
    ferry_t *f = ferry_connect(sock, &err);
    CHECK(f != NULL, "connect");
    ferry_view_t v;
    unsigned char *b;
    size_t n;
    uint64_t id;
    const char *dk[] = {"name", "durable"};
    cbor_item_t *dv[] = {cbor_build_string(queue), cbor_build_bool(false)};
    n = enc(pair_map(2, dk, dv), &b);
    CHECK(ferry_send_cbor(f, "queue.declare", b, n, 0, &id) == 0, "queue.declare sent as CBOR bytes");
    free(b);
    view_ok(f, id, &v, "queue.declare");
    const uint8_t *p;
    size_t pn;
    const char *s;
    size_t sn;
    CHECK(ferry_cbor_map_get(v.result, v.result_len, "queue", &p, &pn) == 0 &&
              ferry_cbor_text(p, pn, &s, &sn) == 0 && sn == strlen(queue) && memcmp(s, queue, sn) == 0,
          "queue.declare's result read in place");

    /* 300 publishes pipelined, their confirms read as views. */
    enum { N = 300 };
    uint64_t first = 0;
    for (int i = 0; i < N; i++) {
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        const char *pk[] = {"exchange", "routing_key", "body", "content_type"};
        cbor_item_t *pv[] = {cbor_build_string(""), cbor_build_string(queue),
                             cbor_build_bytestring((cbor_data)body, strlen(body)), cbor_build_string("text/plain")};
        n = enc(pair_map(4, pk, pv), &b);
        if (ferry_send_cbor(f, "publish", b, n, 0, &id) != 0) {
            fprintf(stderr, "FAILED: publish %d\n", i);
            return 1;
        }
        free(b);
        if (i == 0)
            first = id;
    }
    int confirmed = 0;
    for (int i = 0; i < N; i++) {
        if (ferry_recv_view(f, &v, 10000) != 0 || v.kind != FERRY_RESPONSE || v.error || v.id < first ||
            v.id >= first + N)
            break;
        int c;
        if (ferry_cbor_map_get(v.result, v.result_len, "confirmed", &p, &pn) == 0 &&
            ferry_cbor_bool(p, pn, &c) == 0 && c)
            confirmed++;
    }
    CHECK(confirmed == N, "300 pipelined publishes confirmed, read as views");

    /* Consume: every push read in place, acked every 50 with CBOR bytes. */
    const char *ck[] = {"queue", "prefetch"};
    cbor_item_t *cv[] = {cbor_build_string(queue), cbor_build_uint16(100)};
    n = enc(pair_map(2, ck, cv), &b);
    uint64_t sub;
    CHECK(ferry_send_cbor(f, "consume", b, n, 0, &sub) == 0, "consume sent");
    free(b);
    view_ok(f, sub, &v, "consume");
    CHECK(ferry_cbor_map_get(v.result, v.result_len, "sub", &p, &pn) == 0 &&
              ferry_cbor_uint(p, pn, &id) == 0 && id == sub,
          "consume's result names the subscription");
    int in_order = 0, acks = 0, ack_errors = 0, typed = 0;
    for (int i = 0; i < N;) {
        if (i == 150) {
            /* A call in the middle parks the pushes that come before its
             * answer; they come out of ferry_recv_view() in order. */
            ferry_msg_t *m;
            if (ferry_call(f, "ping", NULL, 0, &m, 10000) != 0 || m->err_code) {
                fprintf(stderr, "FAILED: ping among deliveries\n");
                return 1;
            }
            ferry_msg_free(m);
        }
        int rc = ferry_recv_view(f, &v, 10000);
        if (rc != 0) {
            fprintf(stderr, "FAILED: delivery %d: %s\n", i, ferry_strerror(rc));
            return 1;
        }
        if (v.kind == FERRY_RESPONSE) {
            ack_errors += v.error != NULL;
            acks++;
            continue;
        }
        char want[16];
        snprintf(want, sizeof(want), "m%d", i);
        const uint8_t *body;
        size_t bn;
        uint64_t tag;
        int redelivered;
        if (v.sub == sub && v.push_kind_len == 8 && memcmp(v.push_kind, "delivery", 8) == 0 &&
            ferry_cbor_map_get(v.data, v.data_len, "body", &p, &pn) == 0 &&
            ferry_cbor_bytes(p, pn, &body, &bn) == 0 && bn == strlen(want) && memcmp(body, want, bn) == 0 &&
            ferry_cbor_map_get(v.data, v.data_len, "redelivered", &p, &pn) == 0 &&
            ferry_cbor_bool(p, pn, &redelivered) == 0 && !redelivered)
            in_order++;
        const uint8_t *props;
        size_t propn;
        if (ferry_cbor_map_get(v.data, v.data_len, "properties", &props, &propn) == 0 &&
            ferry_cbor_map_get(props, propn, "content_type", &p, &pn) == 0 &&
            ferry_cbor_text(p, pn, &s, &sn) == 0 && sn == 10 && memcmp(s, "text/plain", 10) == 0)
            typed++;
        i++;
        if (i % 50 == 0) {
            if (ferry_cbor_map_get(v.data, v.data_len, "delivery_tag", &p, &pn) != 0 ||
                ferry_cbor_uint(p, pn, &tag) != 0) {
                fprintf(stderr, "FAILED: delivery_tag of %d\n", i);
                return 1;
            }
            const char *ak[] = {"sub", "delivery_tag", "multiple"};
            cbor_item_t *av[] = {cbor_build_uint64(sub), cbor_build_uint64(tag), cbor_build_bool(true)};
            n = enc(pair_map(3, ak, av), &b);
            if (ferry_send_cbor(f, "ack", b, n, 0, NULL) != 0) {
                fprintf(stderr, "FAILED: ack %d\n", i);
                return 1;
            }
            free(b);
            /* The view stays valid across a send. */
            uint64_t again;
            if (ferry_cbor_map_get(v.data, v.data_len, "delivery_tag", &p, &pn) != 0 ||
                ferry_cbor_uint(p, pn, &again) != 0 || again != tag) {
                fprintf(stderr, "FAILED: the view changed across a send\n");
                return 1;
            }
        }
    }
    CHECK(in_order == N, "300 deliveries read in place, in order, bodies intact");
    CHECK(typed == N, "properties read in place (content_type)");
    while (acks < N / 50) {
        CHECK(ferry_recv_view(f, &v, 10000) == 0, "ack answered");
        if (v.kind == FERRY_RESPONSE) {
            ack_errors += v.error != NULL;
            acks++;
        }
    }
    CHECK(ack_errors == 0, "6 acks sent as CBOR bytes, all answered {}");

    /* An error response, as a view. */
    const char *bk[] = {"sub", "delivery_tag"};
    cbor_item_t *bv[] = {cbor_build_uint64(sub + 1000), cbor_build_uint8(1)};
    n = enc(pair_map(2, bk, bv), &b);
    CHECK(ferry_send_cbor(f, "ack", b, n, 0, &id) == 0, "ack on no subscription sent");
    free(b);
    CHECK(ferry_recv_view(f, &v, 10000) == 0 && v.kind == FERRY_RESPONSE && v.id == id && v.error &&
              !v.result && v.err_code_len == 11 && memcmp(v.err_code, "bad_request", 11) == 0 &&
              v.err_message_len > 0,
          "an error response read in place (bad_request)");

    /* Every message was acked: the queue is empty. */
    const char *xk[] = {"sub"};
    cbor_item_t *xv[] = {cbor_build_uint64(sub)};
    n = enc(pair_map(1, xk, xv), &b);
    CHECK(ferry_send_cbor(f, "cancel", b, n, 0, &id) == 0, "cancel sent");
    free(b);
    view_ok(f, id, &v, "cancel");
    const char *qk[] = {"queue", "if_empty"};
    cbor_item_t *qv[] = {cbor_build_string(queue), cbor_build_bool(true)};
    n = enc(pair_map(2, qk, qv), &b);
    CHECK(ferry_send_cbor(f, "queue.delete", b, n, 0, &id) == 0, "queue.delete sent");
    free(b);
    view_ok(f, id, &v, "queue.delete");
    uint64_t left;
    CHECK(ferry_cbor_map_get(v.result, v.result_len, "message_count", &p, &pn) == 0 &&
              ferry_cbor_uint(p, pn, &left) == 0 && left == 0,
          "the queue was empty when deleted: every delivery acked");
    ferry_close(f);
    printf("libferry_check: all checks passed\n");
    return 0;
}


/* The value of key in map m, or NULL. */
static const cbor_item_t *get_key(const cbor_item_t *m, const char *key)
{
    if (!m || !cbor_isa_map(m))
        return NULL;
    struct cbor_pair *p = cbor_map_handle(m);
    for (size_t i = 0; i < cbor_map_size(m); i++)
        if (cbor_isa_string(p[i].key) && cbor_string_length(p[i].key) == strlen(key) &&
            !memcmp(cbor_string_handle(p[i].key), key, strlen(key)))
            return p[i].value;
    return NULL;
}

/* Calls op with a map of n text keys; returns the answer (caller frees). */
static ferry_msg_t *call_map(ferry_t *f, const char *op, int n, const char **keys, cbor_item_t **vals)
{
    cbor_item_t *args = pair_map(n, keys, vals);
    ferry_msg_t *m = NULL;
    int rc = ferry_call(f, op, args, 5000, &m, 10000);
    cbor_decref(&args);
    if (rc != 0) {
        fprintf(stderr, "FAILED: %s: %s\n", op, ferry_strerror(rc));
        exit(1);
    }
    return m;
}

/* The patterns' ops need nothing of libferry but ferry_call and pushes. */
static int patterns_checks(const char *sock)
{
    int err;
    ferry_t *f = ferry_connect(sock, &err);
    CHECK(f != NULL, "connect");

    const char *lk[] = {"name", "ttl_ms"};
    cbor_item_t *lv[] = {cbor_build_string("libferry-lock"), cbor_build_uint32(10000)};
    ferry_msg_t *m = call_map(f, "lock.acquire", 2, lk, lv);
    const cbor_item_t *tok = get_key(m->result, "token"), *fence = get_key(m->result, "fence");
    CHECK(!m->err_code && tok && cbor_isa_string(tok) && fence && cbor_isa_uint(fence), "lock.acquire gives a token and a fence");
    char token[64];
    snprintf(token, sizeof(token), "%.*s", (int)cbor_string_length(tok), (const char *)cbor_string_handle(tok));
    ferry_msg_free(m);
    const char *rk[] = {"name", "token"};
    cbor_item_t *rv[] = {cbor_build_string("libferry-lock"), cbor_build_string("0123456789abcdef0123456789abcdef")};
    m = call_map(f, "lock.release", 2, rk, rv);
    CHECK(m->err_code && !strcmp(m->err_code, "not_held"), "lock.release with another token: not_held");
    ferry_msg_free(m);
    cbor_item_t *rv2[] = {cbor_build_string("libferry-lock"), cbor_build_string(token)};
    m = call_map(f, "lock.release", 2, rk, rv2);
    CHECK(!m->err_code, "lock.release with its token");
    ferry_msg_free(m);

    const char *sk[] = {"channels"};
    cbor_item_t *chans = cbor_new_definite_array(1);
    (void)cbor_array_push(chans, cbor_move(cbor_build_string("libferry-ch")));
    cbor_item_t *sv[] = {chans};
    m = call_map(f, "pubsub.subscribe", 1, sk, sv);
    const cbor_item_t *sub = get_key(m->result, "sub");
    CHECK(!m->err_code && sub && cbor_isa_uint(sub), "pubsub.subscribe gives a subscription");
    uint64_t subid = cbor_get_int(sub);
    ferry_msg_free(m);
    const char *pk[] = {"channel", "message"};
    cbor_item_t *pv[] = {cbor_build_string("libferry-ch"), cbor_build_string("hi")};
    m = call_map(f, "pubsub.publish", 2, pk, pv);
    CHECK(!m->err_code && cbor_isa_uint(get_key(m->result, "receivers")), "pubsub.publish");
    ferry_msg_free(m);
    CHECK(ferry_recv(f, &m, 10000) == 0 && m->kind == FERRY_PUSH && m->sub == subid &&
              !strcmp(m->push_kind, "message"),
          "the message comes as a push of the subscription");
    const cbor_item_t *payload = get_key(m->data, "payload");
    CHECK(payload && cbor_isa_bytestring(payload) && cbor_bytestring_length(payload) == 2, "its payload");
    ferry_msg_free(m);

    ferry_close(f);
    printf("all checks passed\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[2], "patterns") == 0)
        return patterns_checks(argv[1]);
    if (argc == 4 && strcmp(argv[2], "amqp") == 0)
        return amqp_checks(argv[1], argv[3]);
    if (argc != 2) {
        fprintf(stderr, "usage: libferry_check SOCKET [amqp QUEUE | patterns]\n");
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

    /* The same pipelining with views: responses read in place. */
    const char *get2[] = {"GET", "libferry:n"};
    for (int i = 0; i < 500; i++)
        if (ferry_send_redis(f, 2, i % 2 ? get2 : incr, NULL, 0, &id) != 0) {
            fprintf(stderr, "FAILED: send %d\n", i);
            return 1;
        }
    int incrs = 0, gets = 0;
    for (int i = 0; i < 500; i++) {
        ferry_view_t v;
        uint64_t x;
        const uint8_t *b;
        size_t bn;
        if (ferry_recv_view(f, &v, 10000) != 0 || v.kind != FERRY_RESPONSE || v.error || !v.result) {
            fprintf(stderr, "FAILED: view %d\n", i);
            return 1;
        }
        if (ferry_cbor_uint(v.result, v.result_len, &x) == 0 && x > 1000 && x <= 1250)
            incrs++;
        else if (ferry_cbor_bytes(v.result, v.result_len, &b, &bn) == 0 && bn == 4)
            gets++;
    }
    CHECK(incrs == 250 && gets == 250, "500 pipelined responses read as views");
    ferry_view_t ev;
    uint64_t bad_id;
    CHECK(ferry_send_redis(f, 1, bad, NULL, 0, &bad_id) == 0 && ferry_recv_view(f, &ev, 10000) == 0 &&
              ev.id == bad_id && ev.error && ev.err_code_len == 6 && memcmp(ev.err_code, "denied", 6) == 0,
          "a denied command's error read in place");

    /* Timeouts on the client side. */
    CHECK(ferry_recv(f, &m, 50) == FERRY_ETIMEDOUT, "recv times out when nothing is due");
    ferry_view_t tv;
    CHECK(ferry_recv_view(f, &tv, 50) == FERRY_ETIMEDOUT, "recv_view times out too");
    ferry_close(f);
    printf("libferry_check: all checks passed\n");
    return 0;
}
