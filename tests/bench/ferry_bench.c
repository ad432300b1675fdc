/* ferry_bench.c: ferry-bench, a load generator for ferryd that takes
 * redis-benchmark's flags and prints its -q lines, plus p99:
 *
 *   ferry-bench --socket PATH -t get,set -n N -c CONNS -P IN_FLIGHT -d BYTES -q
 *   GET: 123456.78 requests per second, p50=0.123 msec, p99=0.456 msec
 *
 * Like redis-benchmark it is one thread driving every connection, keeps P
 * requests in flight on each, uses the key "key:__rand_int__" and a value
 * of d 'x' bytes, and measures each request from send to response.
 *
 * AMQP tests, with --queue NAME: "publish" sends persistent messages of d
 * bytes to the queue (each answered after the broker's confirm), and
 * "consume" receives n deliveries on one subscription with prefetch P,
 * acking every 50 with multiple=true. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ferry.h"

struct conn {
    int fd;
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    uint64_t *sent_ns; /* send time by id % P */
    long inflight;
    uint64_t next_id;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what)
{
    fprintf(stderr, "ferry-bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int connect_to(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die(path);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void on_uint(void *ctx, uint64_t v) { *(uint64_t *)ctx = v; }
static void on_u8(void *ctx, uint8_t v) { on_uint(ctx, v); }
static void on_u16(void *ctx, uint16_t v) { on_uint(ctx, v); }
static void on_u32(void *ctx, uint32_t v) { on_uint(ctx, v); }

/* Reads only what the benchmark needs from a response: {"id": N, "result"
 * or "error": ...}, in the order ferryd writes them. A full decode with
 * cbor_load would make the load generator, not ferryd, the bottleneck on a
 * small machine. */
static int peek_response(const uint8_t *b, size_t n, uint64_t *id, int *is_err)
{
    static const uint8_t head[] = {0xa2, 0x62, 'i', 'd'};
    if (n < sizeof(head) + 2 || memcmp(b, head, sizeof(head)) != 0)
        return -1;
    struct cbor_callbacks cb = cbor_empty_callbacks;
    cb.uint8 = on_u8;
    cb.uint16 = on_u16;
    cb.uint32 = on_u32;
    cb.uint64 = on_uint;
    *id = UINT64_MAX;
    struct cbor_decoder_result r = cbor_stream_decode(b + sizeof(head), n - sizeof(head), &cb, id);
    if (r.status != CBOR_DECODER_FINISHED || *id == UINT64_MAX)
        return -1;
    size_t k = sizeof(head) + r.read;
    if (k + 6 > n)
        return -1;
    *is_err = b[k] == 0x65 && memcmp(b + k + 1, "error", 5) == 0;
    return 0;
}

/* What one request is: a redis command, or an op with pre-encoded args. */
struct work {
    int argc;
    const char **argv;
    const size_t *lens;
    const char *op;
    const uint8_t *args;
    size_t args_len;
};

static void queue_req(struct conn *c, const struct work *w, long P)
{
    while (c->out_cap - c->out_len < 4096 + w->args_len) {
        c->out_cap = c->out_cap * 2 + 8192;
        c->out = realloc(c->out, c->out_cap);
    }
    uint64_t id = c->next_id++;
    size_t room = c->out_cap - c->out_len;
    size_t n = w->op ? ferry_frame_request(c->out + c->out_len, room, id, w->op, w->args, w->args_len, 0)
                     : ferry_frame_redis(c->out + c->out_len, room, id, w->argc, w->argv, w->lens, 0);
    if (n == 0) {
        fprintf(stderr, "ferry-bench: request too large\n");
        exit(1);
    }
    c->out_len += n;
    c->sent_ns[id % (uint64_t)P] = now_ns();
    c->inflight++;
}

/* Runs one test; returns requests per second and fills lat[] (ns). */
static double run_test(const char *path, const struct work *w, long n, long nconns, long P, uint64_t *lat,
                       long *errors)
{
    struct conn *cs = calloc((size_t)nconns, sizeof(*cs));
    struct pollfd *pfd = calloc((size_t)nconns, sizeof(*pfd));
    long issued = 0, done = 0;
    for (long i = 0; i < nconns; i++) {
        cs[i].fd = connect_to(path);
        cs[i].sent_ns = calloc((size_t)P, sizeof(uint64_t));
        cs[i].next_id = 1;
    }
    uint64_t t0 = now_ns();
    for (long i = 0; i < nconns; i++)
        for (long k = 0; k < P && issued < n; k++, issued++)
            queue_req(&cs[i], w, P);
    while (done < n) {
        for (long i = 0; i < nconns; i++) {
            pfd[i].fd = cs[i].fd;
            pfd[i].events = POLLIN | (cs[i].out_len > cs[i].out_off ? POLLOUT : 0);
        }
        if (poll(pfd, (nfds_t)nconns, 10000) <= 0)
            die("poll (no progress for 10 s)");
        for (long i = 0; i < nconns; i++) {
            struct conn *c = &cs[i];
            if (pfd[i].revents & POLLOUT) {
                ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
                if (w < 0 && errno != EAGAIN)
                    die("write");
                if (w > 0)
                    c->out_off += (size_t)w;
                if (c->out_off == c->out_len)
                    c->out_off = c->out_len = 0;
            }
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (c->in_cap - c->in_len < 65536) {
                c->in_cap = c->in_cap * 2 + 65536;
                c->in = realloc(c->in, c->in_cap);
            }
            ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
            if (r == 0) {
                fprintf(stderr, "ferry-bench: ferryd closed the connection\n");
                exit(1);
            }
            if (r < 0) {
                if (errno == EAGAIN)
                    continue;
                die("read");
            }
            c->in_len += (size_t)r;
            size_t off = 0;
            uint64_t t = now_ns();
            while (c->in_len - off >= 4) {
                size_t len = ((size_t)c->in[off] << 24) | ((size_t)c->in[off + 1] << 16) |
                             ((size_t)c->in[off + 2] << 8) | c->in[off + 3];
                if (c->in_len - off - 4 < len)
                    break;
                uint64_t id;
                int is_err;
                if (peek_response(c->in + off + 4, len, &id, &is_err) != 0) {
                    fprintf(stderr, "ferry-bench: bad frame\n");
                    exit(1);
                }
                *errors += is_err;
                lat[done] = t - c->sent_ns[id % (uint64_t)P];
                done++;
                c->inflight--;
                off += 4 + len;
                if (issued < n) {
                    queue_req(c, w, P);
                    issued++;
                }
            }
            memmove(c->in, c->in + off, c->in_len - off);
            c->in_len -= off;
            if (c->out_len > c->out_off) {
                ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
                if (w > 0)
                    c->out_off += (size_t)w;
                if (c->out_off == c->out_len)
                    c->out_off = c->out_len = 0;
            }
        }
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    for (long i = 0; i < nconns; i++) {
        close(cs[i].fd);
        free(cs[i].in);
        free(cs[i].out);
        free(cs[i].sent_ns);
    }
    free(cs);
    free(pfd);
    return (double)n / secs;
}

/* Declares the durable queue the AMQP tests use, as amqp-bench does. */
static void declare_queue(const char *path, const char *queue)
{
    int err;
    ferry_t *f = ferry_connect(path, &err);
    if (!f) {
        fprintf(stderr, "ferry-bench: connect: %s\n", ferry_strerror(err));
        exit(1);
    }
    cbor_item_t *a = cbor_new_definite_map(2);
    cbor_map_add(a, (struct cbor_pair){cbor_move(cbor_build_string("name")), cbor_move(cbor_build_string(queue))});
    cbor_map_add(a, (struct cbor_pair){cbor_move(cbor_build_string("durable")), cbor_move(cbor_build_bool(true))});
    ferry_msg_t *m;
    if (ferry_call(f, "queue.declare", a, 0, &m, 10000) != 0 || m->err_code) {
        fprintf(stderr, "ferry-bench: queue.declare %s failed\n", queue);
        exit(1);
    }
    ferry_msg_free(m);
    cbor_decref(&a);
    ferry_close(f);
}

/* consume: one subscription, n deliveries. Returns deliveries per second. */
static double run_consume(const char *path, const char *queue, long n, long prefetch)
{
    int err;
    ferry_t *f = ferry_connect(path, &err);
    if (!f) {
        fprintf(stderr, "ferry-bench: connect: %s\n", ferry_strerror(err));
        exit(1);
    }
    cbor_item_t *a = cbor_new_definite_map(2);
    cbor_map_add(a, (struct cbor_pair){cbor_move(cbor_build_string("queue")), cbor_move(cbor_build_string(queue))});
    cbor_map_add(a, (struct cbor_pair){cbor_move(cbor_build_string("prefetch")),
                                       cbor_move(cbor_build_uint16((uint16_t)prefetch))});
    ferry_msg_t *m;
    uint64_t sub;
    if (ferry_send(f, "consume", a, 0, &sub) != 0 || ferry_recv(f, &m, 10000) != 0 || m->err_code) {
        fprintf(stderr, "ferry-bench: consume failed\n");
        exit(1);
    }
    cbor_decref(&a);
    ferry_msg_free(m);
    /* Each push is read in place (ferry_recv_view): its body and delivery
     * tag are located, as a consumer would, without building a tree. */
    uint64_t t0 = now_ns();
    for (long i = 1; i <= n;) {
        ferry_view_t v;
        if (ferry_recv_view(f, &v, 30000) != 0) {
            fprintf(stderr, "ferry-bench: no delivery for 30 s\n");
            exit(1);
        }
        if (v.kind != FERRY_PUSH)
            continue;
        const uint8_t *p, *body;
        size_t pn, body_len; /* what a consumer would hand on */
        uint64_t tag;
        if (ferry_cbor_map_get(v.data, v.data_len, "body", &p, &pn) != 0 ||
            ferry_cbor_bytes(p, pn, &body, &body_len) != 0 ||
            ferry_cbor_map_get(v.data, v.data_len, "delivery_tag", &p, &pn) != 0 ||
            ferry_cbor_uint(p, pn, &tag) != 0) {
            fprintf(stderr, "ferry-bench: a delivery without body or delivery_tag\n");
            exit(1);
        }
        if (i % 50 == 0 || i == n) {
            /* {"sub": sub, "delivery_tag": tag, "multiple": true} */
            uint8_t ack[64];
            size_t k = 0;
            ack[k++] = 0xa3;
            k += cbor_encode_string_start(3, ack + k, sizeof(ack) - k);
            memcpy(ack + k, "sub", 3), k += 3;
            k += cbor_encode_uint(sub, ack + k, sizeof(ack) - k);
            k += cbor_encode_string_start(12, ack + k, sizeof(ack) - k);
            memcpy(ack + k, "delivery_tag", 12), k += 12;
            k += cbor_encode_uint(tag, ack + k, sizeof(ack) - k);
            k += cbor_encode_string_start(8, ack + k, sizeof(ack) - k);
            memcpy(ack + k, "multiple", 8), k += 8;
            ack[k++] = 0xf5;
            if (ferry_send_cbor(f, "ack", ack, k, 0, NULL) != 0) {
                fprintf(stderr, "ferry-bench: ack: %s\n", strerror(errno));
                exit(1);
            }
        }
        i++;
    }
    double rate = (double)n / ((double)(now_ns() - t0) / 1e9);
    ferry_close(f);
    return rate;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"queue", required_argument, NULL, 'Q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("FERRY_SOCKET") ? getenv("FERRY_SOCKET") : FERRY_DEFAULT_SOCKET;
    char tests[256] = "set,get";
    const char *queue = "ferry.bench";
    long n = 100000, nconns = 50, P = 1, d = 3;
    int quiet = 0, opt;
    while ((opt = getopt_long(argc, argv, "s:t:n:c:P:d:qh", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': path = optarg; break;
        case 'Q': queue = optarg; break;
        case 't': snprintf(tests, sizeof(tests), "%s", optarg); break;
        case 'n': n = atol(optarg); break;
        case 'c': nconns = atol(optarg); break;
        case 'P': P = atol(optarg); break;
        case 'd': d = atol(optarg); break;
        case 'q': quiet = 1; break;
        default:
            fprintf(stderr, "usage: ferry-bench [--socket PATH] [-t set,get] [-n N] [-c CONNS] "
                            "[-P IN_FLIGHT] [-d BYTES] [-q]\n");
            return opt == 'h' ? 0 : 64;
        }
    }
    if (n < 1 || nconns < 1 || P < 1 || d < 0) {
        fprintf(stderr, "ferry-bench: -n, -c and -P must be positive, -d not negative\n");
        return 64;
    }
    /* Every connection needs its window filled once (consume aside, which
     * uses one connection and counts deliveries). */
    long n_conn = n < nconns * P ? nconns * P : n;
    char *value = malloc((size_t)d + 1);
    memset(value, 'x', (size_t)d);
    uint64_t *lat = malloc((size_t)(n < nconns * P ? nconns * P : n) * sizeof(uint64_t));
    for (char *tok = strtok(tests, ","); tok; tok = strtok(NULL, ",")) {
        const char *av[3];
        size_t lens[3];
        int ac = 0;
        const char *name;
        struct work w = {0};
        unsigned char *args = NULL;
        if (strcasecmp(tok, "consume") == 0 || strcasecmp(tok, "publish") == 0)
            declare_queue(path, queue);
        if (strcasecmp(tok, "consume") == 0) {
            double rate = run_consume(path, queue, n, P);
            printf("CONSUME: %.2f messages per second\n", rate);
            fflush(stdout);
            continue;
        }
        if (strcasecmp(tok, "publish") == 0) {
            cbor_item_t *m = cbor_new_definite_map(4);
            cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("exchange")), cbor_move(cbor_build_string(""))});
            cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("routing_key")),
                                               cbor_move(cbor_build_string(queue))});
            cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("body")),
                                               cbor_move(cbor_build_bytestring((cbor_data)value, (size_t)d))});
            cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("persistent")), cbor_move(cbor_build_bool(true))});
            size_t cap = 0;
            w.args_len = cbor_serialize_alloc(m, &args, &cap);
            cbor_decref(&m);
            w.op = "publish";
            w.args = args;
            name = "PUBLISH";
        } else
        if (strcasecmp(tok, "set") == 0) {
            av[0] = "SET"; av[1] = "key:__rand_int__"; av[2] = value;
            lens[0] = 3; lens[1] = strlen(av[1]); lens[2] = (size_t)d;
            ac = 3;
            name = "SET";
        } else if (strcasecmp(tok, "get") == 0) {
            av[0] = "GET"; av[1] = "key:__rand_int__";
            lens[0] = 3; lens[1] = strlen(av[1]);
            ac = 2;
            name = "GET";
        } else if (strcasecmp(tok, "cacheget") == 0) {
            /* cache.get of the key the get test reads: a hit once set ran. */
            cbor_item_t *m = cbor_new_definite_map(1);
            cbor_map_add(m, (struct cbor_pair){cbor_move(cbor_build_string("key")),
                                               cbor_move(cbor_build_bytestring((cbor_data) "key:__rand_int__", 16))});
            size_t cap = 0;
            w.args_len = cbor_serialize_alloc(m, &args, &cap);
            cbor_decref(&m);
            w.op = "cache.get";
            w.args = args;
            name = "CACHEGET";
        } else if (strcasecmp(tok, "ping") == 0) {
            av[0] = "PING";
            lens[0] = 4;
            ac = 1;
            name = "PING";
        } else {
            fprintf(stderr, "ferry-bench: unknown test '%s' (set, get, cacheget, ping, publish, consume)\n", tok);
            return 64;
        }
        if (!w.op) {
            w.argc = ac;
            w.argv = av;
            w.lens = lens;
        }
        long errors = 0;
        double rps = run_test(path, &w, n_conn, nconns, P, lat, &errors);
        free(args);
        qsort(lat, (size_t)n_conn, sizeof(uint64_t), cmp_u64);
        double p50 = (double)lat[(size_t)(n_conn * 0.50)] / 1e6;
        double p99 = (double)lat[(size_t)(n_conn * 0.99 < n_conn - 1 ? n_conn * 0.99 : n_conn - 1)] / 1e6;
        if (quiet)
            printf("%s: %.2f requests per second, p50=%.3f msec, p99=%.3f msec\n", name, rps, p50, p99);
        else
            printf("====== %s ======\n  %ld requests completed, %ld connections, %ld in flight each, "
                   "%ld bytes payload\n  %.2f requests per second\n  p50=%.3f msec p99=%.3f msec "
                   "max=%.3f msec\n  %ld error responses\n\n",
                   name, n_conn, nconns, P, d, rps, p50, p99, (double)lat[n_conn - 1] / 1e6, errors);
        if (errors) {
            fprintf(stderr, "ferry-bench: %ld error responses in %s\n", errors, name);
            return 1;
        }
        fflush(stdout);
    }
    free(value);
    free(lat);
    return 0;
}
