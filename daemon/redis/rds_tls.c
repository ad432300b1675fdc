/* rds_tls.c: OpenSSL over memory BIOs for the Redis connections; see
 * rds_tls.h. The socket stays libuv's (rds_conn.c): OpenSSL only turns
 * bytes into bytes, so a TLS connection keeps the loop's rules (nothing
 * blocks, one coalesced write per iteration, deadlines from one timer). */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "rds_tls.h"

/* A memory BIO keeps the largest buffer it ever held. One left empty
 * with more than this is replaced, so that a connection that once carried
 * a large value gives the memory back, as outq's buffers do. */
#define KEEP_BYTES (64 * 1024)

/* Writes "what: reason" from OpenSSL's error queue, with the verifier's
 * own reason after a failed certificate check, and empties the queue
 * (ferryd's loop thread shares it with nothing else of ours). */
static void ssl_why(char *why, size_t len, const char *what, const SSL *ssl)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (r && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
        v != X509_V_OK)
        snprintf(why, len, "%s: %s: %s", what, r, X509_verify_cert_error_string(v));
    else if (r)
        snprintf(why, len, "%s: %s", what, r);
    else if (e)
        snprintf(why, len, "%s: OpenSSL error %lx", what, e);
    else
        snprintf(why, len, "%s: the connection ended", what);
    ERR_clear_error();
}

/* A file the start would open, checked first with access() so that a
 * missing one is named plainly rather than by OpenSSL's error stack. */
static int readable(const char *key, const char *path, char *why, size_t len)
{
    if (access(path, R_OK) != 0) {
        snprintf(why, len, "key '%s': cannot read %s: %s", key, path, strerror(errno));
        return -1;
    }
    return 0;
}

static SSL_CTX *scratch_ctx(char *why, size_t len)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        ssl_why(why, len, "cannot make a TLS context", NULL);
    return ctx;
}

int rds_tls_check_ca_file(const char *v, char *why, size_t len)
{
    if (!v[0])
        return 0;
    if (readable("redis_tls_ca_file", v, why, len) != 0)
        return -1;
    SSL_CTX *ctx = scratch_ctx(why, len);
    if (!ctx)
        return -1;
    int rc = 0;
    if (SSL_CTX_load_verify_locations(ctx, v, NULL) != 1) {
        char what[300];
        snprintf(what, sizeof(what), "key 'redis_tls_ca_file': no CA certificate in %.200s", v);
        ssl_why(why, len, what, NULL);
        rc = -1;
    }
    SSL_CTX_free(ctx);
    return rc;
}

int rds_tls_check_ca_dir(const char *v, char *why, size_t len)
{
    struct stat st;
    if (!v[0])
        return 0;
    if (stat(v, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(why, len, "key 'redis_tls_ca_dir': %s is not a directory", v);
        return -1;
    }
    return 0;
}

int rds_tls_check_cert(const char *v, char *why, size_t len)
{
    if (!v[0])
        return 0;
    if (readable("redis_tls_cert", v, why, len) != 0)
        return -1;
    SSL_CTX *ctx = scratch_ctx(why, len);
    if (!ctx)
        return -1;
    int rc = 0;
    if (SSL_CTX_use_certificate_chain_file(ctx, v) != 1) {
        char what[300];
        snprintf(what, sizeof(what), "key 'redis_tls_cert': no certificate in %.200s", v);
        ssl_why(why, len, what, NULL);
        rc = -1;
    }
    SSL_CTX_free(ctx);
    return rc;
}

int rds_tls_check_key(const char *v, char *why, size_t len)
{
    if (!v[0])
        return 0;
    if (readable("redis_tls_key", v, why, len) != 0)
        return -1;
    SSL_CTX *ctx = scratch_ctx(why, len);
    if (!ctx)
        return -1;
    int rc = 0;
    if (SSL_CTX_use_PrivateKey_file(ctx, v, SSL_FILETYPE_PEM) != 1) {
        char what[300];
        snprintf(what, sizeof(what), "key 'redis_tls_key': no private key in %.200s", v);
        ssl_why(why, len, what, NULL);
        rc = -1;
    }
    SSL_CTX_free(ctx);
    return rc;
}

int rds_tls_check_min_version(const char *v, char *why, size_t len)
{
    if (strcmp(v, "TLS1.2") && strcmp(v, "TLS1.3")) {
        snprintf(why, len, "'%s' is not TLS1.2 or TLS1.3", v);
        return -1;
    }
    return 0;
}

int rds_tls_check_ciphers(const char *v, char *why, size_t len)
{
    if (!v[0])
        return 0;
    SSL_CTX *ctx = scratch_ctx(why, len);
    if (!ctx)
        return -1;
    int rc = 0;
    if (SSL_CTX_set_cipher_list(ctx, v) != 1) {
        ssl_why(why, len, "key 'redis_tls_ciphers': no cipher OpenSSL knows", NULL);
        rc = -1;
    }
    SSL_CTX_free(ctx);
    return rc;
}

/* OpenSSL hands over each session the server offers (TLS 1.3 sends its
 * tickets after the handshake, so this runs inside rds_tls_read). The
 * newest is kept for the next connection to the same target, unless it
 * comes from a context a reload has replaced: it was verified against
 * files no longer in force. Returns 1 when it keeps the reference. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct rds_tls *t = SSL_get_app_data(ssl);
    if (!t || SSL_get_SSL_CTX(ssl) != t->x->ssl_ctx || !SSL_SESSION_is_resumable(sess))
        return 0;
    SSL_SESSION_free(t->x->session);
    t->x->session = sess;
    return 1;
}

static SSL_CTX *build(const struct rds_tls_settings *s, char *why, size_t len)
{
    SSL_CTX *ctx = scratch_ctx(why, len);
    if (!ctx)
        return NULL;
    /* Renegotiation would let the server restart the handshake in the
     * middle of the pipelined stream; Redis never asks for it. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_min_proto_version(ctx, strcmp(s->min_version, "TLS1.3") == 0 ? TLS1_3_VERSION : TLS1_2_VERSION);
    if (s->ciphers[0] && SSL_CTX_set_cipher_list(ctx, s->ciphers) != 1) {
        ssl_why(why, len, "key 'redis_tls_ciphers': no cipher OpenSSL knows", NULL);
        goto fail;
    }
    if (!s->verify) {
        /* Nothing is checked, so no CA store is loaded: the system's
         * would be held in memory for nothing. */
    } else if (s->ca_file[0] || s->ca_dir[0]) {
        if (SSL_CTX_load_verify_locations(ctx, s->ca_file[0] ? s->ca_file : NULL,
                                          s->ca_dir[0] ? s->ca_dir : NULL) != 1) {
            ssl_why(why, len, s->ca_file[0] ? "key 'redis_tls_ca_file'" : "key 'redis_tls_ca_dir'", NULL);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ssl_why(why, len, "the system's CA store", NULL);
        goto fail;
    }
    if (s->cert[0] || s->key[0]) {
        if (!s->cert[0] || !s->key[0]) {
            snprintf(why, len, "key '%s': mutual TLS needs both redis_tls_cert and redis_tls_key",
                     s->cert[0] ? "redis_tls_key" : "redis_tls_cert");
            goto fail;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, s->cert) != 1) {
            ssl_why(why, len, "key 'redis_tls_cert'", NULL);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, s->key, SSL_FILETYPE_PEM) != 1) {
            ssl_why(why, len, "key 'redis_tls_key', with redis_tls_cert", NULL);
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            ssl_why(why, len, "key 'redis_tls_key', with redis_tls_cert", NULL);
            goto fail;
        }
    }
    SSL_CTX_set_verify(ctx, s->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int rds_tls_ctx_init(struct rds_tls_ctx *x, const struct rds_tls_settings *s, char *why, size_t len)
{
    memset(x, 0, sizeof(*x));
    const char *name = s->server_name[0] ? s->server_name : s->host;
    if (strlen(name) >= sizeof(x->name)) {
        snprintf(why, len, "key 'redis_tls_server_name': longer than %zu bytes", sizeof(x->name) - 1);
        return -1;
    }
    x->ssl_ctx = build(s, why, len);
    if (!x->ssl_ctx)
        return -1;
    snprintf(x->name, sizeof(x->name), "%s", name);
    x->verify = s->verify;
    return 0;
}

int rds_tls_ctx_rebuild(struct rds_tls_ctx *x, const struct rds_tls_settings *s, char *why, size_t len)
{
    struct rds_tls_ctx next;
    if (rds_tls_ctx_init(&next, s, why, len) != 0)
        return -1;
    next.handshakes = x->handshakes;
    next.resumed = x->resumed;
    rds_tls_ctx_free(x);
    *x = next;
    return 0;
}

void rds_tls_ctx_free(struct rds_tls_ctx *x)
{
    SSL_SESSION_free(x->session);
    SSL_CTX_free(x->ssl_ctx);
    x->session = NULL;
    x->ssl_ctx = NULL;
}

static BIO *new_mem_bio(void)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (b) /* empty, it asks to be retried rather than report an end */
        BIO_set_mem_eof_return(b, -1);
    return b;
}

/* Whether b is empty and holds on to more than KEEP_BYTES. */
static bool oversized(BIO *b)
{
    BUF_MEM *m = NULL;
    return BIO_ctrl_pending(b) == 0 && BIO_get_mem_ptr(b, &m) == 1 && m && m->max > KEEP_BYTES;
}

static bool is_ip(const char *name)
{
    unsigned char a[16];
    return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

int rds_tls_start(struct rds_tls *t, struct rds_tls_ctx *x)
{
    memset(t, 0, sizeof(*t));
    t->x = x;
    ERR_clear_error();
    t->ssl = SSL_new(x->ssl_ctx);
    t->in = new_mem_bio();
    t->out = new_mem_bio();
    if (!t->ssl || !t->in || !t->out) {
        ssl_why(t->why, sizeof(t->why), "cannot start TLS", NULL);
        BIO_free(t->in);
        BIO_free(t->out);
        t->in = t->out = NULL;
        t->broken = true;
        return -1;
    }
    SSL_set_bio(t->ssl, t->in, t->out);
    SSL_set_app_data(t->ssl, t);
    SSL_set_connect_state(t->ssl);
    bool ip = is_ip(x->name);
    int ok = 1;
    if (!ip) /* RFC 6066: SNI names a host, never an address */
        ok &= SSL_set_tlsext_host_name(t->ssl, x->name);
    if (x->verify) {
        if (ip) {
            ok &= X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), x->name);
        } else {
            SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok &= SSL_set1_host(t->ssl, x->name);
        }
    }
    if (x->session)
        ok &= SSL_set_session(t->ssl, x->session);
    if (!ok) {
        ssl_why(t->why, sizeof(t->why), "cannot start TLS", NULL);
        t->broken = true;
        return -1;
    }
    return rds_tls_handshake(t) < 0 ? -1 : 0;
}

void rds_tls_feed(struct rds_tls *t, const char *p, size_t n)
{
    /* A memory BIO only grows; it fails only when malloc does, and ferryd
     * aborts then, as cbuf does. */
    while (n > 0) {
        int k = n > INT_MAX ? INT_MAX : (int)n;
        int w = BIO_write(t->in, p, k);
        if (w <= 0)
            abort();
        p += w;
        n -= (size_t)w;
    }
}

int rds_tls_handshake(struct rds_tls *t)
{
    if (t->up)
        return 1;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->up = true;
        t->x->handshakes++;
        t->x->resumed += SSL_session_reused(t->ssl) ? 1 : 0;
        return 1;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    t->broken = true;
    if (e == SSL_ERROR_SSL)
        ssl_why(t->why, sizeof(t->why), "TLS handshake", t->ssl);
    else
        snprintf(t->why, sizeof(t->why), "TLS handshake: redis ended it (SSL error %d)", e);
    ERR_clear_error();
    return -1;
}

ssize_t rds_tls_read(struct rds_tls *t, char *buf, size_t cap)
{
    ERR_clear_error();
    int n = SSL_read(t->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
    if (n > 0)
        return n;
    int e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ) {
        BIO *b;
        if (oversized(t->in) && (b = new_mem_bio())) {
            SSL_set0_rbio(t->ssl, b); /* frees the old one */
            t->in = b;
        }
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        snprintf(t->why, sizeof(t->why), "redis closed the TLS session");
        return -1;
    }
    t->broken = true;
    if (e == SSL_ERROR_SSL)
        ssl_why(t->why, sizeof(t->why), "TLS", t->ssl);
    else
        snprintf(t->why, sizeof(t->why), "TLS: read failed (SSL error %d)", e);
    ERR_clear_error();
    return -1;
}

static void drain(struct rds_tls *t, struct cbuf *wire)
{
    size_t n = BIO_ctrl_pending(t->out);
    if (n == 0)
        return;
    cbuf_reserve(wire, n);
    int r = BIO_read(t->out, wire->data + wire->len, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        wire->len += (size_t)r;
    BIO *b;
    if (t->up && oversized(t->out) && (b = new_mem_bio())) {
        SSL_set0_wbio(t->ssl, b); /* frees the old one */
        t->out = b;
    }
}

int rds_tls_seal(struct rds_tls *t, struct cbuf *plain, struct cbuf *wire)
{
    if (t->up && !t->broken && plain->len > 0) {
        ERR_clear_error();
        /* Without SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write takes all it
         * is given (a memory BIO never pushes back): one call, split into
         * records of 16 KiB. */
        for (size_t off = 0; off < plain->len;) {
            size_t left = plain->len - off;
            int n = SSL_write(t->ssl, plain->data + off, left > INT_MAX ? INT_MAX : (int)left);
            if (n <= 0) {
                t->broken = true;
                ssl_why(t->why, sizeof(t->why), "TLS write", t->ssl);
                return -1;
            }
            off += (size_t)n;
        }
        plain->len = 0;
    }
    drain(t, wire);
    return 0;
}

bool rds_tls_has_output(const struct rds_tls *t)
{
    return t->out && BIO_ctrl_pending(t->out) > 0;
}

void rds_tls_close(struct rds_tls *t, struct cbuf *wire)
{
    if (!t->ssl || !t->out)
        return;
    if (t->up && !t->broken) {
        ERR_clear_error();
        SSL_shutdown(t->ssl); /* queues close_notify; the reply is not awaited */
        ERR_clear_error();
    }
    drain(t, wire);
}

void rds_tls_free(struct rds_tls *t)
{
    SSL_free(t->ssl); /* and its BIOs */
    t->ssl = NULL;
    t->in = t->out = NULL;
}

void rds_tls_describe(const struct rds_tls *t, char *buf, size_t len)
{
    snprintf(buf, len, "%s %s%s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl),
             SSL_session_reused(t->ssl) ? ", session resumed" : "");
}
