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

/* A frame read while ferry_call() waited for another: its body, copied,
 * and what wait_for() matches on. */
struct parked {
    struct parked *next;
    int is_response, has_id;
    uint64_t id;
    size_t len;
    uint8_t body[];
};

struct ferry {
    int fd;
    uint64_t next_id;
    uint8_t *in;      /* bytes read; those from in_off on not yet taken */
    size_t in_off, in_len, in_cap;
    int in_full;      /* the last recv() filled the room it had */
    struct parked *held; /* the parked frame the last view points into */
    uint8_t *out;     /* scratch for encoding requests */
    size_t out_cap;
    struct parked *parked_head, *parked_tail; /* responses read early */
    ferry_push_fn push_fn;
    void *push_arg;
    ferry_push_view_fn push_view_fn;
    void *push_view_arg;
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
    case FERRY_ENOENT: return "no such key";
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
    f->in_full = 1;
    return f;
}

void ferry_close(ferry_t *f)
{
    if (!f)
        return;
    while (f->parked_head) {
        struct parked *p = f->parked_head;
        f->parked_head = p->next;
        free(p);
    }
    free(f->held);
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

void ferry_set_push_view_handler(ferry_t *f, ferry_push_view_fn fn, void *arg)
{
    f->push_view_fn = fn;
    f->push_view_arg = arg;
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

int ferry_send_cbor(ferry_t *f, const char *op, const uint8_t *args, size_t args_len, uint32_t deadline_ms,
                    uint64_t *id)
{
    if (!f || !op || (args && args_len == 0))
        return FERRY_EINVAL;
    struct req_ctx c = {.id = f->next_id++, .op = op, .args = (unsigned char *)args, .args_len = args_len,
                        .deadline = deadline_ms};
    int rc = send_encoded(f, enc_req, &c);
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

/* ---- in-place CBOR ---- */

/* The head of the item at p: its major type, its argument (a length, a
 * count or a value), and whether it is indefinite-length. Returns the
 * head's length, or 0 when it is truncated or not well-formed. */
static size_t cb_head(const uint8_t *p, size_t len, int *major, uint64_t *val, int *indef)
{
    if (len == 0)
        return 0;
    unsigned ai = p[0] & 0x1f;
    *major = p[0] >> 5;
    *indef = 0;
    if (ai < 24) {
        *val = ai;
        return 1;
    }
    if (ai == 31) {
        /* Strings, arrays and maps only; a lone 0xff ("break") is no item. */
        if (*major < 2 || *major > 5)
            return 0;
        *indef = 1;
        *val = 0;
        return 1;
    }
    if (ai > 27)
        return 0;
    size_t n = (size_t)1 << (ai - 24);
    if (len - 1 < n)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[1 + i];
    *val = v;
    return 1 + n;
}

#define CB_MAX_DEPTH 64

static int cb_skip(const uint8_t *p, size_t len, int depth, size_t *out);

/* One indefinite-length item at p (its head is one byte). */
static int cb_skip_indef(const uint8_t *p, size_t len, int depth, size_t *out)
{
    int major = p[0] >> 5;
    size_t at = 1;
    if (depth > CB_MAX_DEPTH)
        return FERRY_EPROTO;
    for (size_t k = 0;; k++) {
        if (at >= len)
            return FERRY_EPROTO;
        if (p[at] == 0xff) {
            if (major == 5 && (k & 1))
                return FERRY_EPROTO; /* a key without its value */
            *out = at + 1;
            return 0;
        }
        size_t n;
        if (major <= 3) {
            /* Strings: chunks, each a definite string of the same type. */
            int cm, ci;
            uint64_t cv;
            size_t h = cb_head(p + at, len - at, &cm, &cv, &ci);
            if (h == 0 || cm != major || ci || cv > len - at - h)
                return FERRY_EPROTO;
            n = h + (size_t)cv;
        } else if (cb_skip(p + at, len - at, depth, &n)) {
            return FERRY_EPROTO;
        }
        at += n;
    }
}

/* The length of the item at p. Definite containers are walked with a count
 * of the items still to skip rather than by recursion, so only
 * indefinite-length items nest (at most CB_MAX_DEPTH deep). */
static int cb_skip(const uint8_t *p, size_t len, int depth, size_t *out)
{
    size_t at = 0;
    uint64_t pending = 1;
    while (pending) {
        if (at >= len)
            return FERRY_EPROTO;
        unsigned b = p[at], major = b >> 5, ai = b & 0x1f;
        uint64_t v;
        if (ai < 24) {
            v = ai;
            at++;
        } else if (ai < 28) {
            size_t n = (size_t)1 << (ai - 24);
            if (len - at - 1 < n)
                return FERRY_EPROTO;
            v = 0;
            for (size_t i = 1; i <= n; i++)
                v = v << 8 | p[at + i];
            at += 1 + n;
        } else if (ai == 31 && major >= 2 && major <= 5) {
            size_t n;
            if (cb_skip_indef(p + at, len - at, depth + 1, &n))
                return FERRY_EPROTO;
            at += n;
            pending--;
            continue;
        } else {
            return FERRY_EPROTO; /* reserved, or a "break" outside an indefinite item */
        }
        pending--;
        switch (major) {
        case 2:
        case 3:
            if (v > len - at)
                return FERRY_EPROTO;
            at += (size_t)v;
            break;
        case 4:
        case 5:
            /* Every item takes a byte at least: a count past the bytes
             * left is truncated, and pending stays below 2 * len. */
            if (v > len - at || (major == 5 && v > (len - at) / 2))
                return FERRY_EPROTO;
            pending += major == 5 ? 2 * v : v;
            break;
        case 6: /* a tag, then its item */
            pending++;
            break;
        default: /* integers, simple values and floats: all in the head */
            break;
        }
    }
    *out = at;
    return 0;
}

int ferry_cbor_skip(const uint8_t *p, size_t len, size_t *item_len)
{
    if (!p || !item_len)
        return FERRY_EINVAL;
    return cb_skip(p, len, 0, item_len);
}

/* A definite string of the given major type. */
static int cb_string(const uint8_t *p, size_t len, int want, const uint8_t **s, size_t *n)
{
    int major, indef;
    uint64_t v;
    size_t h = p ? cb_head(p, len, &major, &v, &indef) : 0;
    if (h == 0 || major != want || indef || v > len - h)
        return FERRY_EPROTO;
    *s = p + h;
    *n = (size_t)v;
    return 0;
}

int ferry_cbor_text(const uint8_t *p, size_t len, const char **s, size_t *n)
{
    return cb_string(p, len, 3, (const uint8_t **)s, n);
}

int ferry_cbor_bytes(const uint8_t *p, size_t len, const uint8_t **s, size_t *n)
{
    return cb_string(p, len, 2, s, n);
}

int ferry_cbor_uint(const uint8_t *p, size_t len, uint64_t *v)
{
    int major, indef;
    size_t h = p ? cb_head(p, len, &major, v, &indef) : 0;
    return h && major == 0 ? 0 : FERRY_EPROTO;
}

int ferry_cbor_bool(const uint8_t *p, size_t len, int *v)
{
    if (!p || len == 0 || (p[0] != 0xf4 && p[0] != 0xf5))
        return FERRY_EPROTO;
    *v = p[0] == 0xf5;
    return 0;
}

/* Calls fn on each pair of the map at p (key and value located, lengths
 * known) until it returns non-zero; *map_len gets the map's length when
 * every pair was visited. */
typedef int (*pair_fn)(void *ctx, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn);

static int cb_map_walk(const uint8_t *p, size_t len, pair_fn fn, void *ctx, size_t *map_len)
{
    int major, indef;
    uint64_t count;
    size_t at = p ? cb_head(p, len, &major, &count, &indef) : 0;
    if (at == 0 || major != 5)
        return FERRY_EPROTO;
    for (uint64_t i = 0; indef || i < count; i++) {
        if (at >= len)
            return FERRY_EPROTO;
        if (indef && p[at] == 0xff) {
            at++;
            break;
        }
        size_t kn, vn;
        unsigned kb = p[at];
        if (kb >= 0x60 && kb < 0x78 && kb - 0x60u < len - at) /* a short text key */
            kn = 1 + (kb - 0x60u);
        else if (cb_skip(p + at, len - at, 1, &kn))
            return FERRY_EPROTO;
        if (cb_skip(p + at + kn, len - at - kn, 1, &vn))
            return FERRY_EPROTO;
        int rc = fn(ctx, p + at, kn, p + at + kn, vn);
        if (rc)
            return rc;
        at += kn + vn;
    }
    if (map_len)
        *map_len = at;
    return 0;
}

/* Is the key item k (kn bytes) the text key? */
static int key_is(const uint8_t *k, size_t kn, const char *key, size_t keylen)
{
    /* Text keys up to 23 bytes have a one-byte head. */
    if (keylen < 24)
        return kn == keylen + 1 && k[0] == (0x60 | keylen) && memcmp(k + 1, key, keylen) == 0;
    const char *s;
    size_t n;
    return ferry_cbor_text(k, kn, &s, &n) == 0 && n == keylen && memcmp(s, key, n) == 0;
}

struct find_ctx {
    const char *key;
    size_t keylen;
    const uint8_t *val;
    size_t vn;
};

static int find_pair(void *ctx, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    struct find_ctx *c = ctx;
    if (!key_is(k, kn, c->key, c->keylen))
        return 0;
    c->val = v;
    c->vn = vn;
    return 1;
}

int ferry_cbor_map_get(const uint8_t *p, size_t len, const char *key, const uint8_t **val, size_t *val_len)
{
    if (!key || !val || !val_len)
        return FERRY_EINVAL;
    struct find_ctx c = {.key = key, .keylen = strlen(key)};
    int rc = cb_map_walk(p, len, find_pair, &c, NULL);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return FERRY_ENOENT;
    *val = c.val;
    *val_len = c.vn;
    return 0;
}

/* ---- views ---- */

struct frame_keys {
    const uint8_t *id, *sub, *kind, *data, *tp, *result, *error;
    size_t id_n, sub_n, kind_n, data_n, tp_n, result_n, error_n;
};

#define TAKE(field, name)                                     \
    do {                                                      \
        if (key_is(k, kn, name, sizeof(name) - 1)) {          \
            if (!c->field) {                                  \
                c->field = v;                                 \
                c->field##_n = vn;                            \
            }                                                 \
            return 0;                                         \
        }                                                     \
    } while (0)

static int frame_pair(void *ctx, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    struct frame_keys *c = ctx;
    TAKE(sub, "sub");
    TAKE(kind, "kind");
    TAKE(data, "data");
    TAKE(id, "id");
    TAKE(result, "result");
    TAKE(error, "error");
    TAKE(tp, "traceparent");
    return 0; /* a key of a later version, or not text: ignored */
}

int ferry_view_decode(const uint8_t *body, size_t len, ferry_view_t *v)
{
    if (!body || !v)
        return FERRY_EINVAL;
    memset(v, 0, sizeof(*v));
    struct frame_keys c = {0};
    size_t n;
    /* Like ferry_msg_decode: one definite map, the whole body. */
    if (len == 0 || (body[0] & 0xe0) != 0xa0 || (body[0] & 0x1f) == 31 ||
        cb_map_walk(body, len, frame_pair, &c, &n) != 0 || n != len)
        return FERRY_EPROTO;
    v->body = body;
    v->body_len = len;
    if (c.sub && !c.id) {
        v->kind = FERRY_PUSH;
        if (ferry_cbor_uint(c.sub, c.sub_n, &v->sub) != 0)
            v->sub = 0;
        if (!c.kind || ferry_cbor_text(c.kind, c.kind_n, &v->push_kind, &v->push_kind_len) != 0) {
            v->push_kind = "";
            v->push_kind_len = 0;
        }
        v->data = c.data;
        v->data_len = c.data ? c.data_n : 0;
        if (c.tp && ferry_cbor_text(c.tp, c.tp_n, &v->traceparent, &v->traceparent_len) != 0) {
            v->traceparent = "";
            v->traceparent_len = 0;
        }
        return 0;
    }
    v->kind = FERRY_RESPONSE;
    if (c.id && ferry_cbor_uint(c.id, c.id_n, &v->id) == 0)
        v->has_id = 1;
    if (c.error && (c.error[0] & 0xe0) == 0xa0) {
        v->error = c.error;
        v->error_len = c.error_n;
        const uint8_t *t;
        size_t tn;
        v->err_code = "";
        v->err_message = "";
        if (ferry_cbor_map_get(c.error, c.error_n, "code", &t, &tn) == 0)
            ferry_cbor_text(t, tn, &v->err_code, &v->err_code_len);
        if (ferry_cbor_map_get(c.error, c.error_n, "message", &t, &tn) == 0)
            ferry_cbor_text(t, tn, &v->err_message, &v->err_message_len);
        return 0;
    }
    if (!c.result) {
        memset(v, 0, sizeof(*v));
        return FERRY_EPROTO;
    }
    v->result = c.result;
    v->result_len = c.result_n;
    return 0;
}

/* ---- receiving ---- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Takes the next frame off the socket, waiting until the deadline (-1:
 * none): *body points into f->in, valid until the next call. Frames are
 * taken from a buffer filled 64 KiB at a time; the socket is read only
 * when no whole frame is left, and polled only when it has nothing. */
static int read_raw(ferry_t *f, const uint8_t **body, size_t *len, long long until)
{
    for (;;) {
        size_t have = f->in_len - f->in_off, need = 4;
        if (have >= 4) {
            const uint8_t *h = f->in + f->in_off;
            size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
            if (have - 4 >= n) {
                *body = h + 4;
                *len = n;
                f->in_off += 4 + n;
                return 0;
            }
            need = 4 + n;
        }
        /* What is left is part of one frame: move it to the front. */
        if (f->in_off) {
            memmove(f->in, f->in + f->in_off, have);
            f->in_off = 0;
            f->in_len = have;
        }
        if (f->in_cap < need || f->in_cap - f->in_len < 65536) {
            size_t cap = f->in_len + 65536 > need ? f->in_len + 65536 : need;
            uint8_t *p = realloc(f->in, cap);
            if (!p)
                return FERRY_EIO;
            f->in = p;
            f->in_cap = cap;
        }
        /* After a read that filled the room, more is likely waiting: read
         * again at once. After a short one the socket was drained: wait in
         * poll() rather than spend a recv() on EAGAIN. */
        if (f->in_full) {
            size_t room = f->in_cap - f->in_len;
            ssize_t k = recv(f->fd, f->in + f->in_len, room, MSG_DONTWAIT);
            if (k > 0) {
                f->in_len += (size_t)k;
                f->in_full = (size_t)k == room;
                continue;
            }
            if (k == 0)
                return FERRY_ECLOSED;
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return errno == ECONNRESET ? FERRY_ECLOSED : FERRY_EIO;
            f->in_full = 0;
        }
        int left = -1;
        if (until >= 0) {
            long long l = until - now_ms();
            left = l < 0 ? 0 : l > 0x7fffffff ? 0x7fffffff : (int)l;
        }
        struct pollfd pfd = {.fd = f->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, left);
        if (pr < 0 && errno != EINTR)
            return FERRY_EIO;
        if (pr == 0)
            return FERRY_ETIMEDOUT;
        if (pr > 0)
            f->in_full = 1; /* readable (or closed): the recv() above says which */
    }
}

static long long deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Hands a push to a handler, if one is set: returns 1 when it did. */
static int to_handler(ferry_t *f, const ferry_view_t *v)
{
    if (f->push_view_fn) {
        f->push_view_fn(v, f->push_view_arg);
        return 1;
    }
    if (f->push_fn) {
        ferry_msg_t *m;
        if (ferry_msg_decode(v->body, v->body_len, &m) == 0) {
            f->push_fn(m, f->push_arg);
            ferry_msg_free(m);
        }
        return 1;
    }
    return 0;
}

/* Next response or (when no handler) push, from the socket only, as a
 * view into f->in. */
static int next_view(ferry_t *f, ferry_view_t *v, long long until)
{
    for (;;) {
        const uint8_t *body;
        size_t len;
        int rc = read_raw(f, &body, &len, until);
        if (rc)
            return rc;
        if (ferry_view_decode(body, len, v) != 0)
            return FERRY_EPROTO;
        if (v->kind == FERRY_PUSH && to_handler(f, v))
            continue;
        return 0;
    }
}

/* The same as trees, for ferry_recv() and ferry_call(): one decode per
 * frame. *body and *len keep the frame's bytes (in f->in) for parking. */
static int next_msg(ferry_t *f, ferry_msg_t **out, const uint8_t **body, size_t *len, long long until)
{
    for (;;) {
        int rc = read_raw(f, body, len, until);
        if (rc)
            return rc;
        ferry_msg_t *m;
        if ((rc = ferry_msg_decode(*body, *len, &m)) != 0)
            return rc;
        if (m->kind == FERRY_PUSH && f->push_view_fn) {
            ferry_view_t v;
            if (ferry_view_decode(*body, *len, &v) == 0)
                f->push_view_fn(&v, f->push_view_arg);
            ferry_msg_free(m);
            continue;
        }
        if (m->kind == FERRY_PUSH && f->push_fn) {
            f->push_fn(m, f->push_arg);
            ferry_msg_free(m);
            continue;
        }
        *out = m;
        return 0;
    }
}

static struct parked *pop_parked(ferry_t *f)
{
    struct parked *p = f->parked_head;
    if (p) {
        f->parked_head = p->next;
        if (!f->parked_head)
            f->parked_tail = NULL;
    }
    return p;
}

static void drop_held(ferry_t *f)
{
    free(f->held);
    f->held = NULL;
}

int ferry_recv_view(ferry_t *f, ferry_view_t *v, int timeout_ms)
{
    if (!f || !v)
        return FERRY_EINVAL;
    drop_held(f);
    struct parked *p = pop_parked(f);
    if (p) {
        f->held = p;
        return ferry_view_decode(p->body, p->len, v);
    }
    return next_view(f, v, deadline_of(timeout_ms));
}

int ferry_recv(ferry_t *f, ferry_msg_t **out, int timeout_ms)
{
    if (!f || !out)
        return FERRY_EINVAL;
    drop_held(f);
    struct parked *p = pop_parked(f);
    if (p) {
        int rc = ferry_msg_decode(p->body, p->len, out);
        free(p);
        return rc;
    }
    const uint8_t *body;
    size_t len;
    return next_msg(f, out, &body, &len, deadline_of(timeout_ms));
}

static int park(ferry_t *f, const ferry_msg_t *m, const uint8_t *body, size_t len)
{
    struct parked *p = malloc(sizeof(*p) + len);
    if (!p)
        return FERRY_EIO;
    p->next = NULL;
    p->is_response = m->kind == FERRY_RESPONSE;
    p->has_id = m->has_id;
    p->id = m->id;
    p->len = len;
    memcpy(p->body, body, len);
    if (f->parked_tail)
        f->parked_tail->next = p;
    else
        f->parked_head = p;
    f->parked_tail = p;
    return 0;
}

static int wait_for(ferry_t *f, uint64_t id, ferry_msg_t **out, int timeout_ms)
{
    drop_held(f);
    long long until = deadline_of(timeout_ms);
    struct parked *prev = NULL;
    for (struct parked *p = f->parked_head; p; prev = p, p = p->next) {
        if (p->is_response && p->has_id && p->id == id) {
            if (prev)
                prev->next = p->next;
            else
                f->parked_head = p->next;
            if (f->parked_tail == p)
                f->parked_tail = prev;
            int rc = ferry_msg_decode(p->body, p->len, out);
            free(p);
            return rc;
        }
    }
    for (;;) {
        ferry_msg_t *m;
        const uint8_t *body;
        size_t len;
        int rc = next_msg(f, &m, &body, &len, until);
        if (rc)
            return rc;
        /* A frame without an id is a connection-level error: it answers
         * whatever we are waiting for. */
        if (m->kind == FERRY_RESPONSE && (!m->has_id || m->id == id)) {
            *out = m;
            return 0;
        }
        /* Parked as bytes, so that a view can be taken of it later too. */
        rc = park(f, m, body, len);
        ferry_msg_free(m);
        if (rc)
            return rc;
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
