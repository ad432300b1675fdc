/* ferry.h: libferry, the C client for ferryd.
 *
 * A connection carries many requests at once (pipelining): ferry_send()
 * returns at once with the request's id, and responses come back through
 * ferry_recv() in whatever order the daemon finishes them. ferry_call() is
 * the one-request-at-a-time convenience on top. Push frames (subscription
 * deliveries) go to the handler set with ferry_set_push_handler(), or come
 * out of ferry_recv() when none is set.
 *
 * Values are libcbor items (cbor.h). A consumer of many pushes can skip
 * the trees and read each frame in place instead: ferry_recv_view() and
 * the ferry_cbor_*() readers ("Frames in place", below). The wire protocol
 * is in docs/protocol.md; nothing here is needed to speak it.
 *
 * Errors: functions return 0 or a negative FERRY_E* code; ferry_strerror()
 * names it. A connection is not thread-safe: use one per thread.
 *
 *     ferry_t *f = ferry_connect(NULL, NULL);   // $FERRY_SOCKET, else the default
 *     const char *argv[] = {"GET", "k"};
 *     ferry_msg_t *m;
 *     // 1000 ms deadline at the daemon, wait up to 2000 ms for the answer
 *     if (f && ferry_call_redis(f, 2, argv, NULL, 1000, &m, 2000) == 0) {
 *         if (!m->err_code)
 *             ... cbor_bytestring_handle(m->result) ...
 *         ferry_msg_free(m);
 *     }
 *     ferry_close(f);
 *
 * A whole program, and how to build it, is in README.md ("From code").
 */
#ifndef LIBFERRY_FERRY_H
#define LIBFERRY_FERRY_H

#include <stddef.h>
#include <stdint.h>

#include <cbor.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_PROTOCOL 1
#define FERRY_DEFAULT_SOCKET "/run/ferry/ferry.sock"

enum {
    FERRY_OK = 0,
    FERRY_EIO = -1,       /* a socket call failed; errno says why */
    FERRY_ECLOSED = -2,   /* the daemon closed the connection */
    FERRY_ETIMEDOUT = -3, /* nothing arrived within the timeout */
    FERRY_EPROTO = -4,    /* the daemon sent something that is not a frame */
    FERRY_EINVAL = -5,    /* a bad argument */
    FERRY_ENOENT = -6,    /* ferry_cbor_map_get: the map has no such key */
};

typedef struct ferry ferry_t;

enum ferry_msg_kind {
    FERRY_RESPONSE = 1, /* a response: id, then result or err_code */
    FERRY_PUSH = 2,     /* a push: sub, push_kind, data, traceparent */
};

typedef struct ferry_msg {
    enum ferry_msg_kind kind;
    int has_id;              /* 0 for a connection-level error */
    uint64_t id;
    cbor_item_t *result;     /* borrowed from root; NULL on error */
    const char *err_code;    /* NULL on success; else e.g. "timeout" */
    const char *err_message;
    uint64_t sub;
    const char *push_kind;
    cbor_item_t *data;       /* borrowed from root */
    const char *traceparent; /* a push's trace context, or NULL */
    cbor_item_t *root;       /* owns the decoded frame */
    char *strings;           /* owns err_code, err_message, push_kind, traceparent */
} ferry_msg_t;

typedef void (*ferry_push_fn)(const ferry_msg_t *push, void *arg);

/* Connects to the daemon at path (NULL: $FERRY_SOCKET, then the default).
 * Returns NULL with *err set (if err is not NULL) on failure. */
ferry_t *ferry_connect(const char *path, int *err);
void ferry_close(ferry_t *f);
/* The socket, for poll()/epoll integration: readable means ferry_recv()
 * can make progress. */
int ferry_fd(const ferry_t *f);
void ferry_set_push_handler(ferry_t *f, ferry_push_fn fn, void *arg);
/* W3C trace context sent with every following request (NULL: none), so
 * ferryd's spans join the application's trace. */
void ferry_set_trace(ferry_t *f, const char *traceparent, const char *tracestate);

/* Sends one request. args may be NULL; deadline_ms 0 means the daemon's
 * default. *id gets the request id. */
int ferry_send(ferry_t *f, const char *op, const cbor_item_t *args, uint32_t deadline_ms, uint64_t *id);
/* Sends a redis command: argv[i] of lens[i] bytes (lens NULL: strlen). */
int ferry_send_redis(ferry_t *f, int argc, const char *const *argv, const size_t *lens,
                     uint32_t deadline_ms, uint64_t *id);
/* Waits up to timeout_ms (-1: forever) for the next response (or push,
 * when no handler is set). *out must be freed with ferry_msg_free(). */
int ferry_recv(ferry_t *f, ferry_msg_t **out, int timeout_ms);
/* Sends and waits for that request's response; responses to other
 * requests that arrive meanwhile are kept for ferry_recv() (or
 * ferry_recv_view()). */
int ferry_call(ferry_t *f, const char *op, const cbor_item_t *args, uint32_t deadline_ms,
               ferry_msg_t **out, int timeout_ms);
int ferry_call_redis(ferry_t *f, int argc, const char *const *argv, const size_t *lens,
                     uint32_t deadline_ms, ferry_msg_t **out, int timeout_ms);
void ferry_msg_free(ferry_msg_t *m);
const char *ferry_strerror(int code);

/* Frame builders, for stubs and load generators that do their own I/O.
 * Each writes one whole frame (length prefix included) into buf and
 * returns its length, or 0 when cap is too small. */
size_t ferry_frame_request(uint8_t *buf, size_t cap, uint64_t id, const char *op,
                           const uint8_t *args_cbor, size_t args_len, uint32_t deadline_ms);
size_t ferry_frame_redis(uint8_t *buf, size_t cap, uint64_t id, int argc, const char *const *argv,
                         const size_t *lens, uint32_t deadline_ms);
/* Decodes one frame body (without its length prefix). */
int ferry_msg_decode(const uint8_t *body, size_t len, ferry_msg_t **out);

/* ---- Frames in place ----
 *
 * The calls above build a libcbor tree for every frame. A consumer that
 * takes many pushes can instead look at each frame where it lies in the
 * connection's receive buffer: ferry_recv_view() fills a ferry_view_t
 * whose pointers locate the frame's fields in place (nothing is allocated
 * or copied), and the ferry_cbor_*() readers below take the fields a
 * consumer needs out of the CBOR bytes of data or result:
 *
 *     ferry_view_t v;
 *     while (ferry_recv_view(f, &v, -1) == 0) {
 *         const uint8_t *p, *body;
 *         size_t n, body_len;
 *         uint64_t tag;
 *         if (v.kind != FERRY_PUSH)
 *             continue;                          // a response, to a request of ours
 *         if (ferry_cbor_map_get(v.data, v.data_len, "body", &p, &n) == 0 &&
 *             ferry_cbor_bytes(p, n, &body, &body_len) == 0 &&
 *             ferry_cbor_map_get(v.data, v.data_len, "delivery_tag", &p, &n) == 0 &&
 *             ferry_cbor_uint(p, n, &tag) == 0)
 *             ... handle body, then ack tag (ferry_send_cbor) ...
 *     }
 *
 * A view is valid until the next ferry_recv(), ferry_recv_view(),
 * ferry_call*() or ferry_close() on its connection; sending (ferry_send*())
 * leaves it alone, so a push can be acked while it is looked at. Strings in
 * a view are not NUL-terminated: each has its length. Views and trees can
 * be mixed on one connection; either kind of call takes the frames in the
 * order they came. */
typedef struct ferry_view {
    enum ferry_msg_kind kind;
    int has_id;                /* 0 for a connection-level error or a push */
    uint64_t id;
    const uint8_t *result;     /* a response's result (CBOR); NULL on error */
    size_t result_len;
    const uint8_t *error;      /* a response's error map (CBOR), or NULL */
    size_t error_len;
    const char *err_code;      /* the error's code, or NULL */
    size_t err_code_len;
    const char *err_message;   /* the error's message, or NULL */
    size_t err_message_len;
    uint64_t sub;              /* a push's subscription */
    const char *push_kind;     /* e.g. "delivery" (push_kind_len bytes) */
    size_t push_kind_len;
    const uint8_t *data;       /* a push's data (CBOR), or NULL */
    size_t data_len;
    const char *traceparent;   /* a push's trace context, or NULL */
    size_t traceparent_len;
    const uint8_t *body;       /* the whole frame body (CBOR, no length prefix) */
    size_t body_len;
    void *reserved[4];         /* for fields of later versions; zeroed */
} ferry_view_t;

typedef void (*ferry_push_view_fn)(const ferry_view_t *push, void *arg);

/* Waits up to timeout_ms (-1: forever) for the next frame, response or
 * push, and locates its fields in *v. Pushes go to a push handler instead
 * when one is set (the view handler first, else the tree handler). A frame
 * that is not well-formed is FERRY_EPROTO, and is skipped. */
int ferry_recv_view(ferry_t *f, ferry_view_t *v, int timeout_ms);
/* Locates the fields of one frame body (without its length prefix) that
 * the caller holds; *v points into body. 0 or FERRY_EPROTO. */
int ferry_view_decode(const uint8_t *body, size_t len, ferry_view_t *v);
/* A push handler that gets views: while it is set, it takes every push
 * that any receiving call meets (including ferry_call() waiting for its
 * response), and the tree handler is not called. NULL removes it. The view
 * is valid during the call. */
void ferry_set_push_view_handler(ferry_t *f, ferry_push_view_fn fn, void *arg);
/* ferry_send() with args already encoded as one CBOR item (args NULL: no
 * args). The bytes are sent as they are: they must be one well-formed item. */
int ferry_send_cbor(ferry_t *f, const char *op, const uint8_t *args, size_t args_len, uint32_t deadline_ms,
                    uint64_t *id);

/* In-place CBOR readers. Each takes p, the start of one CBOR item, and len,
 * the bytes available from there (which may run past the item), and
 * returns 0, or FERRY_EPROTO when the item is malformed, truncated or not
 * of the type asked for. Strings are pointed to, not copied; only
 * definite-length strings are read (ferryd writes no other kind). */
/* *item_len: the length of the whole item at p (nested items included;
 * indefinite-length items are understood, nested at most 64 deep). */
int ferry_cbor_skip(const uint8_t *p, size_t len, size_t *item_len);
/* Finds key (text) in the map at p: *val and *val_len locate its value.
 * FERRY_ENOENT when the map has no such key; the first one counts when a
 * key is repeated. Other keys' values are skipped, not read. */
int ferry_cbor_map_get(const uint8_t *p, size_t len, const char *key, const uint8_t **val, size_t *val_len);
int ferry_cbor_uint(const uint8_t *p, size_t len, uint64_t *v);
int ferry_cbor_bool(const uint8_t *p, size_t len, int *v);
int ferry_cbor_text(const uint8_t *p, size_t len, const char **s, size_t *n);
int ferry_cbor_bytes(const uint8_t *p, size_t len, const uint8_t **s, size_t *n);

#ifdef __cplusplus
}
#endif

#endif
