/* mq_tls.c: amqps:// through rabbitmq-c's OpenSSL socket; see mq_tls.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp_ssl_socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cbuf.h"
#include "mq_tls.h"

void mq_tls_set(struct mq_tls *t, const char *ca_file, const char *cert, const char *key, const char *verify)
{
    t->ca_file = xstrdup(ca_file);
    t->cert = xstrdup(cert);
    t->key = xstrdup(key);
    t->verify = strcmp(verify, "no") != 0;
}

void mq_tls_copy(struct mq_tls *dst, const struct mq_tls *src)
{
    mq_tls_set(dst, src->ca_file, src->cert, src->key, src->verify ? "yes" : "no");
}

void mq_tls_free(struct mq_tls *t)
{
    free(t->ca_file);
    free(t->cert);
    free(t->key);
    t->ca_file = t->cert = t->key = NULL;
}

/* A key with a passphrase would make OpenSSL ask for it on the terminal,
 * which a daemon has not: refuse instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/* OpenSSL's newest error on this thread in words, or NULL; clears them. */
static const char *last_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r;
}

/* ---- checks where the keys are set ---- */

enum load_kind { LOAD_CA, LOAD_CERT, LOAD_KEY };

/* Loads path as the kind says into a throwaway context, with the calls the
 * connection makes, so that what it would refuse is refused here. */
static int check_load(enum load_kind kind, const char *path, char *why, size_t len)
{
    if (!*path)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, len, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    fclose(f);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(why, len, "OpenSSL cannot make a context");
        return -1;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    int ok = kind == LOAD_CA     ? SSL_CTX_load_verify_locations(ctx, path, NULL)
             : kind == LOAD_CERT ? SSL_CTX_use_certificate_chain_file(ctx, path)
                                 : SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM);
    SSL_CTX_free(ctx);
    if (ok == 1) {
        ERR_clear_error();
        return 0;
    }
    const char *r = last_reason();
    static const char *const what[] = {"PEM CA certificates", "a PEM certificate chain",
                                       "an unencrypted PEM private key"};
    snprintf(why, len, "%s does not hold %s (%s)", path, what[kind], r ? r : "unreadable");
    return -1;
}

int mq_tls_check_ca_file(const char *v, char *why, size_t len)
{
    return check_load(LOAD_CA, v, why, len);
}

int mq_tls_check_cert(const char *v, char *why, size_t len)
{
    return check_load(LOAD_CERT, v, why, len);
}

int mq_tls_check_key(const char *v, char *why, size_t len)
{
    return check_load(LOAD_KEY, v, why, len);
}

int mq_tls_check_yes_no(const char *v, char *why, size_t len)
{
    if (strcmp(v, "yes") && strcmp(v, "no")) {
        snprintf(why, len, "'%s' is not yes or no", v);
        return -1;
    }
    return 0;
}

int mq_tls_check_pair(const char *cert, const char *key, char *why, size_t len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(why, len, "OpenSSL cannot make a context");
        return -1;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    int ok = SSL_CTX_use_certificate_chain_file(ctx, cert) == 1 &&
             SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    SSL_CTX_free(ctx);
    if (ok) {
        ERR_clear_error();
        return 0;
    }
    const char *r = last_reason();
    snprintf(why, len, "%s is not the private key of %s (%s)", key, cert, r ? r : "mismatch");
    return -1;
}

/* ---- the socket (AMQP thread) ---- */

/* Keeps OpenSSL's first complaint about the broker's chain or name; the
 * handshake then fails, and rabbitmq-c only says that it did. */
static int on_verify(int ok, X509_STORE_CTX *x)
{
    if (ok)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    char *verdict = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (verdict && !verdict[0]) {
        int err = X509_STORE_CTX_get_error(x);
        snprintf(verdict, MQ_TLS_VERDICT, "the broker's certificate was refused: %s (certificate depth %d)",
                 X509_verify_cert_error_string(err), X509_STORE_CTX_get_error_depth(x));
    }
    return ok;
}

/* Keeps the broker's fatal alert: over TLS 1.3 a broker that refuses the
 * client certificate says so only after the handshake, and by the time the
 * login reports the failure OpenSSL's own error queue may be empty. */
static void on_info(const SSL *ssl, int where, int ret)
{
    if (!(where & SSL_CB_READ_ALERT) || (ret >> 8) != SSL3_AL_FATAL)
        return;
    char *verdict = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    int desc = ret & 0xff;
    /* OpenSSL 3.0 has no words for TLS 1.3's own alert. */
    const char *words = desc == TLS13_AD_CERTIFICATE_REQUIRED ? "certificate required" : SSL_alert_desc_string_long(ret);
    if (verdict && !verdict[0])
        snprintf(verdict, MQ_TLS_VERDICT, "the broker refused the handshake: %s (alert %d)", words, desc);
}

amqp_socket_t *mq_tls_socket(amqp_connection_state_t conn, const struct mq_tls *t, const char *host,
                             char *verdict, char *why, size_t len)
{
    verdict[0] = '\0';
    amqp_socket_t *s = amqp_ssl_socket_new(conn);
    if (!s) {
        snprintf(why, len, "cannot create a TLS socket");
        return NULL;
    }
    SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    int rc = t->ca_file[0] ? amqp_ssl_socket_set_cacert(s, t->ca_file)
                           : (SSL_CTX_set_default_verify_paths(ctx) == 1 ? AMQP_STATUS_OK : AMQP_STATUS_SSL_ERROR);
    if (rc != AMQP_STATUS_OK) {
        const char *r = last_reason();
        snprintf(why, len, "TLS: cannot load the CA certificates %.80s: %.60s",
                 t->ca_file[0] ? t->ca_file : "(system store)", r ? r : "error");
        return NULL;
    }
    if (t->cert[0] && amqp_ssl_socket_set_key(s, t->cert, t->key) != AMQP_STATUS_OK) {
        const char *r = last_reason();
        snprintf(why, len, "TLS: cannot load %.60s and %.60s: %.50s", t->cert, t->key, r ? r : "error");
        return NULL;
    }
    /* The name is checked by OpenSSL during the handshake, not by
     * rabbitmq-c after it: rabbitmq-c's check reads only DNS names, so a
     * broker reached by its IP address (an IP subjectAltName) could never
     * pass, and its failure comes without a reason. OpenSSL's also ends the
     * handshake before the client certificate is sent on. */
    amqp_ssl_socket_set_verify_hostname(s, 0);
    amqp_ssl_socket_set_verify_peer(s, t->verify);
    if (t->verify) {
        X509_VERIFY_PARAM *p = SSL_CTX_get0_param(ctx);
        if (X509_VERIFY_PARAM_set1_ip_asc(p, host) != 1 && X509_VERIFY_PARAM_set1_host(p, host, 0) != 1) {
            snprintf(why, len, "TLS: cannot check the name %.100s", host);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify);
    }
    SSL_CTX_set_app_data(ctx, verdict);
    SSL_CTX_set_info_callback(ctx, on_info);
    ERR_clear_error();
    return s;
}

void mq_tls_describe(int status, const char *verdict, bool after_handshake, char *buf, size_t len)
{
    const char *r = last_reason();
    bool broken = status == AMQP_STATUS_SSL_CONNECTION_FAILED || status == AMQP_STATUS_SSL_ERROR ||
                  status == AMQP_STATUS_SOCKET_ERROR || status == AMQP_STATUS_CONNECTION_CLOSED;
    if (verdict[0])
        snprintf(buf, len, "TLS: %s", verdict);
    else if (r && broken)
        snprintf(buf, len, "TLS: %s", r);
    else if (after_handshake && broken)
        /* A broker that refuses the client certificate under TLS 1.3 sends
         * its alert and closes at once; the reset that follows our first
         * write usually discards the alert before it is read. */
        snprintf(buf, len, "TLS: the broker closed the connection after the handshake (%s); "
                 "does it refuse the client certificate (amqp_tls_cert)?", amqp_error_string2(status));
    else
        snprintf(buf, len, "%s", amqp_error_string2(status));
}
