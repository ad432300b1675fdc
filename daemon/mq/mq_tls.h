/* mq_tls.h: TLS to the broker (amqps://) through rabbitmq-c's OpenSSL
 * socket: the amqp_tls_* values, their checks where they are set, and the
 * socket each connection attempt opens with them.
 *
 * The files are read again at every attempt (rabbitmq-c makes a new
 * SSL_CTX per socket), so a certificate replaced under the same path is
 * used from the next reconnect on, without a reload; values changed by a
 * reload are handed to the thread for its next attempt too. */
#ifndef FERRY_MQ_TLS_H
#define FERRY_MQ_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <amqp.h>

/* Room for OpenSSL's verdict on the broker's certificate. */
#define MQ_TLS_VERDICT 160

struct mq_tls {
    char *ca_file;   /* owns; "": the system's trust store */
    char *cert;      /* owns; "": no client certificate */
    char *key;       /* owns; the private key of cert */
    bool verify;     /* check the broker's certificate and name */
};

/* Copies the values (amqp_tls_verify is "yes" or "no"). */
void mq_tls_set(struct mq_tls *t, const char *ca_file, const char *cert, const char *key, const char *verify);
void mq_tls_copy(struct mq_tls *dst, const struct mq_tls *src);
void mq_tls_free(struct mq_tls *t);

/* The keys' checks (struct cfg_key.check): "" passes; a file must exist,
 * be readable and hold what the key names. Return 0, or -1 with why. */
int mq_tls_check_ca_file(const char *v, char *why, size_t len);
int mq_tls_check_cert(const char *v, char *why, size_t len);
int mq_tls_check_key(const char *v, char *why, size_t len);
int mq_tls_check_yes_no(const char *v, char *why, size_t len);
/* Whether key is the private key of cert. Returns 0, or -1 with why. */
int mq_tls_check_pair(const char *cert, const char *key, char *why, size_t len);

/* ---- AMQP thread ---- */
/* Gives conn a TLS socket for host set up from t (conn owns it).
 * verdict (MQ_TLS_VERDICT bytes, outliving conn) receives OpenSSL's
 * reason if the broker's certificate or name fails the check, or the
 * broker's fatal alert. Returns the socket, or NULL with why. */
amqp_socket_t *mq_tls_socket(amqp_connection_state_t conn, const struct mq_tls *t, const char *host,
                             char *verdict, char *why, size_t len);
/* Why an attempt over TLS failed with rabbitmq-c's status, in words: the
 * verdict, else OpenSSL's last error on this thread, else (after_handshake:
 * the login failed) a likely cause, else rabbitmq-c's own words. Clears
 * the thread's OpenSSL errors. */
void mq_tls_describe(int status, const char *verdict, bool after_handshake, char *buf, size_t len);

#endif
