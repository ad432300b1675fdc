/* cli_ratelimit.c: `ferry ratelimit KEY --rate N/s --burst B [--cost C]`:
 * one ratelimit request; exit 0 when allowed and 1 when not, so that a
 * shell script can write `ferry ratelimit k --rate 5/s --burst 5 && work`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_cmds.h"
#include "cli_print.h"

static int bad_usage(const char *why)
{
    fprintf(stderr, "ferry ratelimit: %s\n%s", why, cli_ratelimit_cmd.usage);
    return 64;
}

/* "N/s", "N/m", "N/h" or "N" (per second); N may have a fraction. */
static int parse_rate(const char *s, double *rate, uint64_t *period_ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v > 0))
        return -1;
    if (!*end || !strcmp(end, "/s"))
        *period_ms = 1000;
    else if (!strcmp(end, "/m"))
        *period_ms = 60000;
    else if (!strcmp(end, "/h"))
        *period_ms = 3600000;
    else
        return -1;
    *rate = v;
    return 0;
}

static long number(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || end == s || v < 0 ? -1 : v;
}

static int ratelimit_run(ferry_t *f, int n, char **w, const struct cli_ctx *ctx)
{
    const char *key = NULL;
    double rate = 0;
    uint64_t period = 0;
    long burst = -1, cost = -1;
    for (int i = 0; i < n; i++) {
        const char *opt = w[i];
        if (!strcmp(opt, "--rate") || !strcmp(opt, "--burst") || !strcmp(opt, "--cost")) {
            if (i + 1 == n)
                return bad_usage("an option lacks its value");
            const char *v = w[++i];
            if (opt[2] == 'r' && parse_rate(v, &rate, &period))
                return bad_usage("--rate is N/s, N/m or N/h");
            if (opt[2] == 'b' && (burst = number(v)) < 1)
                return bad_usage("--burst is a count of at least 1");
            if (opt[2] == 'c' && (cost = number(v)) < 0)
                return bad_usage("--cost is a count");
        } else if (!key) {
            key = opt;
        } else {
            return bad_usage("too many arguments");
        }
    }
    if (!key || !period || burst < 1)
        return bad_usage("KEY, --rate and --burst are needed");
    cbor_item_t *a = cbor_new_definite_map(5);
    cli_map_put(a, "key", cbor_build_string(key));
    if (rate == (double)(uint64_t)rate)
        cli_map_put(a, "rate", cbor_build_uint64((uint64_t)rate));
    else
        cli_map_put(a, "rate", cbor_build_float8(rate));
    cli_map_put(a, "period_ms", cbor_build_uint64(period));
    cli_map_put(a, "burst", cbor_build_uint64((uint64_t)burst));
    if (cost >= 0)
        cli_map_put(a, "cost", cbor_build_uint64((uint64_t)cost));
    ferry_msg_t *m = NULL;
    int rc = ferry_call(f, "ratelimit", a, ctx->deadline, &m, ctx->wait_ms);
    cbor_decref(&a);
    int st = cli_check_result(m, rc);
    if (st) {
        ferry_msg_free(m);
        return st;
    }
    cli_print_flat("", m->result);
    /* The first pair is "allowed". */
    const cbor_item_t *allowed = cbor_map_size(m->result) ? cbor_map_handle(m->result)[0].value : NULL;
    st = allowed && cbor_is_bool(allowed) && cbor_get_bool(allowed) ? 0 : 1;
    ferry_msg_free(m);
    return st;
}

const struct cli_cmd cli_ratelimit_cmd = {
    "ratelimit",
    "  ratelimit KEY --rate N/s --burst B [--cost C]\n"
    "                        one request against KEY's limit (GCRA; N/m, N/h also); prints\n"
    "                        allowed, remaining, retry_after_ms, reset_after_ms; exit 0 if\n"
    "                        allowed, 1 if not (or on an error answer, then on stderr)\n",
    ratelimit_run,
};
