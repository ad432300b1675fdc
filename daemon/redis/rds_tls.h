/* rds_tls.h: TLS for the Redis connections (rediss://), with OpenSSL
 * between two memory BIOs, so that ferryd's own libuv I/O moves the bytes
 * and nothing here touches a socket or blocks.
 *
 *   uv_read --ciphertext--> rds_tls_feed --> SSL --> rds_tls_read --plaintext--> resp_guard, reader
 *   outq.pending --plaintext--> rds_tls_seal (one SSL_write) --records--> outq.writing --> uv_write
 */
#ifndef FERRY_RDS_TLS_H
#define FERRY_RDS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "cbuf.h"

/* What a TLS context is built from: the redis_tls_* keys, and the URL's
 * host (the name checked when no other is set). The strings are borrowed
 * for the call. */
struct rds_tls_settings {
    const char *ca_file;      /* "" with ca_dir "": the system's store */
    const char *ca_dir;
    const char *cert;         /* "" or a PEM chain, for mTLS */
    const char *key;          /* "" or its PEM private key */
    const char *server_name;  /* "" means host */
    const char *host;
    const char *min_version;  /* "TLS1.2" or "TLS1.3" */
    const char *ciphers;      /* "" leaves OpenSSL's list */
    bool verify;
};

/* What one backend's TLS connections share: built at start, rebuilt on
 * reload; a connection takes what it needs when it starts its handshake,
 * so a new context serves new connections only. */
struct rds_tls_ctx {
    SSL_CTX *ssl_ctx;         /* owns one reference; each SSL holds its own */
    char name[256];           /* sent as SNI (unless an IP address) and verified */
    bool verify;
    SSL_SESSION *session;     /* owns: the newest resumable session, or NULL */
    uint64_t handshakes;      /* completed */
    uint64_t resumed;         /* of which resumed a session */
};

/* One connection's TLS. */
struct rds_tls {
    SSL *ssl;                 /* owns, and through it the two BIOs */
    BIO *in;                  /* refers: ciphertext read from the socket */
    BIO *out;                 /* refers: ciphertext to write */
    struct rds_tls_ctx *x;    /* refers: its backend's */
    bool up;                  /* the handshake is over */
    bool broken;              /* a fatal error: no close_notify */
    char why[200];            /* the last error, for logs and requests */
};

/* Builds x from s. Returns 0, or -1 with why naming the key at fault. */
int rds_tls_ctx_init(struct rds_tls_ctx *x, const struct rds_tls_settings *s, char *why, size_t len)
    __attribute__((warn_unused_result));
/* Rebuilds x from s (reload): on success the new context replaces the old
 * and the kept session goes (it was verified against the old files); on
 * failure x is unchanged. Returns 0 or -1 with why. */
int rds_tls_ctx_rebuild(struct rds_tls_ctx *x, const struct rds_tls_settings *s, char *why, size_t len)
    __attribute__((warn_unused_result));
void rds_tls_ctx_free(struct rds_tls_ctx *x);

/* The checks of single keys, for their cfg_key entries (rds_config.c):
 * each loads what the start would. Return 0 or -1 with why. */
int rds_tls_check_ca_file(const char *v, char *why, size_t len);
int rds_tls_check_ca_dir(const char *v, char *why, size_t len);
int rds_tls_check_cert(const char *v, char *why, size_t len);
int rds_tls_check_key(const char *v, char *why, size_t len);
int rds_tls_check_min_version(const char *v, char *why, size_t len);
int rds_tls_check_ciphers(const char *v, char *why, size_t len);

/* Starts a client handshake over a connected socket: the ClientHello is
 * then waiting in the out BIO. Returns 0 or -1 with t->why. */
int rds_tls_start(struct rds_tls *t, struct rds_tls_ctx *x) __attribute__((warn_unused_result));
/* Takes n bytes read from the socket. */
void rds_tls_feed(struct rds_tls *t, const char *p, size_t n);
/* Advances the handshake with what was fed. Returns 1 when it has just
 * finished, 0 while it needs more, -1 on failure (t->why). */
int rds_tls_handshake(struct rds_tls *t) __attribute__((warn_unused_result));
/* Decrypts into buf. Returns the bytes written, 0 when no more can be had
 * until more is fed, or -1 when the connection is over: an error or the
 * peer's close_notify (t->why). */
ssize_t rds_tls_read(struct rds_tls *t, char *buf, size_t cap) __attribute__((warn_unused_result));
/* outq's seal hook, for the connection's queue: after the handshake,
 * everything in plain in one SSL_write; then whatever the out BIO holds
 * into wire. Returns 0, or -1 with t->why. */
int rds_tls_seal(struct rds_tls *t, struct cbuf *plain, struct cbuf *wire) __attribute__((warn_unused_result));
/* Whether the out BIO holds bytes to write. */
bool rds_tls_has_output(const struct rds_tls *t);
/* Ends the session: a close_notify (unless broken) after whatever is
 * still to write, appended to wire, for one last non-blocking write. */
void rds_tls_close(struct rds_tls *t, struct cbuf *wire);
void rds_tls_free(struct rds_tls *t);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" and whether a session was resumed. */
void rds_tls_describe(const struct rds_tls *t, char *buf, size_t len);

#endif
