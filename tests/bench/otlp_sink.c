/* otlp-sink: the benchmark's local collector. Accepts OTLP/HTTP exports on
 * 127.0.0.1:PORT, answers each with 200 and an empty body, and discards
 * what it receives.
 *
 * The tracing rows of `make bench` measure what tracing costs ferryd. On
 * a 2-core machine the collector shares the cores with ferryd, Redis and
 * the load generator, so every cycle the collector spends is taken from
 * the rows it is meant to serve. tests/otlp_collector.py decodes every
 * export (its job, for the tests); the Python sink this replaces took
 * about a twentieth of the machine at a million spans a second, mostly in
 * its interpreter and in handing the GIL between a thread per connection.
 * This one is a single epoll loop, and the body goes socket -> pipe ->
 * /dev/null with splice(2), never copied into the process.
 *
 * It speaks just enough HTTP/1.1 for libcurl: keep-alive, Content-Length
 * bodies (ferryd never sends chunked ones), one request at a time per
 * connection.
 *
 *     otlp-sink PORT    prints "requests N bytes M" on SIGTERM
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HDR_MAX 8192

static const char OK[] = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";

struct conn {
    int fd;
    size_t have;         /* header bytes in hdr */
    unsigned long long body_left; /* body bytes still in the socket */
    int in_body;
    char hdr[HDR_MAX];
};

static volatile sig_atomic_t stop;
static unsigned long long requests, bytes;
static int pipe_r, pipe_w, devnull;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void drop(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Content-Length of the header block hdr[0..n), or -1. */
static long long content_length(const char *hdr, size_t n)
{
    const char *p = hdr, *end = hdr + n;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > 15 && !strncasecmp(p, "content-length:", 15))
            return strtoll(p + 15, NULL, 10);
        p = eol + 2;
    }
    return -1;
}

/* Moves up to n body bytes from the socket to /dev/null. Returns bytes
 * moved, 0 on EOF, -1 when the socket would block or failed (errno). */
static ssize_t discard(int fd, size_t n)
{
    ssize_t k = splice(fd, NULL, pipe_w, NULL, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (k <= 0)
        return k;
    for (ssize_t left = k; left > 0;) {
        ssize_t m = splice(pipe_r, NULL, devnull, NULL, (size_t)left, SPLICE_F_MOVE);
        if (m <= 0)
            return -1;
        left -= m;
    }
    return k;
}

/* Serves what the connection has ready. Returns -1 to close it. */
static int serve(struct conn *c)
{
    for (;;) {
        if (c->in_body) {
            while (c->body_left) {
                ssize_t k = discard(c->fd, c->body_left > (1u << 20) ? (1u << 20) : (size_t)c->body_left);
                if (k == 0)
                    return -1;
                if (k < 0)
                    return errno == EAGAIN ? 0 : -1;
                c->body_left -= (unsigned long long)k;
            }
            c->in_body = 0;
            requests++;
            if (send(c->fd, OK, sizeof(OK) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(OK) - 1))
                return -1; /* a 79-byte answer fits any socket buffer */
        }
        /* Peek, then take only the header: the body must stay in the
         * socket for splice. */
        ssize_t n = recv(c->fd, c->hdr + c->have, sizeof(c->hdr) - c->have, MSG_PEEK);
        if (n == 0)
            return -1;
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        size_t from = c->have > 3 ? c->have - 3 : 0;
        char *at = memmem(c->hdr + from, c->have + (size_t)n - from, "\r\n\r\n", 4);
        size_t take = at ? (size_t)(at + 4 - c->hdr) - c->have : (size_t)n;
        if (recv(c->fd, c->hdr + c->have, take, 0) != (ssize_t)take)
            return -1;
        c->have += take;
        if (!at) {
            if (c->have == sizeof(c->hdr))
                return -1; /* a header this large is not ferryd's */
            continue;
        }
        long long len = content_length(c->hdr, c->have);
        if (len < 0)
            return -1;
        c->have = 0;
        c->in_body = 1;
        c->body_left = (unsigned long long)len;
        bytes += (unsigned long long)len;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: otlp-sink PORT\n");
        return 2;
    }
    int pfd[2];
    if (pipe(pfd) < 0) {
        perror("pipe");
        return 1;
    }
    pipe_r = pfd[0];
    pipe_w = pfd[1];
    fcntl(pipe_w, F_SETPIPE_SZ, 1 << 20); /* fewer splices; 64 KiB works too */
    devnull = open("/dev/null", O_WRONLY);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (devnull < 0 || ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 64) < 0) {
        perror("otlp-sink");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    while (!stop) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    c = calloc(1, sizeof(*c));
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            if (serve(c) < 0)
                drop(ep, c);
        }
    }
    printf("requests %llu bytes %llu\n", requests, bytes);
    return 0;
}
