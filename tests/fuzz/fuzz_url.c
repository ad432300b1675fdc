/* Fuzz target: the URLs of redis_url and amqp_url (base/url.c), and their
 * redaction for logs. Properties: no crash or overread; a parsed Redis
 * URL has a host or a socket path; a redacted URL never holds the
 * password as written. */
#define _GNU_SOURCE
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "url.h"

/* Asserts that red's authority does not hold url's password as written,
 * the text between the userinfo's first ':' and the authority's last '@'
 * (the same text elsewhere, in a query value, is not the password). */
static void check_redacted(const char *url, const char *red)
{
    const char *auth = strstr(url, "//");
    if (!auth)
        return;
    auth += 2;
    size_t alen = strcspn(auth, "/?");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@')
            at = p;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon || at - colon - 1 < 1 || (at - colon - 1 == 3 && !memcmp(colon + 1, "***", 3)))
        return;
    size_t n = (size_t)(at - colon) + 1; /* ":password@" */
    char *needle = malloc(n + 1);
    memcpy(needle, colon, n);
    needle[n] = '\0';
    const char *rauth = strstr(red, "//");
    if (rauth) {
        rauth += 2;
        char *ra = strndup(rauth, strcspn(rauth, "/?"));
        assert(strstr(ra, needle) == NULL);
        free(ra);
    }
    free(needle);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char err[256];
    struct url_redis r;
    memset(&r, 0, sizeof(r));
    if (url_parse_redis(s, &r, err, sizeof(err)) == 0) {
        assert(r.is_unix ? r.path[0] != '\0' : r.host[0] != '\0');
        char red[1024];
        url_redact(s, red, sizeof(red));
        if (size < sizeof(red) - 16)
            check_redacted(s, red);
    }
    url_redis_free(&r);
    struct url_amqp a;
    memset(&a, 0, sizeof(a));
    if (url_parse_amqp(s, &a, err, sizeof(err)) == 0 && size < sizeof(a.redacted) - 16)
        check_redacted(s, a.redacted);
    url_amqp_free(&a);
    free(s);
    return 0;
}
