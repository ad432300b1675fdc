/* otlp_http.c: see otlp_http.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <dlfcn.h>

#include "config.h"
#include "list.h"
#include "log.h"
#include "backoff.h"
#include "otlp_body.h"
#include "otlp_http.h"
#include "otlp_response.h"
#include "tel_settings.h"

/* At most this many POSTs are queued; a newer batch pushes out the oldest
 * waiting one, so a dead collector costs bounded memory. */
#define MAX_JOBS 8
/* POSTs at once, each on its own connection. At the specification's
 * default batch of 512, a million spans a second is 2,000 POSTs a second;
 * a POST takes at least two loop iterations (sent in one, answered in a
 * later one), so two in flight fell behind under load and dropped spans.
 * The OpenTelemetry Collector's own exporters send with ten. */
#define MAX_IN_FLIGHT 4
#define UPLOAD_BUFFER (256L * 1024)
/* An OTLP response is a few bytes (a partial_success, a message). One
 * that sends more, or never ends, would cost the loop what it spends on
 * requests; past this many bytes of headers or of body the transfer is
 * cut off and counts as failed, without a retry. */
#define MAX_RESPONSE (64 * 1024)
/* Retries and failures are each logged at most once in this long; a
 * collector that refuses every POST would otherwise write a line per
 * POST. The next line written says how many were left out. */
#define LOG_EVERY_MS 10000

struct job {
    struct dlist node;        /* in h->jobs */
    const struct otlp_signal *sig; /* refers: the settings it is sent with */
    struct otlp_body body;    /* owns */
    struct otlp_cursor cur;   /* how much of body curl has read */
    size_t items;
    bool traces;
    unsigned attempts;
    uint64_t deadline;        /* uv_now() ms after which it is given up */
    uint64_t next_try;        /* uv_now() ms */
    CURL *easy;               /* owns, while in flight */
    struct curl_slist *own_hdrs; /* owns: its headers, when it has no kit */
    struct cbuf response;     /* owns */
    size_t header_bytes;      /* of this attempt's response */
    bool too_large;           /* the response passed MAX_RESPONSE: cut off */
    long retry_after_s;       /* from the response (at most OTLP_RETRY_AFTER_MAX_S), or -1 */
};

struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct otlp_http *h;  /* refers */
    struct dlist node;    /* in h->socks while curl uses it, else in h->idle_socks */
};

/* Stopped poll handles kept for their descriptor's next use. curl
 * reports a kept-alive connection's socket removed after every POST and
 * added again for the next; initialising a poll handle each time cost
 * four system calls of the POST's sixteen (libuv probes the descriptor
 * with an epoll add and delete, sets it non-blocking, and deletes it
 * again on close; strace). A kept handle lives no longer than its
 * socket: curl closes sockets through on_close_socket, which closes the
 * handle first. Closing a poll handle deletes its descriptor number from
 * epoll, so a handle that outlived its socket would, once a client got
 * that number, take the client's descriptor out of the loop. */
#define IDLE_SOCKS 4

/* What a POST to one endpoint reuses from the last: its easy handle (with
 * its buffers: libcurl allocates a 64 KiB upload buffer per handle) and
 * its header list. A handle per signal, since their settings differ. At
 * the specification's default batch of 512 spans, exports are thousands a
 * second, and a handle made and freed for each showed in profiles. */
struct conn_kit {
    const struct otlp_signal *sig; /* refers; NULL: unused */
    bool gzip;
    CURL *idle[MAX_IN_FLIGHT];     /* owns: handles not in use, with the kit's options set */
    size_t nidle;
    struct curl_slist *hdrs;       /* owns */
    CURLU *url;                    /* owns: sig->url, parsed once; NULL if it would not parse */
};

#define MAX_KITS 4

struct otlp_http {
    uv_loop_t *loop;                        /* refers */
    const struct tel_settings *set;   /* refers */
    CURLM *multi;                           /* owns */
    uv_timer_t curl_timer;                  /* curl's own timeouts */
    uv_idle_t kick;                         /* curl's timeout of 0 */
    uv_timer_t retry_timer;                 /* starts waiting jobs */
    struct dlist jobs;                      /* struct job, oldest first */
    struct dlist socks;                     /* struct sock */
    struct dlist idle_socks;                /* struct sock, stopped; the oldest first */
    size_t njobs, in_flight;
    otlp_http_done done;
    void *arg;
    uint32_t rng;
    int open_handles;
    void (*closed)(void *);
    void *closed_arg;
    bool closing;
    bool last_try;            /* shutting down: a failed POST is not retried */
    struct log_limit retry_log, fail_log, partial_log; /* one kind of line each */
    bool no_proxy_env;        /* no proxy variable is set: tell curl not to look */
    struct otlp_body spare;   /* owns: a sent body's memory, for the next one */
    struct conn_kit kits[MAX_KITS];
};

static void start_ready(struct otlp_http *h);

/* Writes a line of g's kind unless one was written in the last
 * LOG_EVERY_MS, saying how many were left out since. */
static void __attribute__((format(printf, 4, 5)))
gated_log(struct otlp_http *h, struct log_limit *g, enum log_level level, const char *fmt, ...)
{
    if (level > log_threshold)
        return;
    unsigned long skipped;
    if (!log_limit_pass(g, uv_now(h->loop), LOG_EVERY_MS, &skipped))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (skipped)
        log_write(level, "%s (and %lu more like it not logged in the last %d s)", line, skipped,
                  LOG_EVERY_MS / 1000);
    else
        log_write(level, "%s", line);
}

static void job_free(struct otlp_http *h, struct job *j)
{
    dlist_remove(&j->node);
    /* Keep one body's memory: a batch's entries are a quarter of a
     * megabyte or more, and faulting in fresh pages for each showed in a
     * traced request's cost. */
    if (j->body.e && !h->spare.e && !h->closing) {
        otlp_body_clear(&j->body);
        h->spare = j->body;
    } else {
        otlp_body_free(&j->body);
    }
    cbuf_free(&j->response);
    free(j);
}

static void finish(struct otlp_http *h, struct job *j, bool ok)
{
    h->njobs--;
    h->done(h->arg, ok, j->items, j->traces);
    job_free(h, j);
}

#define CU_FUNCS(X)                                                                 \
    X(void, easy_cleanup, (CURL *))                                                 \
    X(CURLcode, easy_getinfo, (CURL *, CURLINFO, ...))                              \
    X(CURL *, easy_init, (void))                                                    \
    X(CURLcode, easy_setopt, (CURL *, CURLoption, ...))                             \
    X(const char *, easy_strerror, (CURLcode))                                      \
    X(time_t, getdate, (const char *, const time_t *))                              \
    X(CURLMcode, multi_add_handle, (CURLM *, CURL *))                               \
    X(CURLMcode, multi_assign, (CURLM *, curl_socket_t, void *))                    \
    X(CURLMcode, multi_cleanup, (CURLM *))                                          \
    X(CURLMsg *, multi_info_read, (CURLM *, int *))                                 \
    X(CURLM *, multi_init, (void))                                                  \
    X(CURLMcode, multi_remove_handle, (CURLM *, CURL *))                            \
    X(CURLMcode, multi_setopt, (CURLM *, CURLMoption, ...))                         \
    X(CURLMcode, multi_socket_action, (CURLM *, curl_socket_t, int, int *))         \
    X(struct curl_slist *, slist_append, (struct curl_slist *, const char *))       \
    X(void, slist_free_all, (struct curl_slist *))                                  \
    X(CURLU *, url, (void))                                                         \
    X(void, url_cleanup, (CURLU *))                                                 \
    X(CURLUcode, url_set, (CURLU *, CURLUPart, const char *, unsigned int))

/* libcurl is loaded when an OTLP exporter is first needed, not linked:
 * it brings in a dozen libraries (HTTP/2, LDAP, Kerberos, GnuTLS ...)
 * whose pages would otherwise sit in every ferryd's RSS, exporting or
 * not. */
static struct {
    void *lib;
#define CU_FN(ret, name, args) ret(*name) args;
    CU_FUNCS(CU_FN)
#undef CU_FN
} cu;

static int libcurl_load(void)
{
    if (cu.lib)
        return 0;
    void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        log_error("otlp: cannot load libcurl: %s", dlerror());
        return -1;
    }
#define CU_SYM(ret, name, args)                                                \
    *(void **)&cu.name = dlsym(lib, "curl_" #name);                            \
    if (!cu.name) {                                                           \
        log_error("otlp: libcurl has no curl_%s", #name);                     \
        dlclose(lib);                                                          \
        return -1;                                                            \
    }
    CU_FUNCS(CU_SYM)
#undef CU_SYM
    cu.lib = lib;
    return 0;
}

/* ---- curl <-> libuv ---- */

static void handle_closed(uv_handle_t *hd)
{
    struct otlp_http *h = hd->data;
    if (--h->open_handles == 0 && h->closing && h->closed)
        h->closed(h->closed_arg);
}

static void sock_closed(uv_handle_t *hd)
{
    struct sock *s = container_of((uv_poll_t *)hd, struct sock, poll);
    struct otlp_http *h = s->h;
    free(s);
    if (--h->open_handles == 0 && h->closing && h->closed)
        h->closed(h->closed_arg);
}

static void check_done(struct otlp_http *h);

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock *s = container_of(p, struct sock, poll);
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    struct otlp_http *h = s->h;
    cu.multi_socket_action(h->multi, s->fd, flags, &running);
    check_done(h);
}

static void sock_close(struct sock *s)
{
    dlist_remove(&s->node);
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static struct sock *find_sock(struct dlist *list, curl_socket_t fd)
{
    for (struct dlist *n = list->next; n != list; n = n->next) {
        struct sock *s = container_of(n, struct sock, node);
        if (s->fd == fd)
            return s;
    }
    return NULL;
}

/* curl closes every socket it opened through this (CURLOPT_CLOSESOCKETFUNCTION),
 * after reporting it removed; see IDLE_SOCKS. */
static int on_close_socket(void *arg, curl_socket_t fd)
{
    struct otlp_http *h = arg;
    struct sock *s = find_sock(&h->idle_socks, fd);
    if (s) {
        sock_close(s);
    } else if ((s = find_sock(&h->socks, fd))) {
        /* curl reports a socket removed before it closes it; should it
         * not, the handle still must not outlive the descriptor, nor
         * curl refer to the handle. */
        cu.multi_assign(h->multi, fd, NULL);
        sock_close(s);
    }
    return close(fd);
}

static int on_socket(CURL *e, curl_socket_t fd, int action, void *userp, void *socketp)
{
    (void)e;
    struct otlp_http *h = userp;
    struct sock *s = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (s) {
            cu.multi_assign(h->multi, fd, NULL);
            uv_poll_stop(&s->poll);
            dlist_remove(&s->node);
            dlist_push_tail(&h->idle_socks, &s->node);
            size_t n = 0;
            struct dlist *pos;
            dlist_foreach(pos, &h->idle_socks)
                n++;
            if (n > IDLE_SOCKS)
                sock_close(container_of(h->idle_socks.next, struct sock, node));
        }
        return 0;
    }
    if (!s) {
        s = find_sock(&h->idle_socks, fd);
        if (s) {
            dlist_remove(&s->node);
            dlist_push_tail(&h->socks, &s->node);
        } else {
            s = xcalloc(1, sizeof(*s));
            s->fd = fd;
            s->h = h;
            uv_poll_init_socket(h->loop, &s->poll, fd);
            dlist_push_tail(&h->socks, &s->node);
            h->open_handles++;
        }
        cu.multi_assign(h->multi, fd, s);
    }
    int ev = (action & CURL_POLL_IN ? UV_READABLE : 0) | (action & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

/* curl's timeout came: it runs whatever is due. */
static void run_curl_timers(struct otlp_http *h)
{
    int running;
    cu.multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static void on_curl_timer(uv_timer_t *t) { run_curl_timers(t->data); }

static void on_kick(uv_idle_t *k)
{
    uv_idle_stop(k);
    run_curl_timers(k->data);
}

static int on_timer_set(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    struct otlp_http *h = userp;
    /* curl asks for 0, "as soon as possible", whenever a POST is added.
     * A timer of 0 that curl re-arms from inside its own callback would
     * spin in libuv's timer phase, and curl's multi-uv example waits 1 ms
     * instead; but that wait came before every POST, and with two in
     * flight it held the exporter under 2,000 POSTs a second, fewer than
     * a million spans a second in batches of 512 need (spans were
     * dropped). An idle handle runs once in the next loop iteration. */
    if (timeout_ms == 0) {
        uv_timer_stop(&h->curl_timer);
        uv_idle_start(&h->kick, on_kick);
        return 0;
    }
    uv_idle_stop(&h->kick);
    if (timeout_ms < 0)
        uv_timer_stop(&h->curl_timer);
    else
        uv_timer_start(&h->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- responses ---- */

/* A count short of k makes curl abort the transfer (CURLE_WRITE_ERROR)
 * and close its connection. */
static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct job *j = arg;
    size_t k = size * n;
    if (j->response.len + k > MAX_RESPONSE) {
        j->too_large = true;
        return 0;
    }
    cbuf_put(&j->response, p, k);
    return k;
}

/* curl reads the body through these: a batch's spans are written out
 * straight into curl's upload buffer (see "batches" in otlp_trace_encode.c). */
static size_t on_read(char *p, size_t size, size_t n, void *arg)
{
    struct job *j = arg;
    return otlp_body_read(&j->body, &j->cur, (uint8_t *)p, size * n);
}

/* curl rewinds to send the body again on a new connection, when a kept
 * alive one turns out to be closed. */
static int on_seek(void *arg, curl_off_t off, int origin)
{
    struct job *j = arg;
    if (origin != SEEK_SET || off < 0 || !otlp_body_seek(&j->body, &j->cur, (size_t)off))
        return CURL_SEEKFUNC_CANTSEEK;
    return CURL_SEEKFUNC_OK;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct job *j = arg;
    size_t k = size * n;
    j->header_bytes += k;
    if (j->header_bytes > MAX_RESPONSE) {
        j->too_large = true;
        return 0;
    }
    if (k > 12 && strncasecmp(p, "Retry-After:", 12) == 0)
        j->retry_after_s = otlp_response_retry_after(p + 12, k - 12, time(NULL), cu.getdate);
    return k;
}

static void log_partial_success(struct otlp_http *h, struct job *j)
{
    long long rejected;
    char msg[256];
    if (otlp_response_partial(j->traces, j->response.data, j->response.len, &rejected, msg, sizeof(msg)))
        gated_log(h, &h->partial_log, LOG_WARN, "otlp: the collector rejected %lld %s: %s", rejected,
                  j->traces ? "spans" : "data points", msg);
}

/* Network faults that may pass (the collector restarting); a failed
 * certificate check or a bad URL will not, and is final. */
static bool transient(CURLcode res)
{
    switch (res) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return true;
    default:
        return false;
    }
}

static void put_easy(struct otlp_http *h, struct job *j);

static void check_done(struct otlp_http *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = cu.multi_info_read(h->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct job *j;
        cu.easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
        long code = 0;
        cu.easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
        CURLcode res = msg->data.result;
        cu.multi_remove_handle(h->multi, j->easy);
        put_easy(h, j);
        h->in_flight--;
        if (j->too_large) {
            /* Not retried: the collector would only answer the same. */
            gated_log(h, &h->fail_log, LOG_WARN,
                      "otlp: export to %s failed: its response (HTTP %ld) passed %d KiB; cut off", j->sig->url,
                      code, MAX_RESPONSE / 1024);
            finish(h, j, false);
            continue;
        }
        if (res == CURLE_OK && code >= 200 && code < 300) {
            log_partial_success(h, j);
            finish(h, j, true);
            continue;
        }
        bool retry = res == CURLE_OK ? (code == 429 || code == 502 || code == 503 || code == 504) : transient(res);
        uint64_t now = uv_now(h->loop);
        /* A Retry-After is a minimum: one shorter than the backoff (a
         * collector answering "Retry-After: 0" to every POST) waits the
         * backoff, so it cannot make the exporter spin. */
        uint64_t wait = backoff_ms(&h->rng, j->attempts, 1000, 30000); /* the first retry after 0.5 to 1 s */
        if (j->retry_after_s >= 0 && (uint64_t)j->retry_after_s * 1000 > wait)
            wait = (uint64_t)j->retry_after_s * 1000;
        if (!retry || h->closing || h->last_try || now + wait > j->deadline) {
            if (res != CURLE_OK)
                gated_log(h, &h->fail_log, LOG_WARN, "otlp: export to %s failed: %s", j->sig->url,
                          cu.easy_strerror(res));
            else
                gated_log(h, &h->fail_log, LOG_WARN, "otlp: export to %s failed: HTTP %ld%s", j->sig->url, code,
                          !retry ? "" : h->closing || h->last_try ? " (shutting down)" : " (out of time)");
            finish(h, j, false);
            continue;
        }
        gated_log(h, &h->retry_log, LOG_DEBUG, "otlp: export to %s: %s %ld; retrying in %llu ms", j->sig->url,
                  res != CURLE_OK ? cu.easy_strerror(res) : "HTTP", code, (unsigned long long)wait);
        j->next_try = now + wait;
        j->response.len = 0;
    }
    start_ready(h);
}

/* ---- starting requests ---- */

/* The kit for j's endpoint and encoding; NULL when every kit is taken by
 * other settings (then j's handle and headers are its own). */
static struct conn_kit *kit_for(struct otlp_http *h, const struct job *j)
{
    for (size_t i = 0; i < MAX_KITS; i++)
        if (h->kits[i].sig == j->sig && h->kits[i].gzip == j->body.gzip)
            return &h->kits[i];
    for (size_t i = 0; i < MAX_KITS; i++)
        if (!h->kits[i].sig) {
            h->kits[i].sig = j->sig;
            h->kits[i].gzip = j->body.gzip;
            return &h->kits[i];
        }
    return NULL;
}

/* The User-Agent the OTLP exporter specification asks for goes in the
 * list rather than through CURLOPT_USERAGENT, which libcurl formats anew
 * for every request with its own printf, and "Accept: * / *" is left out
 * (libcurl's cost per POST is measured in docs/performance.md). */
static struct curl_slist *make_headers(const struct otlp_signal *sig, bool gzip)
{
    struct curl_slist *l = cu.slist_append(NULL, "Content-Type: application/x-protobuf");
    if (gzip)
        l = cu.slist_append(l, "Content-Encoding: gzip");
    l = cu.slist_append(l, "Expect:");
    l = cu.slist_append(l, "Accept:");
    l = cu.slist_append(l, "User-Agent: ferryd/" FERRY_VERSION);
    char line[1100];
    const char *p = sig->headers;
    while (*p) {
        size_t n = strcspn(p, "\n");
        if (n && n < sizeof(line)) {
            memcpy(line, p, n);
            line[n] = '\0';
            l = cu.slist_append(l, line);
        }
        p += n + (p[n] == '\n');
    }
    return l;
}

/* Takes j's handle back, for the next POST to the same endpoint. */
static void put_easy(struct otlp_http *h, struct job *j)
{
    struct conn_kit *k = kit_for(h, j);
    if (k && k->nidle < MAX_IN_FLIGHT && !h->closing)
        k->idle[k->nidle++] = j->easy;
    else
        cu.easy_cleanup(j->easy);
    j->easy = NULL;
    cu.slist_free_all(j->own_hdrs);
    j->own_hdrs = NULL;
}

/* The endpoint's URL, parsed once: libcurl parses CURLOPT_URL again at
 * every request, a large part of a POST's cost (docs/performance.md). */
static CURLU *make_url(const char *url)
{
    CURLU *u = cu.url();
    if (u && cu.url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
        cu.url_cleanup(u);
        u = NULL; /* CURLOPT_URL then, which reports why it does not parse */
    }
    return u;
}

/* What stays the same for every POST a new handle makes with these
 * settings: set once, since the kit's handles keep their options. */
static void set_fixed(struct otlp_http *h, CURL *e, const struct otlp_signal *sig, struct curl_slist *hdrs,
                      CURLU *url)
{
    /* A batch of 512 spans is 140 KiB or more; with libcurl's 64 KiB
     * upload buffer it went out over three loop iterations (see
     * MAX_IN_FLIGHT). Set once per handle: setting it frees the buffer. */
    cu.easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, UPLOAD_BUFFER);
    cu.easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    if (url)
        cu.easy_setopt(e, CURLOPT_CURLU, url);
    else
        cu.easy_setopt(e, CURLOPT_URL, sig->url);
    cu.easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    cu.easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
    cu.easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)sig->timeout_ms);
    cu.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    cu.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    cu.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    cu.easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    cu.easy_setopt(e, CURLOPT_CLOSESOCKETDATA, h);
    if (h->no_proxy_env)
        cu.easy_setopt(e, CURLOPT_PROXY, "");
    /* HTTPS verifies the peer by default; a private CA comes from
     * OTEL_EXPORTER_OTLP_CERTIFICATE. */
    cu.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    cu.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (sig->ca_file[0])
        cu.easy_setopt(e, CURLOPT_CAINFO, sig->ca_file);
}

static void start(struct otlp_http *h, struct job *j)
{
    struct conn_kit *k = kit_for(h, j);
    if (k && !k->hdrs) {
        k->hdrs = make_headers(j->sig, j->body.gzip);
        k->url = make_url(j->sig->url);
    }
    if (k && k->nidle) {
        j->easy = k->idle[--k->nidle];
    } else {
        j->easy = cu.easy_init();
        if (j->easy) {
            if (!k)
                j->own_hdrs = make_headers(j->sig, j->body.gzip);
            set_fixed(h, j->easy, j->sig, k ? k->hdrs : j->own_hdrs, k ? k->url : NULL);
        }
    }
    if (!j->easy) {
        finish(h, j, false);
        return;
    }
    j->attempts++;
    j->retry_after_s = -1;
    j->header_bytes = 0;
    j->too_large = false;
    cu.easy_setopt(j->easy, CURLOPT_POST, 1L);
    memset(&j->cur, 0, sizeof(j->cur));
    cu.easy_setopt(j->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body.len);
    cu.easy_setopt(j->easy, CURLOPT_READDATA, j);
    cu.easy_setopt(j->easy, CURLOPT_SEEKDATA, j);
    cu.easy_setopt(j->easy, CURLOPT_WRITEDATA, j);
    cu.easy_setopt(j->easy, CURLOPT_HEADERDATA, j);
    cu.easy_setopt(j->easy, CURLOPT_PRIVATE, j);
    h->in_flight++;
    cu.multi_add_handle(h->multi, j->easy);
}

static void on_retry_timer(uv_timer_t *t)
{
    start_ready(t->data);
}

/* Starts due jobs, oldest first, up to MAX_IN_FLIGHT, and arms the retry
 * timer for the next one that is waiting. */
static void start_ready(struct otlp_http *h)
{
    if (h->closing)
        return;
    uint64_t now = uv_now(h->loop), next = UINT64_MAX;
    struct dlist *pos, *tmp;
    dlist_foreach_safe(pos, tmp, &h->jobs) {
        struct job *j = container_of(pos, struct job, node);
        if (j->easy)
            continue;
        if (j->next_try <= now && h->in_flight < MAX_IN_FLIGHT)
            start(h, j);
        else if (j->next_try > now && j->next_try < next)
            next = j->next_try;
    }
    /* Only jobs waiting for their time arm the timer: a job waiting for a
     * free slot starts when a transfer ends (check_done). A timer re-armed
     * for "now" from its own callback would run forever inside libuv's
     * timer phase. */
    if (next != UINT64_MAX)
        uv_timer_start(&h->retry_timer, on_retry_timer, next - now, 0);
}

struct otlp_http *otlp_http_new(uv_loop_t *loop, const struct tel_settings *set, otlp_http_done done,
                                void *arg)
{
    if (libcurl_load() != 0)
        return NULL;
    struct otlp_http *h = xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->set = set;
    h->done = done;
    h->arg = arg;
    h->rng = (uint32_t)uv_hrtime() | 1;
    /* libcurl reads the proxy variables at every request; the
     * environment does not change, so when none is set, say so once. */
    static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                             "ALL_PROXY", "no_proxy", "NO_PROXY"};
    h->no_proxy_env = true;
    for (size_t i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
        if (getenv(proxy_vars[i]))
            h->no_proxy_env = false;
    dlist_init(&h->jobs);
    dlist_init(&h->socks);
    dlist_init(&h->idle_socks);
    h->multi = cu.multi_init();
    cu.multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    cu.multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    cu.multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
    cu.multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    uv_timer_init(loop, &h->curl_timer);
    uv_timer_init(loop, &h->retry_timer);
    uv_idle_init(loop, &h->kick);
    h->curl_timer.data = h->retry_timer.data = h->kick.data = h;
    h->open_handles = 3;
    return h;
}

void otlp_http_post(struct otlp_http *h, const struct otlp_signal *sig, struct otlp_body *body, size_t items,
                    bool traces, uint64_t deadline_ms)
{
    if (h->closing) {
        otlp_body_free(body);
        h->done(h->arg, false, items, traces);
        return;
    }
    if (h->njobs >= MAX_JOBS) {
        /* Push out the oldest batch not in flight. */
        struct dlist *pos;
        dlist_foreach(pos, &h->jobs) {
            struct job *old = container_of(pos, struct job, node);
            if (!old->easy) {
                log_debug("otlp: export queue full; dropping an older batch of %zu", old->items);
                finish(h, old, false);
                break;
            }
        }
        if (h->njobs >= MAX_JOBS) {
            otlp_body_free(body);
            h->done(h->arg, false, items, traces);
            return;
        }
    }
    struct job *j = xcalloc(1, sizeof(*j));
    j->sig = sig;
    j->body = *body;
    otlp_body_init(body);
    cbuf_init(&j->response);
    j->items = items;
    j->traces = traces;
    j->deadline = uv_now(h->loop) + deadline_ms;
    j->next_try = 0;
    dlist_push_tail(&h->jobs, &j->node);
    h->njobs++;
    start_ready(h);
}

size_t otlp_http_pending(const struct otlp_http *h) { return h->njobs; }

void otlp_http_last_try(struct otlp_http *h)
{
    h->last_try = true;
    struct dlist *pos;
    dlist_foreach(pos, &h->jobs)
        container_of(pos, struct job, node)->next_try = 0;
    start_ready(h);
}

void otlp_http_close(struct otlp_http *h, void (*closed)(void *arg), void *arg)
{
    h->closing = true;
    h->closed = closed;
    h->closed_arg = arg;
    while (!dlist_empty(&h->jobs)) {
        struct job *j = container_of(h->jobs.next, struct job, node);
        if (j->easy) {
            cu.multi_remove_handle(h->multi, j->easy);
            put_easy(h, j);
        }
        finish(h, j, false);
    }
    for (size_t i = 0; i < MAX_KITS; i++) {
        struct conn_kit *k = &h->kits[i];
        while (k->nidle)
            cu.easy_cleanup(k->idle[--k->nidle]);
        cu.slist_free_all(k->hdrs);
        if (k->url)
            cu.url_cleanup(k->url);
        memset(k, 0, sizeof(*k));
    }
    cu.multi_cleanup(h->multi);
    h->multi = NULL;
    /* Any socket curl did not report removed, and the idle handles. */
    while (!dlist_empty(&h->socks))
        sock_close(container_of(h->socks.next, struct sock, node));
    while (!dlist_empty(&h->idle_socks))
        sock_close(container_of(h->idle_socks.next, struct sock, node));
    uv_close((uv_handle_t *)&h->curl_timer, handle_closed);
    uv_close((uv_handle_t *)&h->retry_timer, handle_closed);
    uv_close((uv_handle_t *)&h->kick, handle_closed);
}

void otlp_http_buffer(struct otlp_http *h, struct otlp_body *b)
{
    *b = h->spare;
    otlp_body_init(&h->spare);
}

void otlp_http_free(struct otlp_http *h)
{
    otlp_body_free(&h->spare);
    free(h);
}
