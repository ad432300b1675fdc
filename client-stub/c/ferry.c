/* ferry.c: libferry; see ferry.h. Blocking I/O on one Unix socket, with
 * poll() for timeouts. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"

struct parked {
    struct parked *next;
    ferry_msg_t *msg;
};

struct ferry {
    int fd;
    uint64_t next_id;
    uint8_t *in;      /* bytes read, not yet decoded */
    size_t in_len, in_cap;
    uint8_t *out;     /* scratch for encoding requests */
    size_t out_cap;
    struct parked *parked_head, *parked_tail; /* responses read early */
    ferry_push_fn push_fn;
    void *push_arg;
    char traceparent[64];  /* "" when none */
    char tracestate[512];
};

const char *ferry_strerror(int code)
{
    switch (code) {
    case FERRY_OK: return "ok";
    case FERRY_EIO: return strerror(errno);
    case FERRY_ECLOSED: return "ferryd closed the connection";
    case FERRY_ETIMEDOUT: return "timed out waiting for ferryd";
    case FERRY_EPROTO: return "ferryd sent a malformed frame";
    case FERRY_EINVAL: return "invalid argument";
    default: return "unknown error";
    }
}

ferry_t *ferry_connect(const char *path, int *err)
{
    if (!path)
        path = getenv("FERRY_SOCKET");
    if (!path)
        path = FERRY_DEFAULT_SOCKET;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        if (err)
            *err = FERRY_EINVAL;
        return NULL;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        errno = e;
        if (err)
            *err = FERRY_EIO;
        return NULL;
    }
    ferry_t *f = calloc(1, sizeof(*f));
    if (!f) {
        close(fd);
        if (err)
            *err = FERRY_EIO;
        return NULL;
    }
    f->fd = fd;
    f->next_id = 1;
    return f;
}

void ferry_close(ferry_t *f)
{
    if (!f)
        return;
    while (f->parked_head) {
        struct parked *p = f->parked_head;
        f->parked_head = p->next;
        ferry_msg_free(p->msg);
        free(p);
    }
    close(f->fd);
    free(f->in);
    free(f->out);
    free(f);
}

int ferry_fd(const ferry_t *f) { return f->fd; }

void ferry_set_trace(ferry_t *f, const char *traceparent, const char *tracestate)
{
    snprintf(f->traceparent, sizeof(f->traceparent), "%s", traceparent ? traceparent : "");
    snprintf(f->tracestate, sizeof(f->tracestate), "%s", tracestate ? tracestate : "");
}

void ferry_set_push_handler(ferry_t *f, ferry_push_fn fn, void *arg)
{
    f->push_fn = fn;
    f->push_arg = arg;
}

/* ---- encoding ---- */

/* A tiny bounded writer over libcbor's encoders. */
struct w {
    uint8_t *p;
    size_t cap, len;
    int full;
};

static void w_put(struct w *w, size_t n, const void *src)
{
    if (w->full || w->cap - w->len < n) {
        w->full = 1;
        return;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

#define W_ENC(w, call)                                                \
    do {                                                              \
        if (!(w)->full) {                                             \
            size_t n_ = (w)->len <= (w)->cap ? call : 0;              \
            if (n_ == 0)                                              \
                (w)->full = 1;                                        \
            (w)->len += n_;                                           \
        }                                                             \
    } while (0)
#define WB(w) ((w)->p + (w)->len), ((w)->cap - (w)->len)

static void w_text(struct w *w, const char *s)
{
    size_t n = strlen(s);
    W_ENC(w, cbor_encode_string_start(n, WB(w)));
    w_put(w, n, s);
}

static size_t finish(struct w *w)
{
    if (w->full)
        return 0;
    size_t n = w->len - 4;
    w->p[0] = (uint8_t)(n >> 24);
    w->p[1] = (uint8_t)(n >> 16);
    w->p[2] = (uint8_t)(n >> 8);
    w->p[3] = (uint8_t)n;
    return w->len;
}

static void w_head(struct w *w, uint64_t id, const char *op, int has_args, uint32_t deadline_ms, const char *tp,
                   const char *ts)
{
    w->len = 4;
    w->full = w->cap < 4;
    int ntrace = (tp && *tp) + (ts && *ts);
    W_ENC(w, cbor_encode_map_start(2 + (has_args ? 1 : 0) + (deadline_ms ? 1 : 0) + (size_t)ntrace, WB(w)));
    if (tp && *tp) {
        w_text(w, "traceparent");
        w_text(w, tp);
    }
    if (ts && *ts) {
        w_text(w, "tracestate");
        w_text(w, ts);
    }
    w_text(w, "id");
    W_ENC(w, cbor_encode_uint(id, WB(w)));
    w_text(w, "op");
    w_text(w, op);
    if (deadline_ms) {
        w_text(w, "deadline");
        W_ENC(w, cbor_encode_uint(deadline_ms, WB(w)));
    }
}

static size_t frame_request(uint8_t *buf, size_t cap, uint64_t id, const char *op, const uint8_t *args_cbor,
                            size_t args_len, uint32_t deadline_ms, const char *tp, const char *ts)
{
    struct w w = {.p = buf, .cap = cap};
    w_head(&w, id, op, args_cbor != NULL, deadline_ms, tp, ts);
    if (args_cbor) {
        w_text(&w, "args");
        w_put(&w, args_len, args_cbor);
    }
    return finish(&w);
}

size_t ferry_frame_request(uint8_t *buf, size_t cap, uint64_t id, const char *op,
                           const uint8_t *args_cbor, size_t args_len, uint32_t deadline_ms)
{
    return frame_request(buf, cap, id, op, args_cbor, args_len, deadline_ms, NULL, NULL);
}

static size_t frame_redis(uint8_t *buf, size_t cap, uint64_t id, int argc, const char *const *argv,
                          const size_t *lens, uint32_t deadline_ms, const char *tp, const char *ts)
{
    struct w w = {.p = buf, .cap = cap};
    w_head(&w, id, "redis", 1, deadline_ms, tp, ts);
    w_text(&w, "args");
    W_ENC(&w, cbor_encode_array_start((size_t)argc, WB(&w)));
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        W_ENC(&w, cbor_encode_bytestring_start(n, WB(&w)));
        w_put(&w, n, argv[i]);
    }
    return finish(&w);
}

size_t ferry_frame_redis(uint8_t *buf, size_t cap, uint64_t id, int argc, const char *const *argv,
                         const size_t *lens, uint32_t deadline_ms)
{
    return frame_redis(buf, cap, id, argc, argv, lens, deadline_ms, NULL, NULL);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errno == EPIPE || errno == ECONNRESET ? FERRY_ECLOSED : FERRY_EIO;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Encodes with a growing scratch buffer until the frame fits. */
static int send_encoded(ferry_t *f, size_t (*enc)(ferry_t *, void *), void *ctx)
{
    for (;;) {
        size_t n = f->out ? enc(f, ctx) : 0;
        if (n)
            return write_all(f->fd, f->out, n);
        size_t cap = f->out_cap ? f->out_cap * 2 : 4096;
        uint8_t *p = realloc(f->out, cap);
        if (!p)
            return FERRY_EIO;
        f->out = p;
        f->out_cap = cap;
    }
}

struct req_ctx {
    uint64_t id;
    const char *op;
    unsigned char *args;
    size_t args_len;
    uint32_t deadline;
    int argc;
    const char *const *argv;
    const size_t *lens;
};

static size_t enc_req(ferry_t *f, void *p)
{
    struct req_ctx *c = p;
    return frame_request(f->out, f->out_cap, c->id, c->op, c->args, c->args_len, c->deadline, f->traceparent,
                         f->tracestate);
}

static size_t enc_redis(ferry_t *f, void *p)
{
    struct req_ctx *c = p;
    return frame_redis(f->out, f->out_cap, c->id, c->argc, c->argv, c->lens, c->deadline, f->traceparent,
                       f->tracestate);
}

int ferry_send(ferry_t *f, const char *op, const cbor_item_t *args, uint32_t deadline_ms, uint64_t *id)
{
    if (!f || !op)
        return FERRY_EINVAL;
    struct req_ctx c = {.id = f->next_id++, .op = op, .deadline = deadline_ms};
    size_t bufsize = 0;
    if (args) {
        c.args_len = cbor_serialize_alloc((cbor_item_t *)args, &c.args, &bufsize);
        if (c.args_len == 0)
            return FERRY_EINVAL;
    }
    int rc = send_encoded(f, enc_req, &c);
    free(c.args);
    if (rc == 0 && id)
        *id = c.id;
    return rc;
}

int ferry_send_redis(ferry_t *f, int argc, const char *const *argv, const size_t *lens,
                     uint32_t deadline_ms, uint64_t *id)
{
    if (!f || argc < 1 || !argv)
        return FERRY_EINVAL;
    struct req_ctx c = {.id = f->next_id++, .deadline = deadline_ms, .argc = argc, .argv = argv,
                        .lens = lens};
    int rc = send_encoded(f, enc_redis, &c);
    if (rc == 0 && id)
        *id = c.id;
    return rc;
}

/* ---- decoding ---- */

void ferry_msg_free(ferry_msg_t *m)
{
    if (!m)
        return;
    if (m->root)
        cbor_decref(&m->root);
    free(m->strings);
    free(m);
}

static cbor_item_t *map_get(cbor_item_t *map, const char *key)
{
    size_t n = cbor_map_size(map);
    struct cbor_pair *pairs = cbor_map_handle(map);
    size_t kl = strlen(key);
    for (size_t i = 0; i < n; i++) {
        cbor_item_t *k = pairs[i].key;
        if (cbor_isa_string(k) && cbor_string_is_definite(k) && cbor_string_length(k) == kl &&
            memcmp(cbor_string_handle(k), key, kl) == 0)
            return pairs[i].value;
    }
    return NULL;
}

/* Copies a text item into the message's string block. */
static const char *keep_text(cbor_item_t *it, char **block, size_t *used, size_t cap)
{
    if (!it || !cbor_isa_string(it) || !cbor_string_is_definite(it))
        return "";
    size_t n = cbor_string_length(it);
    if (*used + n + 1 > cap)
        return "";
    char *dst = *block + *used;
    memcpy(dst, cbor_string_handle(it), n);
    dst[n] = '\0';
    *used += n + 1;
    return dst;
}

int ferry_msg_decode(const uint8_t *body, size_t len, ferry_msg_t **out)
{
    struct cbor_load_result res;
    cbor_item_t *root = cbor_load(body, len, &res);
    if (!root)
        return FERRY_EPROTO;
    if (res.read != len || !cbor_isa_map(root) || !cbor_map_is_definite(root)) {
        cbor_decref(&root);
        return FERRY_EPROTO;
    }
    size_t cap = len + 8, used = 0;
    ferry_msg_t *m = calloc(1, sizeof(*m));
    char *strings = malloc(cap);
    if (!m || !strings) {
        cbor_decref(&root);
        free(m);
        free(strings);
        return FERRY_EIO;
    }
    m->strings = strings;
    m->root = root;
    cbor_item_t *id = map_get(root, "id");
    cbor_item_t *sub = map_get(root, "sub");
    if (sub && !id) {
        m->kind = FERRY_PUSH;
        m->sub = cbor_isa_uint(sub) ? cbor_get_int(sub) : 0;
        m->push_kind = keep_text(map_get(root, "kind"), &m->strings, &used, cap);
        m->data = map_get(root, "data");
        cbor_item_t *tp = map_get(root, "traceparent");
        m->traceparent = tp ? keep_text(tp, &m->strings, &used, cap) : NULL;
        *out = m;
        return 0;
    }
    m->kind = FERRY_RESPONSE;
    if (id && cbor_isa_uint(id)) {
        m->has_id = 1;
        m->id = cbor_get_int(id);
    }
    cbor_item_t *err = map_get(root, "error");
    if (err && cbor_isa_map(err)) {
        m->err_code = keep_text(map_get(err, "code"), &m->strings, &used, cap);
        m->err_message = keep_text(map_get(err, "message"), &m->strings, &used, cap);
    } else {
        m->result = map_get(root, "result");
        if (!m->result) {
            ferry_msg_free(m);
            return FERRY_EPROTO;
        }
    }
    *out = m;
    return 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads the next frame off the socket, waiting up to timeout_ms. */
static int read_frame(ferry_t *f, ferry_msg_t **out, int timeout_ms)
{
    long long until = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        if (f->in_len >= 4) {
            size_t n = ((size_t)f->in[0] << 24) | ((size_t)f->in[1] << 16) | ((size_t)f->in[2] << 8) | f->in[3];
            if (f->in_len >= 4 + n) {
                int rc = ferry_msg_decode(f->in + 4, n, out);
                memmove(f->in, f->in + 4 + n, f->in_len - 4 - n);
                f->in_len -= 4 + n;
                return rc;
            }
            if (f->in_cap < 4 + n) {
                uint8_t *p = realloc(f->in, 4 + n);
                if (!p)
                    return FERRY_EIO;
                f->in = p;
                f->in_cap = 4 + n;
            }
        }
        if (f->in_cap - f->in_len < 65536) {
            uint8_t *p = realloc(f->in, f->in_cap + 65536);
            if (!p)
                return FERRY_EIO;
            f->in = p;
            f->in_cap += 65536;
        }
        if (timeout_ms >= 0) {
            long long left = until - now_ms();
            struct pollfd pfd = {.fd = f->fd, .events = POLLIN};
            int pr = poll(&pfd, 1, left < 0 ? 0 : (int)left);
            if (pr < 0 && errno != EINTR)
                return FERRY_EIO;
            if (pr == 0)
                return FERRY_ETIMEDOUT;
            if (pr < 0)
                continue;
        }
        ssize_t k = recv(f->fd, f->in + f->in_len, f->in_cap - f->in_len, 0);
        if (k == 0)
            return FERRY_ECLOSED;
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errno == ECONNRESET ? FERRY_ECLOSED : FERRY_EIO;
        }
        f->in_len += (size_t)k;
    }
}

/* Next response or (when no handler) push, from the socket only. */
static int next_msg(ferry_t *f, ferry_msg_t **out, int timeout_ms)
{
    for (;;) {
        ferry_msg_t *m;
        int rc = read_frame(f, &m, timeout_ms);
        if (rc)
            return rc;
        if (m->kind == FERRY_PUSH && f->push_fn) {
            f->push_fn(m, f->push_arg);
            ferry_msg_free(m);
            continue;
        }
        *out = m;
        return 0;
    }
}

int ferry_recv(ferry_t *f, ferry_msg_t **out, int timeout_ms)
{
    if (f->parked_head) {
        struct parked *p = f->parked_head;
        f->parked_head = p->next;
        if (!f->parked_head)
            f->parked_tail = NULL;
        *out = p->msg;
        free(p);
        return 0;
    }
    return next_msg(f, out, timeout_ms);
}

static int wait_for(ferry_t *f, uint64_t id, ferry_msg_t **out, int timeout_ms)
{
    long long until = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    struct parked *prev = NULL;
    for (struct parked *p = f->parked_head; p; prev = p, p = p->next) {
        if (p->msg->kind == FERRY_RESPONSE && p->msg->has_id && p->msg->id == id) {
            if (prev)
                prev->next = p->next;
            else
                f->parked_head = p->next;
            if (f->parked_tail == p)
                f->parked_tail = prev;
            *out = p->msg;
            free(p);
            return 0;
        }
    }
    for (;;) {
        int left = -1;
        if (until >= 0) {
            long long l = until - now_ms();
            left = l < 0 ? 0 : (int)l;
        }
        ferry_msg_t *m;
        int rc = next_msg(f, &m, left);
        if (rc)
            return rc;
        /* A frame without an id is a connection-level error: it answers
         * whatever we are waiting for. */
        if (m->kind == FERRY_RESPONSE && (!m->has_id || m->id == id)) {
            *out = m;
            return 0;
        }
        struct parked *p = malloc(sizeof(*p));
        if (!p) {
            ferry_msg_free(m);
            return FERRY_EIO;
        }
        p->msg = m;
        p->next = NULL;
        if (f->parked_tail)
            f->parked_tail->next = p;
        else
            f->parked_head = p;
        f->parked_tail = p;
    }
}

int ferry_call(ferry_t *f, const char *op, const cbor_item_t *args, uint32_t deadline_ms,
               ferry_msg_t **out, int timeout_ms)
{
    uint64_t id;
    int rc = ferry_send(f, op, args, deadline_ms, &id);
    return rc ? rc : wait_for(f, id, out, timeout_ms);
}

int ferry_call_redis(ferry_t *f, int argc, const char *const *argv, const size_t *lens,
                     uint32_t deadline_ms, ferry_msg_t **out, int timeout_ms)
{
    uint64_t id;
    int rc = ferry_send_redis(f, argc, argv, lens, deadline_ms, &id);
    return rc ? rc : wait_for(f, id, out, timeout_ms);
}
