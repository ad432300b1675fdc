/* cli_stream.c: `ferry stream`: add entries to a Redis stream, consume
 * them in a consumer group (each acked once printed), ack by id. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_cmds.h"
#include "cli_print.h"
#include "cli_sub.h"

#define CLI_STREAM_USAGE \
    "  stream add STREAM FIELD VALUE [FIELD VALUE...] [--maxlen N]\n" \
    "                        XADD an entry (MAXLEN ~ N trims); prints its id\n" \
    "  stream consume STREAM GROUP CONSUMER [--count N]\n" \
    "                        prints each entry (its id, then 'field: value' lines) and acks\n" \
    "                        it; creates GROUP (from the stream's start, MKSTREAM) if missing;\n" \
    "                        stops after N, or exits 3 when none comes within --timeout\n" \
    "  stream ack STREAM GROUP ID...\n" \
    "                        XACK the ids in GROUP; prints how many were pending\n"

static int cli_stream_bad(const char *why)
{
    fprintf(stderr, "ferry: stream: %s\nusage:\n%s", why, CLI_STREAM_USAGE);
    return 64;
}

/* Parses a positive number for an option. Returns -1 when it is none. */
static long cli_stream_number(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || end == s || v <= 0 ? -1 : v;
}

/* Calls op and prints its result raw (or the error). Takes args. */
static int cli_stream_call(ferry_t *f, const char *op, cbor_item_t *args, const struct cli_ctx *ctx,
                           const char *key)
{
    ferry_msg_t *m = NULL;
    int rc = ferry_call(f, op, args, ctx->deadline, &m, ctx->wait_ms);
    cbor_decref(&args);
    int status = cli_check_result(m, rc);
    if (!status) {
        const cbor_item_t *v = key ? cli_map_get(m->result, key) : m->result;
        if (v)
            cli_print_raw(v);
    }
    ferry_msg_free(m);
    return status;
}

static int cli_stream_add(ferry_t *f, int n, char **w, const struct cli_ctx *ctx)
{
    long maxlen = 0;
    int npos = 0;
    char **pos = calloc((size_t)n + 1, sizeof(*pos));
    for (int i = 0; i < n; i++) {
        if (!strcmp(w[i], "--maxlen") && i + 1 < n) {
            maxlen = cli_stream_number(w[++i]);
            if (maxlen < 0) {
                free(pos);
                return cli_stream_bad("--maxlen takes a positive number");
            }
        } else
            pos[npos++] = w[i];
    }
    if (npos < 3 || npos % 2 == 0) {
        free(pos);
        return cli_stream_bad("add takes STREAM and FIELD VALUE pairs");
    }
    cbor_item_t *fields = cbor_new_definite_array((size_t)(npos - 1) / 2);
    for (int i = 1; i + 1 < npos; i += 2) {
        cbor_item_t *pair = cbor_new_definite_array(2);
        (void)cbor_array_push(pair, cbor_move(cbor_build_string(pos[i])));
        (void)cbor_array_push(pair, cbor_move(cbor_build_bytestring((const unsigned char *)pos[i + 1],
                                                                      strlen(pos[i + 1]))));
        (void)cbor_array_push(fields, cbor_move(pair));
    }
    cbor_item_t *a = cbor_new_definite_map(maxlen ? 4 : 2);
    cli_map_put(a, "stream", cbor_build_string(pos[0]));
    cli_map_put(a, "fields", fields);
    if (maxlen) {
        cli_map_put(a, "maxlen", cbor_build_uint64((uint64_t)maxlen));
        cli_map_put(a, "approx", cbor_build_bool(true));
    }
    free(pos);
    return cli_stream_call(f, "xadd", a, ctx, NULL);
}

static int cli_stream_ack(ferry_t *f, int n, char **w, const struct cli_ctx *ctx)
{
    if (n < 3)
        return cli_stream_bad("ack takes STREAM GROUP ID...");
    cbor_item_t *ids = cbor_new_definite_array((size_t)n - 2);
    for (int i = 2; i < n; i++)
        (void)cbor_array_push(ids, cbor_move(cbor_build_string(w[i])));
    cbor_item_t *a = cbor_new_definite_map(3);
    cli_map_put(a, "stream", cbor_build_string(w[0]));
    cli_map_put(a, "group", cbor_build_string(w[1]));
    cli_map_put(a, "ids", ids);
    return cli_stream_call(f, "stream.ack", a, ctx, "acked");
}

static void cli_stream_put_str(const cbor_item_t *s)
{
    if (cbor_isa_string(s))
        fwrite(cbor_string_handle(s), 1, cbor_string_length(s), stdout);
    else if (cbor_isa_bytestring(s))
        fwrite(cbor_bytestring_handle(s), 1, cbor_bytestring_length(s), stdout);
}

/* An entry: its id, then "field: value" lines (and its delivery count
 * when it was delivered before). */
static void cli_stream_print(const cbor_item_t *d)
{
    cli_stream_put_str(cli_map_get(d, "id"));
    putchar('\n');
    const cbor_item_t *f = cli_map_get(d, "fields");
    if (f && cbor_isa_map(f)) {
        struct cbor_pair *p = cbor_map_handle(f);
        for (size_t i = 0; i < cbor_map_size(f); i++) {
            cli_stream_put_str(p[i].key);
            fputs(": ", stdout);
            cli_stream_put_str(p[i].value);
            putchar('\n');
        }
    } else if (f && cbor_isa_array(f)) {
        for (size_t i = 0; i < cbor_array_size(f); i++) {
            cbor_item_t **kv = cbor_array_handle(cbor_array_handle(f)[i]);
            cli_stream_put_str(kv[0]);
            fputs(": ", stdout);
            cli_stream_put_str(kv[1]);
            putchar('\n');
        }
    }
    const cbor_item_t *n = cli_map_get(d, "deliveries");
    if (n && cbor_isa_uint(n) && cbor_get_int(n) > 1)
        printf("deliveries: %llu\n", (unsigned long long)cbor_get_int(n));
}

static int cli_stream_consume(ferry_t *f, int n, char **w, const struct cli_ctx *ctx)
{
    long count = 0;
    int npos = 0;
    char *pos[3];
    for (int i = 0; i < n; i++) {
        if (!strcmp(w[i], "--count") && i + 1 < n) {
            count = cli_stream_number(w[++i]);
            if (count < 0)
                return cli_stream_bad("--count takes a positive number");
        } else if (npos < 3)
            pos[npos++] = w[i];
        else
            return cli_stream_bad("consume takes STREAM GROUP CONSUMER");
    }
    if (npos != 3)
        return cli_stream_bad("consume takes STREAM GROUP CONSUMER");
    /* The group from the stream's start: a first consumer sees what was
     * added before it came. An existing group is kept as it is. */
    cbor_item_t *g = cbor_new_definite_map(4);
    cli_map_put(g, "stream", cbor_build_string(pos[0]));
    cli_map_put(g, "group", cbor_build_string(pos[1]));
    cli_map_put(g, "id", cbor_build_string("0"));
    cli_map_put(g, "mkstream", cbor_build_bool(true));
    ferry_msg_t *m = NULL;
    int rc = ferry_call(f, "group.create", g, ctx->deadline, &m, ctx->wait_ms);
    cbor_decref(&g);
    int status = cli_check_result(m, rc);
    ferry_msg_free(m);
    if (status)
        return status;
    cbor_item_t *a = cbor_new_definite_map(count && count <= 1000 ? 4 : 3);
    cli_map_put(a, "stream", cbor_build_string(pos[0]));
    cli_map_put(a, "group", cbor_build_string(pos[1]));
    cli_map_put(a, "consumer", cbor_build_string(pos[2]));
    if (count && count <= 1000)
        cli_map_put(a, "prefetch", cbor_build_uint16((uint16_t)count));
    uint64_t sub = 0;
    status = cli_sub_open(f, "stream.consume", a, ctx->deadline, ctx->wait_ms, &sub);
    cbor_decref(&a);
    if (status)
        return status;
    for (long got = 0; !count || got < count;) {
        status = cli_sub_next(f, sub, (int)ctx->deadline, &m);
        if (status == 3)
            fprintf(stderr, "ferry: no entry within %u ms (--timeout); %ld received\n", ctx->deadline, got);
        if (status)
            return status;
        if (strcmp(m->push_kind, "entry") != 0) {
            const cbor_item_t *why = cli_map_get(m->data, "reason");
            fprintf(stderr, "ferry: %s: ", m->push_kind);
            if (why && cbor_isa_string(why))
                fwrite(cbor_string_handle(why), 1, cbor_string_length(why), stderr);
            fputc('\n', stderr);
            ferry_msg_free(m);
            continue;
        }
        cli_stream_print(m->data);
        fflush(stdout);
        cbor_item_t *ack = cbor_new_definite_map(2);
        cli_map_put(ack, "sub", cbor_build_uint64(sub));
        const cbor_item_t *id = cli_map_get(m->data, "id");
        cli_map_put(ack, "id", id ? cbor_incref((cbor_item_t *)id) : cbor_build_string(""));
        ferry_msg_free(m);
        m = NULL;
        rc = ferry_call(f, "stream.ack", ack, ctx->deadline, &m, ctx->wait_ms);
        cbor_decref(&ack);
        status = cli_check_result(m, rc);
        ferry_msg_free(m);
        if (status)
            return status;
        got++;
    }
    return 0;
}

static int cli_stream_run(ferry_t *f, int nwords, char **words, const struct cli_ctx *ctx)
{
    if (nwords < 1)
        return cli_stream_bad("which one: add, consume or ack?");
    if (!strcmp(words[0], "add"))
        return cli_stream_add(f, nwords - 1, words + 1, ctx);
    if (!strcmp(words[0], "consume"))
        return cli_stream_consume(f, nwords - 1, words + 1, ctx);
    if (!strcmp(words[0], "ack"))
        return cli_stream_ack(f, nwords - 1, words + 1, ctx);
    return cli_stream_bad("which one: add, consume or ack?");
}

const struct cli_cmd cli_stream_cmd = {"stream", CLI_STREAM_USAGE, cli_stream_run};
