/* cli_cache.c: `ferry cache`: get, fill, invalidate and get-or-run, over
 * the cache.* ops (docs/patterns.md, "Cache-aside without stampedes").
 *
 * Values are printed as their bytes, with no newline added, so that
 * get-or-run prints the same whether it ran the command or not. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_cmds.h"
#include "cli_print.h"
#include "cli_run.h"

/* Exit status of a miss: 0 to 3 and 64 are taken (cli_cmds.h). */
#define CLI_CACHE_MISS 4
/* fill's status when the lease was lost: nothing stored. */
#define CLI_CACHE_NOT_HELD 5

struct cache_opts {
    const char *pos[2];   /* refers: KEY, VALUE */
    int npos;
    long long ttl_ms;     /* --ttl S, in ms; -1: not given */
    long long lease_ms;   /* --lease-ms; -1: the daemon's default */
    long long jitter_ms;  /* --jitter-ms; -1: the daemon's default */
    const char *lease;    /* --lease TOKEN, or NULL */
    int peek;             /* --peek */
    char **command;       /* refers: after "--", NULL-terminated; NULL when none */
};

static int parse_ms(const char *opt, const char *v, double scale, long long *out)
{
    char *end;
    double d = v ? strtod(v, &end) : 0;
    if (!v || *end || d <= 0 || d * scale > 1e15) {
        fprintf(stderr, "ferry: %s needs a positive number\n", opt);
        return -1;
    }
    *out = (long long)(d * scale + 0.5);
    if (*out < 1)
        *out = 1;
    return 0;
}

/* Reads the words after the subcommand. Returns 0 or 64. */
static int parse(int n, char **w, struct cache_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->ttl_ms = o->lease_ms = o->jitter_ms = -1;
    for (int i = 0; i < n; i++) {
        const char *a = w[i];
        const char *v = i + 1 < n ? w[i + 1] : NULL;
        if (!strcmp(a, "--")) {
            o->command = &w[i + 1]; /* NULL-terminated: main's words are calloc'd with room */
            if (i + 1 >= n) {
                fprintf(stderr, "ferry: a command is needed after --\n");
                return 64;
            }
            break;
        } else if (!strcmp(a, "--ttl")) {
            if (parse_ms("--ttl", v, 1000, &o->ttl_ms))
                return 64;
            i++;
        } else if (!strcmp(a, "--lease-ms")) {
            if (parse_ms("--lease-ms", v, 1, &o->lease_ms))
                return 64;
            i++;
        } else if (!strcmp(a, "--jitter-ms")) {
            char *end;
            if (!v || (o->jitter_ms = strtoll(v, &end, 10)) < 0 || *end) {
                fprintf(stderr, "ferry: --jitter-ms needs a number of milliseconds (0: none)\n");
                return 64;
            }
            i++;
        } else if (!strcmp(a, "--lease")) {
            if (!v) {
                fprintf(stderr, "ferry: --lease needs the token cache get gave\n");
                return 64;
            }
            o->lease = v;
            i++;
        } else if (!strcmp(a, "--peek")) {
            o->peek = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "ferry: cache: unknown option '%s'\n", a);
            return 64;
        } else if (o->npos < 2) {
            o->pos[o->npos++] = a;
        } else {
            fprintf(stderr, "ferry: cache: too many arguments ('%s')\n", a);
            return 64;
        }
    }
    return 0;
}

static int call(ferry_t *f, const char *op, cbor_item_t *args, const struct cli_ctx *ctx, ferry_msg_t **m)
{
    int rc = ferry_call(f, op, args, ctx->deadline, m, ctx->wait_ms);
    cbor_decref(&args);
    int st = cli_check_result(*m, rc);
    if (st) {
        ferry_msg_free(*m);
        *m = NULL;
    }
    return st;
}

static void print_bytes(const cbor_item_t *v)
{
    if (v && cbor_isa_bytestring(v) && cbor_bytestring_is_definite(v))
        fwrite(cbor_bytestring_handle(v), 1, cbor_bytestring_length(v), stdout);
}

/* cache.get: 0 with *m holding a result, or an exit status. */
static int get(ferry_t *f, const char *key, const struct cache_opts *o, const struct cli_ctx *ctx, ferry_msg_t **m)
{
    cbor_item_t *a = cbor_new_definite_map(3);
    cli_map_put(a, "key", cbor_build_bytestring((cbor_data)key, strlen(key)));
    if (o->lease_ms > 0)
        cli_map_put(a, "lease_ms", cbor_build_uint64((uint64_t)o->lease_ms));
    if (o->peek)
        cli_map_put(a, "peek", cbor_build_bool(true));
    return call(f, "cache.get", a, ctx, m);
}

static int fill(ferry_t *f, const char *key, const uint8_t *v, size_t n, long long ttl_ms, const char *lease,
                long long jitter_ms, const struct cli_ctx *ctx)
{
    cbor_item_t *a = cbor_new_definite_map(5);
    cli_map_put(a, "key", cbor_build_bytestring((cbor_data)key, strlen(key)));
    cli_map_put(a, "value", cbor_build_bytestring(v ? v : (const uint8_t *)"", n));
    cli_map_put(a, "ttl_ms", cbor_build_uint64((uint64_t)ttl_ms));
    if (lease)
        cli_map_put(a, "lease", cbor_build_string(lease));
    if (jitter_ms >= 0)
        cli_map_put(a, "jitter_ms", cbor_build_uint64((uint64_t)jitter_ms));
    ferry_msg_t *m = NULL;
    int rc = ferry_call(f, "cache.fill", a, ctx->deadline, &m, ctx->wait_ms);
    cbor_decref(&a);
    int st = cli_check_result(m, rc);
    if (st == 1 && !strcmp(m->err_code, "not_held"))
        st = CLI_CACHE_NOT_HELD;
    ferry_msg_free(m);
    return st;
}

/* On a hit, prints the value and returns true. */
static bool print_hit(const ferry_msg_t *m)
{
    const cbor_item_t *hit = cli_map_get(m->result, "hit");
    if (!hit || !cbor_is_bool(hit) || !cbor_get_bool(hit))
        return false;
    print_bytes(cli_map_get(m->result, "value"));
    return true;
}

static int cmd_get(ferry_t *f, const struct cache_opts *o, const struct cli_ctx *ctx)
{
    ferry_msg_t *m = NULL;
    int st = get(f, o->pos[0], o, ctx, &m);
    if (st)
        return st;
    if (print_hit(m)) {
        ferry_msg_free(m);
        return 0;
    }
    const cbor_item_t *lease = cli_map_get(m->result, "lease");
    if (lease && cbor_isa_string(lease))
        fprintf(stderr, "(miss) the lease is yours: %.*s\n(fill it with: ferry cache fill %s VALUE --ttl S --lease %.*s,"
                        " or others wait until it expires)\n",
                (int)cbor_string_length(lease), (const char *)cbor_string_handle(lease), o->pos[0],
                (int)cbor_string_length(lease), (const char *)cbor_string_handle(lease));
    else
        fprintf(stderr, "(miss)\n");
    ferry_msg_free(m);
    return CLI_CACHE_MISS;
}

/* On a hit, prints the value; on a miss, runs the command holding the
 * lease and stores its stdout, unless it failed. */
static int cmd_get_or_run(ferry_t *f, const struct cache_opts *o, const struct cli_ctx *ctx)
{
    ferry_msg_t *m = NULL;
    int st = get(f, o->pos[0], o, ctx, &m);
    if (st)
        return st;
    if (print_hit(m)) {
        ferry_msg_free(m);
        return 0;
    }
    const cbor_item_t *lease = cli_map_get(m->result, "lease");
    char token[64] = "";
    if (lease && cbor_isa_string(lease) && cbor_string_length(lease) < sizeof(token))
        memcpy(token, cbor_string_handle(lease), cbor_string_length(lease));
    ferry_msg_free(m);
    uint8_t *out = NULL;
    size_t outlen = 0;
    int status = 0;
    if (cli_run_command(o->command, NULL, 0, 8u << 20, &out, &outlen, &status) != 0) {
        perror(o->command[0]);
        return 1;
    }
    if (status) {
        fprintf(stderr, "ferry: %s exited with status %d: nothing stored\n", o->command[0], status);
        fwrite(out, 1, outlen, stdout);
        free(out);
        return 1;
    }
    st = token[0] ? fill(f, o->pos[0], out, outlen, o->ttl_ms, token, o->jitter_ms, ctx) : 0;
    fwrite(out, 1, outlen, stdout);
    free(out);
    /* A lease lost while the command ran: its output is still right to
     * print, only not stored. */
    return st == CLI_CACHE_NOT_HELD ? 0 : st;
}

static int run(ferry_t *f, int n, char **w, const struct cli_ctx *ctx)
{
    if (n < 1) {
        fprintf(stderr, "ferry: cache needs get, fill, invalidate or get-or-run\n");
        return 64;
    }
    const char *sub = w[0];
    struct cache_opts o;
    int st = parse(n - 1, w + 1, &o);
    if (st)
        return st;
    if (!strcmp(sub, "get") && o.npos == 1 && !o.command)
        return cmd_get(f, &o, ctx);
    if (!strcmp(sub, "fill") && o.npos == 2 && !o.command && o.ttl_ms > 0)
        return fill(f, o.pos[0], (const uint8_t *)o.pos[1], strlen(o.pos[1]), o.ttl_ms, o.lease, o.jitter_ms, ctx);
    if (!strcmp(sub, "invalidate") && o.npos == 1 && !o.command) {
        cbor_item_t *a = cbor_new_definite_map(1);
        cli_map_put(a, "key", cbor_build_bytestring((cbor_data)o.pos[0], strlen(o.pos[0])));
        ferry_msg_t *m = NULL;
        st = call(f, "cache.invalidate", a, ctx, &m);
        if (!st) {
            const cbor_item_t *d = cli_map_get(m->result, "deleted");
            puts(d && cbor_is_bool(d) && cbor_get_bool(d) ? "deleted" : "absent");
        }
        ferry_msg_free(m);
        return st;
    }
    if (!strcmp(sub, "get-or-run") && o.npos == 1 && o.command && o.ttl_ms > 0 && !o.peek)
        return cmd_get_or_run(f, &o, ctx);
    fprintf(stderr, "ferry: usage: see ferry --help, under cache\n");
    return 64;
}

const struct cli_cmd cli_cache_cmd = {
    "cache",
    "  cache get KEY [--peek] [--lease-ms MS]\n"
    "                        print the cached value (its bytes, no newline added); waits\n"
    "                        while another caller loads it. A miss exits 4: the lease is\n"
    "                        then yours (token on stderr) until filled or expired, so\n"
    "                        others wait; --peek never takes a lease nor waits\n"
    "  cache fill KEY VALUE --ttl S [--lease TOKEN] [--jitter-ms MS]\n"
    "                        store VALUE for S seconds (plus up to a tenth more, or\n"
    "                        --jitter-ms); with --lease only while that lease holds\n"
    "                        (else not_held, exit 5: nothing stored)\n"
    "  cache invalidate KEY  delete the value (and any lease): waiters load it again\n"
    "  cache get-or-run KEY --ttl S [--lease-ms MS] -- COMMAND [ARG...]\n"
    "                        print the value; on a miss run COMMAND (one caller among all\n"
    "                        at once), store its stdout unless it fails, and print it\n",
    run,
};
