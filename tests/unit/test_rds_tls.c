/* Unit tests: rds_tls.c against an OpenSSL server in the same process,
 * the two joined by hand (what one side's out BIO holds is fed to the
 * other), so no socket is involved: the handshake, one seal per batch,
 * verification of names and addresses, session resumption and
 * close_notify. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "rds_tls.h"

static char dir[] = "/tmp/ferry-tls-unit-XXXXXX";
static char ca_path[64], other_path[64];
static EVP_PKEY *ca_key, *server_key;
static X509 *ca_cert, *server_cert;

static EVP_PKEY *new_key(void) { return EVP_EC_gen("P-256"); }

/* A certificate for cn, with subjectAltName san when not NULL, signed by
 * issuer's key (itself when issuer is NULL). */
static X509 *new_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), rand());
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, san ? NID_subject_alt_name : NID_basic_constraints,
                                              san ? san : "critical,CA:TRUE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
    return x;
}

static void write_pem(const char *path, X509 *x)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
}

static int setup(void **st)
{
    (void)st;
    if (!mkdtemp(dir))
        return -1;
    ca_key = new_key();
    server_key = new_key();
    ca_cert = new_cert(ca_key, "unit-ca", NULL, NULL, NULL);
    server_cert = new_cert(server_key, "localhost", "IP:127.0.0.1,DNS:localhost", ca_cert, ca_key);
    EVP_PKEY *other_key = new_key();
    X509 *other = new_cert(other_key, "other-ca", NULL, NULL, NULL);
    snprintf(ca_path, sizeof(ca_path), "%s/ca.pem", dir);
    snprintf(other_path, sizeof(other_path), "%s/other.pem", dir);
    write_pem(ca_path, ca_cert);
    write_pem(other_path, other);
    X509_free(other);
    EVP_PKEY_free(other_key);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    unlink(ca_path);
    unlink(other_path);
    rmdir(dir);
    X509_free(ca_cert);
    X509_free(server_cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(server_key);
    return 0;
}

/* The server's end: an SSL between two memory BIOs of its own. */
struct server {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *in, *out;
};

static void server_init(struct server *s, SSL_CTX *ctx)
{
    s->ctx = ctx;
    s->ssl = SSL_new(ctx);
    s->in = BIO_new(BIO_s_mem());
    s->out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(s->in, -1);
    BIO_set_mem_eof_return(s->out, -1);
    SSL_set_bio(s->ssl, s->in, s->out);
    SSL_set_accept_state(s->ssl);
}

static SSL_CTX *server_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate(ctx, server_cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, server_key), 1);
    return ctx;
}

static void server_free(struct server *s)
{
    SSL_free(s->ssl);
}

/* Moves what the client wrote (sealed into wire) to the server, lets the
 * server run, and moves its answer back. Returns the client's handshake
 * result after feeding it. */
static int exchange(struct rds_tls *t, struct server *s, struct cbuf *wire)
{
    if (wire->len)
        BIO_write(s->in, wire->data, (int)wire->len);
    wire->len = 0;
    if (!SSL_is_init_finished(s->ssl))
        SSL_do_handshake(s->ssl);
    char buf[4096];
    int n;
    while ((n = BIO_read(s->out, buf, sizeof(buf))) > 0)
        rds_tls_feed(t, buf, (size_t)n);
    return rds_tls_handshake(t);
}

/* Runs the handshake to its end; returns the last result (1 or -1). */
static int handshake(struct rds_tls *t, struct rds_tls_ctx *x, struct server *s)
{
    struct cbuf wire, plain;
    cbuf_init(&wire);
    cbuf_init(&plain);
    int rc = rds_tls_start(t, x);
    for (int i = 0; rc == 0 && i < 10; i++) {
        assert_int_equal(rds_tls_seal(t, &plain, &wire), 0);
        rc = exchange(t, s, &wire);
    }
    assert_int_equal(rds_tls_seal(t, &plain, &wire), 0); /* the client's Finished */
    if (wire.len)
        BIO_write(s->in, wire.data, (int)wire.len);
    if (rc == 1) /* the server takes the Finished (and, under TLS 1.3, sends its tickets) */
        SSL_do_handshake(s->ssl);
    cbuf_free(&wire);
    cbuf_free(&plain);
    return rc;
}

static struct rds_tls_settings settings(const char *ca, const char *name)
{
    struct rds_tls_settings s = {.ca_file = ca, .ca_dir = "", .cert = "", .key = "", .server_name = name,
                                 .host = "127.0.0.1", .min_version = "TLS1.2", .ciphers = "", .verify = true};
    return s;
}

static void test_round_trip_one_seal_per_batch(void **st)
{
    (void)st;
    struct rds_tls_ctx x;
    char why[256];
    struct rds_tls_settings ts = settings(ca_path, "");
    assert_int_equal(rds_tls_ctx_init(&x, &ts, why, sizeof(why)), 0);
    struct server s;
    server_init(&s, server_ctx());
    struct rds_tls t;
    assert_int_equal(handshake(&t, &x, &s), 1);
    assert_true(t.up);

    /* A batch of commands larger than a record goes out in one seal. */
    struct cbuf plain, wire;
    cbuf_init(&plain);
    cbuf_init(&wire);
    for (int i = 0; i < 3000; i++)
        cbuf_put(&plain, "*1\r\n$4\r\nPING\r\n", 14);
    size_t sent = plain.len;
    assert_int_equal(rds_tls_seal(&t, &plain, &wire), 0);
    assert_int_equal(plain.len, 0);
    assert_true(wire.len > sent);
    assert_false(rds_tls_has_output(&t));
    BIO_write(s.in, wire.data, (int)wire.len);
    char *got = malloc(sent);
    size_t have = 0;
    int n;
    while (have < sent && (n = SSL_read(s.ssl, got + have, (int)(sent - have))) > 0)
        have += (size_t)n;
    assert_int_equal(have, sent);
    assert_memory_equal(got, "*1\r\n$4\r\nPING\r\n", 14);

    /* The answer, fed back a byte at a time, reads whole. */
    assert_int_equal(SSL_write(s.ssl, "+PONG\r\n", 7), 7);
    char buf[4096];
    n = BIO_read(s.out, buf, sizeof(buf));
    assert_true(n > 7);
    char out[16];
    size_t outn = 0;
    for (int i = 0; i < n; i++) {
        rds_tls_feed(&t, buf + i, 1);
        ssize_t r;
        while ((r = rds_tls_read(&t, out + outn, sizeof(out) - outn)) > 0)
            outn += (size_t)r;
        assert_true(r == 0);
    }
    assert_int_equal(outn, 7);
    assert_memory_equal(out, "+PONG\r\n", 7);

    /* A large value in each direction: the memory BIOs that held it
     * are replaced once empty, so the connection does not keep it. */
    size_t big = 600 * 1024;
    char *v = malloc(big);
    memset(v, 'v', big);
    plain.len = 0;
    wire.len = 0;
    cbuf_put(&plain, v, big);
    assert_int_equal(rds_tls_seal(&t, &plain, &wire), 0);
    BUF_MEM *m;
    assert_int_equal(BIO_get_mem_ptr(t.out, &m), 1);
    assert_true(m->max <= 64 * 1024);
    BIO_write(s.in, wire.data, (int)wire.len);
    for (have = 0; have < big && (n = SSL_read(s.ssl, v, (int)big)) > 0;)
        have += (size_t)n;
    assert_int_equal(have, big);
    assert_int_equal(SSL_write(s.ssl, v, (int)big), (int)big);
    char chunk[16384];
    while ((n = BIO_read(s.out, chunk, sizeof(chunk))) > 0)
        rds_tls_feed(&t, chunk, (size_t)n);
    ssize_t r;
    for (have = 0; (r = rds_tls_read(&t, v, big)) > 0;)
        have += (size_t)r;
    assert_int_equal(r, 0);
    assert_int_equal(have, big);
    assert_int_equal(BIO_get_mem_ptr(t.in, &m), 1);
    assert_true(m->max <= 64 * 1024);
    free(v);

    /* close_notify: the server reads the end of the session. */
    wire.len = 0;
    rds_tls_close(&t, &wire);
    assert_true(wire.len > 0);
    BIO_write(s.in, wire.data, (int)wire.len);
    assert_true(SSL_read(s.ssl, buf, sizeof(buf)) <= 0);
    assert_int_equal(SSL_get_error(s.ssl, 0), SSL_ERROR_ZERO_RETURN);

    free(got);
    cbuf_free(&plain);
    cbuf_free(&wire);
    rds_tls_free(&t);
    server_free(&s);
    SSL_CTX_free(s.ctx);
    rds_tls_ctx_free(&x);
}

static void test_verification_failures_name_their_reason(void **st)
{
    (void)st;
    static const struct {
        const char *ca, *name, *reason;
    } cases[] = {
        {NULL, "", "certificate verify failed: unable to get local issuer certificate"},
        {"ca", "other.example", "certificate verify failed: hostname mismatch"},
        {"ca", "10.1.2.3", "certificate verify failed: IP address mismatch"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rds_tls_ctx x;
        char why[256];
        struct rds_tls_settings ts = settings(cases[i].ca ? ca_path : other_path, cases[i].name);
        assert_int_equal(rds_tls_ctx_init(&x, &ts, why, sizeof(why)), 0);
        struct server s;
        server_init(&s, server_ctx());
        struct rds_tls t;
        assert_int_equal(handshake(&t, &x, &s), -1);
        assert_true(t.broken);
        assert_non_null(strstr(t.why, cases[i].reason));
        /* A broken session sends its alert, and no close_notify. */
        struct cbuf wire;
        cbuf_init(&wire);
        rds_tls_close(&t, &wire);
        cbuf_free(&wire);
        rds_tls_free(&t);
        server_free(&s);
        SSL_CTX_free(s.ctx);
        rds_tls_ctx_free(&x);
    }
    assert_int_equal(ERR_peek_error(), 0); /* the error queue is left empty */
}

static void test_the_next_connection_resumes_and_a_rebuild_forgets(void **st)
{
    (void)st;
    struct rds_tls_ctx x;
    char why[256];
    struct rds_tls_settings ts = settings(ca_path, "localhost");
    assert_int_equal(rds_tls_ctx_init(&x, &ts, why, sizeof(why)), 0);
    SSL_CTX *sctx = server_ctx();
    for (int round = 0; round < 3; round++) {
        if (round == 2)
            assert_int_equal(rds_tls_ctx_rebuild(&x, &ts, why, sizeof(why)), 0);
        struct server s;
        server_init(&s, sctx);
        struct rds_tls t;
        assert_int_equal(handshake(&t, &x, &s), 1);
        /* TLS 1.3 tickets come after the handshake: read them. */
        char buf[4096];
        int n;
        while ((n = BIO_read(s.out, buf, sizeof(buf))) > 0)
            rds_tls_feed(&t, buf, (size_t)n);
        assert_int_equal(rds_tls_read(&t, buf, sizeof(buf)), 0);
        assert_int_equal(SSL_session_reused(t.ssl), round == 1);
        if (round == 0)
            assert_non_null(x.session);
        /* As rds_conn.c closes: a session ended without close_notify
         * would be marked not resumable by OpenSSL. */
        struct cbuf wire;
        cbuf_init(&wire);
        rds_tls_close(&t, &wire);
        assert_true(wire.len > 0);
        cbuf_free(&wire);
        rds_tls_free(&t);
        server_free(&s);
    }
    assert_int_equal(x.handshakes, 3);
    assert_int_equal(x.resumed, 1);
    SSL_CTX_free(sctx);
    rds_tls_ctx_free(&x);
}

static void test_key_checks(void **st)
{
    (void)st;
    char why[256];
    assert_int_equal(rds_tls_check_ca_file("", why, sizeof(why)), 0);
    assert_int_equal(rds_tls_check_ca_file(ca_path, why, sizeof(why)), 0);
    assert_int_equal(rds_tls_check_ca_file("/nonexistent/ca.pem", why, sizeof(why)), -1);
    assert_non_null(strstr(why, "key 'redis_tls_ca_file': cannot read /nonexistent/ca.pem"));
    assert_int_equal(rds_tls_check_cert(ca_path, why, sizeof(why)), 0);
    assert_int_equal(rds_tls_check_key(ca_path, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "key 'redis_tls_key': no private key in"));
    assert_int_equal(rds_tls_check_ca_dir(dir, why, sizeof(why)), 0);
    assert_int_equal(rds_tls_check_ca_dir(ca_path, why, sizeof(why)), -1);
    assert_int_equal(rds_tls_check_min_version("TLS1.3", why, sizeof(why)), 0);
    assert_int_equal(rds_tls_check_min_version("TLS1.1", why, sizeof(why)), -1);
    assert_int_equal(rds_tls_check_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256", why, sizeof(why)), 0);
    assert_int_equal(rds_tls_check_ciphers("NOT-A-CIPHER", why, sizeof(why)), -1);
    assert_int_equal(ERR_peek_error(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_one_seal_per_batch),
        cmocka_unit_test(test_verification_failures_name_their_reason),
        cmocka_unit_test(test_the_next_connection_resumes_and_a_rebuild_forgets),
        cmocka_unit_test(test_key_checks),
    };
    return cmocka_run_group_tests_name("rds_tls", tests, setup, teardown);
}
