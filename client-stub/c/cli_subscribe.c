/* cli_subscribe.c: `ferry subscribe CHANNEL... [--pattern] [--count N]
 * [--follow]`: Redis pub/sub (pubsub.subscribe / pubsub.psubscribe),
 * printing each message's payload on its own line, as `ferry consume`
 * prints deliveries. Publishing needs no command of its own: `ferry redis
 * PUBLISH CHANNEL MESSAGE` does it (and `publish` is the AMQP one). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_cmds.h"
#include "cli_print.h"
#include "cli_sub.h"

struct sub_opts {
    int pattern, follow;
    long count;
    char **names; /* refers: into words */
    int nnames;
};

static int cli_subscribe_parse(int nwords, char **words, struct sub_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->names = calloc((size_t)nwords + 1, sizeof(*o->names));
    if (!o->names)
        return 64;
    int dashdash = 0;
    for (int i = 0; i < nwords; i++) {
        const char *w = words[i];
        if (!dashdash && !strcmp(w, "--")) {
            dashdash = 1;
        } else if (!dashdash && (!strcmp(w, "--pattern") || !strcmp(w, "-p"))) {
            o->pattern = 1;
        } else if (!dashdash && !strcmp(w, "--follow")) {
            o->follow = 1;
        } else if (!dashdash && !strcmp(w, "--count")) {
            char *end = NULL;
            if (i + 1 >= nwords || (o->count = strtol(words[i + 1], &end, 10)) <= 0 || *end) {
                fprintf(stderr, "ferry: --count needs a positive number\n");
                return 64;
            }
            i++;
        } else if (!dashdash && w[0] == '-' && w[1]) {
            fprintf(stderr, "ferry: subscribe: unknown option '%s'\n", w);
            return 64;
        } else {
            o->names[o->nnames++] = words[i];
        }
    }
    if (!o->nnames) {
        fprintf(stderr, "ferry: subscribe needs at least one channel (or pattern, with --pattern)\n");
        return 64;
    }
    return 0;
}

/* Sends the subscribe and waits for its answer; ferryd answers it before
 * any push of the subscription. */
static int cli_subscribe_open(ferry_t *f, const struct sub_opts *o, const struct cli_ctx *ctx, uint64_t *sub)
{
    cbor_item_t *names = cbor_new_definite_array((size_t)o->nnames);
    for (int i = 0; i < o->nnames; i++)
        if (!cbor_array_push(names, cbor_move(cbor_build_bytestring((const unsigned char *)o->names[i],
                                                                    strlen(o->names[i])))))
            abort();
    cbor_item_t *a = cbor_new_definite_map(1);
    cli_map_put(a, o->pattern ? "patterns" : "channels", names);
    int status = cli_sub_open(f, o->pattern ? "pubsub.psubscribe" : "pubsub.subscribe", a, ctx->deadline,
                              ctx->wait_ms, sub);
    cbor_decref(&a);
    return status;
}

/* One push of the subscription: a message is printed (0 returned), a
 * 'dropped' or 'gap' push is told on stderr (1 returned: not counted). */
static int cli_subscribe_show(const ferry_msg_t *m, int verbose)
{
    if (!strcmp(m->push_kind, "message")) {
        if (verbose) {
            cli_print_flat("channel", cli_map_get(m->data, "channel"));
            const cbor_item_t *pat = cli_map_get(m->data, "pattern");
            if (pat && !cbor_is_null(pat))
                cli_print_flat("pattern", pat);
        }
        const cbor_item_t *payload = cli_map_get(m->data, "payload");
        if (payload)
            cli_print_raw(payload);
        fflush(stdout);
        return 0;
    }
    if (!strcmp(m->push_kind, "dropped")) {
        const cbor_item_t *n = cli_map_get(m->data, "count");
        fprintf(stderr, "ferry: %llu messages dropped: this subscriber fell behind (redis_pubsub_buffer)\n",
                n && cbor_isa_uint(n) ? (unsigned long long)cbor_get_int(n) : 0ULL);
    } else if (!strcmp(m->push_kind, "gap")) {
        fprintf(stderr, "ferry: gap: messages may have been missed (redis reconnected)\n");
    }
    return 1;
}

static int cli_subscribe_run(ferry_t *f, int nwords, char **words, const struct cli_ctx *ctx)
{
    struct sub_opts o;
    int status = cli_subscribe_parse(nwords, words, &o);
    uint64_t sub = 0;
    if (!status)
        status = cli_subscribe_open(f, &o, ctx, &sub);
    for (long n = 0; !status && (!o.count || n < o.count);) {
        ferry_msg_t *m;
        status = cli_sub_next(f, sub, o.follow ? -1 : (int)ctx->deadline, &m);
        if (status == 3)
            fprintf(stderr, "ferry: no message within %u ms (--timeout); %ld received\n", ctx->deadline, n);
        if (status)
            break;
        if (cli_subscribe_show(m, ctx->verbose) == 0)
            n++;
        ferry_msg_free(m);
    }
    free(o.names);
    return status;
}

const struct cli_cmd cli_subscribe_cmd = {
    .name = "subscribe",
    .usage = "  subscribe CHANNEL... [--pattern] [--count N] [--follow]\n"
             "                        Redis pub/sub: prints each message's payload on its own line (-v: its\n"
             "                        channel and pattern first); stops after N, or exits 3 when none comes\n"
             "                        within --timeout (--follow: waits forever). Publish with\n"
             "                        'ferry redis PUBLISH CHANNEL MESSAGE'.\n",
    .run = cli_subscribe_run,
};
