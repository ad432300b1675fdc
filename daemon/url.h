/* url.h: parsing backend URLs, and redacting them for logs. Pure. */
#ifndef FERRY_URL_H
#define FERRY_URL_H

#include <stdbool.h>
#include <stddef.h>

struct redis_addr {
    bool is_unix;
    char host[256];      /* TCP host, without IPv6 brackets */
    int port;
    char path[108];      /* Unix socket path (sun_path's size) */
    char *user;          /* owns; NULL when absent */
    char *password;      /* owns; NULL when absent; never logged */
    int db;
};

/* Accepts redis://[user:password@]host[:port][/db] (port 6379, db 0 by
 * default; user and password percent-decoded) and
 * unix:///path/redis.sock[?db=N]. Returns 0, or -1 with a message in err. */
int url_parse_redis(const char *url, struct redis_addr *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void redis_addr_free(struct redis_addr *a);

/* Copies url with any password replaced by "***". */
void url_redact(const char *url, char *out, size_t len);

#endif
