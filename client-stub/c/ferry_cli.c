/* ferry_cli.c: the `ferry` command, in the style of redis-cli, on libferry.
 *
 *   ferry [--socket PATH] [--timeout MS] ping | hello | stats | health [--live] | redis CMD [ARG...]
 *
 * The options may also follow any command but `redis`, whose words all
 * belong to the Redis command ("ferry redis SET k -s" sets k to "-s").
 *
 * Replies print as redis-cli prints them when its output is not a terminal
 * (raw): a bulk string as its bytes, an array one element per line, nil as
 * an empty line. An error prints "(error) CODE: message" on stderr and
 * exits 1; a connection failure exits 2; consume waiting longer than
 * --timeout for a delivery exits 3; bad usage exits 64. health, a probe,
 * exits 0 or 1 only (with 64 for bad usage): 1 for "not ready" and for
 * "no answer" alike, as probes expect. */
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_cmds.h"
#include "cli_print.h"
#include "cli_run.h"
#include "cli_sub.h"
#include "ferry.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ferry [options] COMMAND [ARG...] [options]\n"
            "       ferry [options] redis CMD [ARG...]   (options before 'redis' only)\n"
            "\n"
            "commands:\n"
            "  ping                  check that ferryd answers (prints PONG)\n"
            "  hello                 protocol version and the ops the daemon serves\n"
            "  stats                 the daemon's counters, one 'name: value' per line\n"
            "  health [--live]       exit 0 when every configured backend is up, else print\n"
            "                        what is not ('redis: down (why)') and exit 1; --live:\n"
            "                        exit 0 when ferryd answers at all (probes; --timeout bounds both)\n"
            "  redis CMD [ARG...]    run a Redis command through ferryd\n"
            "\n"
            "RabbitMQ:\n"
            "  declare-exchange NAME TYPE [--durable]\n"
            "  declare-queue NAME [--durable] [--arg k=v]...\n"
            "  bind QUEUE EXCHANGE KEY\n"
            "  publish EXCHANGE ROUTING_KEY BODY [--persistent] [--header k=v]... [--mandatory]\n"
            "                        returns after the broker's confirm\n"
            "  consume QUEUE [--count N] [--no-ack] [--follow]\n"
            "                        print each delivery's body and a newline, then ack it;\n"
            "                        stop after N deliveries, or exit 3 when none comes\n"
            "                        within --timeout (--follow: wait without limit)\n"
            "  get QUEUE             one message's body, or an empty line\n"
            "  rpc EXCHANGE KEY BODY publish and print the reply's body (direct reply-to);\n"
            "                        'unroutable' at once when no queue takes the request\n"
            "  serve QUEUE [--count N] -- COMMAND [ARG...]\n"
            "                        answer rpc requests from QUEUE (declared if missing): run\n"
            "                        COMMAND with each body on stdin, reply with its stdout\n"
            "                        (header exit_status), ack; one at a time, until N served\n"
            "  (k=v values: integers and true/false are typed, the rest is text)\n"
            "\n");
    if (cli_ncmds)
        fprintf(f, "Redis patterns:\n");
    for (size_t i = 0; i < cli_ncmds; i++)
        fputs(cli_cmds[i]->usage, f);
    fprintf(f,
            "\n"
            "options:\n"
            "  -s, --socket PATH     daemon socket (default $FERRY_SOCKET or %s)\n"
            "  -t, --timeout MS      each request's deadline and how long to wait for its answer;\n"
            "                        consume: the longest wait for the next delivery (default 5000)\n"
            "  -v, --verbose         consume, get and rpc: before each body, one 'name: value' line\n"
            "                        per field: traceparent (consume), exchange, routing_key,\n"
            "                        properties.NAME for each property set (headers as\n"
            "                        properties.headers.KEY), delivery_tag, redelivered,\n"
            "                        consumer_tag (consume), message_count (get)\n"
            "      --traceparent TP  send this W3C traceparent, so ferryd's spans join your trace\n"
            "  -h, --help\n",
            FERRY_DEFAULT_SOCKET);
}

/* ---- RabbitMQ commands ---- */

/* "k=v": integers and true/false become those types, the rest text. */
static int put_kv(cbor_item_t *map, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        fprintf(stderr, "ferry: expected key=value, got '%s'\n", kv);
        return -1;
    }
    char key[256];
    snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
    const char *v = eq + 1;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    cbor_item_t *val;
    if (*v && !*end && !errno)
        val = n >= 0 ? cbor_build_uint64((uint64_t)n) : cbor_build_negint64((uint64_t)(-(n + 1)));
    else if (!strcmp(v, "true") || !strcmp(v, "false"))
        val = cbor_build_bool(!strcmp(v, "true"));
    else
        val = cbor_build_string(v);
    cli_map_put(map, key, val);
    return 0;
}

/* Prints a message the way consume and get show it: the body on its own
 * line, after a line of its metadata with -v. */
static void print_message(const cbor_item_t *m, int verbose)
{
    const cbor_item_t *body = NULL;
    struct cbor_pair *p = cbor_map_handle((cbor_item_t *)m);
    for (size_t i = 0; i < cbor_map_size(m); i++) {
        const cbor_item_t *k = p[i].key;
        if (cbor_isa_string(k) && cbor_string_length(k) == 4 && !memcmp(cbor_string_handle(k), "body", 4))
            body = p[i].value;
    }
    if (verbose) {
        for (size_t i = 0; i < cbor_map_size(m); i++) {
            const cbor_item_t *k = p[i].key;
            if (p[i].value == body)
                continue;
            char key[64];
            snprintf(key, sizeof(key), "%.*s", (int)cbor_string_length(k), (const char *)cbor_string_handle(k));
            cli_print_flat(key, p[i].value);
        }
    }
    if (body)
        cli_print_raw(body);
}

struct broker_opts {
    int durable, persistent, mandatory, no_ack, verbose, follow;
    long count;
    cbor_item_t *args;    /* --arg */
    cbor_item_t *headers; /* --header */
    char **command;       /* serve: the words after "--" (refers into argv) */
};

/* Splits the command's own flags from its positional words. */
static int broker_flags(int argc, char **argv, struct broker_opts *o, char **pos, int *npos)
{
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--durable")) o->durable = 1;
        else if (!strcmp(a, "--persistent")) o->persistent = 1;
        else if (!strcmp(a, "--mandatory")) o->mandatory = 1;
        else if (!strcmp(a, "--no-ack")) o->no_ack = 1;
        else if (!strcmp(a, "--follow")) o->follow = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else if (!strcmp(a, "--")) {
            o->command = argv + i + 1; /* argv is NULL-terminated, as execvp wants */
            break;
        }
        else if ((!strcmp(a, "--arg") || !strcmp(a, "--header") || !strcmp(a, "--count")) && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(a, "--count")) {
                char *end;
                o->count = strtol(v, &end, 10);
                if (*end || o->count < 1) {
                    fprintf(stderr, "ferry: --count needs a positive number\n");
                    return -1;
                }
            } else if (put_kv(!strcmp(a, "--arg") ? o->args : o->headers, v) != 0) {
                return -1;
            }
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "ferry: unknown option '%s'\n", a);
            return -1;
        } else {
            pos[(*npos)++] = argv[i];
        }
    }
    return 0;
}

static int need(int npos, int want, const char *usage_line)
{
    if (npos == want)
        return 0;
    fprintf(stderr, "usage: ferry %s\n", usage_line);
    return -1;
}

static cbor_item_t *message_args(char **pos, struct broker_opts *o)
{
    cbor_item_t *m = cbor_new_definite_map(8);
    cli_map_put(m, "exchange", cbor_build_string(pos[0]));
    cli_map_put(m, "routing_key", cbor_build_string(pos[1]));
    cli_map_put(m, "body", cbor_build_bytestring((cbor_data)pos[2], strlen(pos[2])));
    if (o->persistent)
        cli_map_put(m, "persistent", cbor_build_bool(true));
    if (o->mandatory)
        cli_map_put(m, "mandatory", cbor_build_bool(true));
    if (cbor_map_size(o->headers))
        cli_map_put(m, "headers", cbor_incref(o->headers));
    return m;
}

/* Sends consume and waits for its answer. Returns 0 with *sub set, or an
 * exit status. */
static int subscribe(ferry_t *f, const char *queue, long prefetch, int no_ack, uint32_t deadline, int wait_ms,
                     uint64_t *sub)
{
    cbor_item_t *a = cbor_new_definite_map(3);
    cli_map_put(a, "queue", cbor_build_string(queue));
    cli_map_put(a, "no_ack", cbor_build_bool(no_ack));
    if (prefetch > 0 && prefetch <= 65535)
        cli_map_put(a, "prefetch", cbor_build_uint16((uint16_t)prefetch));
    int status = cli_sub_open(f, "consume", a, deadline, wait_ms, sub);
    cbor_decref(&a);
    return status;
}

/* Waits up to wait_ms (-1: without limit) for the next push of sub, which
 * goes to *out. Returns 0, 3 when the wait passed, or another exit status
 * with the reason printed. */
static int next_delivery(ferry_t *f, uint64_t sub, int wait_ms, ferry_msg_t **out)
{
    ferry_msg_t *m;
    int status = cli_sub_next(f, sub, wait_ms, &m);
    if (status)
        return status;
    if (strcmp(m->push_kind, "delivery") != 0) {
        fprintf(stderr, "(error) subscription ended: %s\n", m->push_kind);
        ferry_msg_free(m);
        return 1;
    }
    *out = m;
    return 0;
}

static int settle(ferry_t *f, uint64_t sub, const cbor_item_t *delivery, uint32_t deadline, int wait_ms)
{
    const cbor_item_t *tag = cli_map_get(delivery, "delivery_tag");
    cbor_item_t *ack = cbor_new_definite_map(2);
    cli_map_put(ack, "sub", cbor_build_uint64(sub));
    cli_map_put(ack, "delivery_tag", cbor_build_uint64(tag && cbor_isa_uint(tag) ? cbor_get_int(tag) : 0));
    ferry_msg_t *r = NULL;
    int rc = ferry_call(f, "ack", ack, deadline, &r, wait_ms);
    cbor_decref(&ack);
    int status = cli_check_result(r, rc);
    ferry_msg_free(r);
    return status;
}

/* Runs consume: prints each delivery and acks it after printing. It stops
 * after --count deliveries, or when --timeout passes with no delivery
 * (exit 3, so a script can tell "the queue ran dry" from "got them all"). */
static int consume(ferry_t *f, const char *queue, struct broker_opts *o, uint32_t deadline, int wait_ms)
{
    uint64_t sub;
    int status = subscribe(f, queue, o->count, o->no_ack, deadline, wait_ms, &sub);
    if (status)
        return status;
    for (long n = 0; !o->count || n < o->count; n++) {
        ferry_msg_t *m = NULL;
        status = next_delivery(f, sub, o->follow ? -1 : (int)deadline, &m);
        if (status == 3) {
            if (o->count)
                fprintf(stderr, "ferry: no delivery within %u ms (--timeout); %ld of %ld received\n", deadline, n,
                        o->count);
            else
                fprintf(stderr, "ferry: no delivery within %u ms (--timeout); %ld received\n", deadline, n);
        }
        if (status)
            return status;
        if (o->verbose && m->traceparent)
            printf("traceparent: %s\n", m->traceparent);
        print_message(m->data, o->verbose);
        fflush(stdout);
        if (!o->no_ack)
            status = settle(f, sub, m->data, deadline, wait_ms);
        ferry_msg_free(m);
        if (status)
            return status;
    }
    return 0;
}

/* Answers one request: runs the command on its body and publishes the
 * command's stdout to the request's reply_to, with its correlation_id.
 * Returns 0, or an exit status when ferryd failed us. */
static int serve_one(ferry_t *f, const cbor_item_t *d, struct broker_opts *o, uint32_t deadline, int wait_ms)
{
    const cbor_item_t *body = cli_map_get(d, "body"), *props = cli_map_get(d, "properties");
    const cbor_item_t *reply_to = cli_map_get(props, "reply_to"), *corr = cli_map_get(props, "correlation_id");
    const uint8_t *in = body && cbor_isa_bytestring(body) ? cbor_bytestring_handle(body) : NULL;
    size_t inlen = in ? cbor_bytestring_length(body) : 0;
    uint8_t *out;
    size_t outlen;
    int exit_status;
    /* 8 MiB: the largest body ferryd publishes. */
    if (cli_run_command(o->command, in, inlen, 8u << 20, &out, &outlen, &exit_status) != 0) {
        fprintf(stderr, "ferry: cannot run %s: %s\n", o->command[0], strerror(errno));
        return 1;
    }
    if (exit_status)
        fprintf(stderr, "ferry: %s exited with status %d\n", o->command[0], exit_status);
    int status = 0;
    if (!reply_to || !cbor_isa_string(reply_to)) {
        fprintf(stderr, "ferry: a request without reply_to: nobody to answer\n");
    } else {
        cbor_item_t *a = cbor_new_definite_map(5);
        cli_map_put(a, "exchange", cbor_build_string(""));
        cli_map_put(a, "routing_key", cbor_incref((cbor_item_t *)reply_to));
        cli_map_put(a, "body", cbor_build_bytestring(out ? out : (const uint8_t *)"", outlen));
        if (corr && cbor_isa_string(corr))
            cli_map_put(a, "correlation_id", cbor_incref((cbor_item_t *)corr));
        cbor_item_t *h = cbor_new_definite_map(1);
        cli_map_put(h, "exit_status", cbor_build_uint8((uint8_t)exit_status));
        cli_map_put(a, "headers", h);
        ferry_msg_t *r = NULL;
        int rc = ferry_call(f, "publish", a, deadline, &r, wait_ms);
        cbor_decref(&a);
        status = cli_check_result(r, rc);
        ferry_msg_free(r);
        if (status == 1)
            status = 0; /* the caller has gone (say): keep serving the others */
    }
    free(out);
    return status;
}

/* Runs serve: an RPC responder made of a command. The queue is declared
 * when missing, so callers' requests (published mandatory) are routable
 * from the moment it says "serving". Prefetch 1: one request at a time. */
static int serve(ferry_t *f, const char *queue, struct broker_opts *o, uint32_t deadline, int wait_ms)
{
    signal(SIGPIPE, SIG_IGN); /* a command that does not read its stdin */
    cbor_item_t *a = cbor_new_definite_map(2);
    cli_map_put(a, "name", cbor_build_string(queue));
    cli_map_put(a, "passive", cbor_build_bool(true));
    ferry_msg_t *m = NULL;
    int rc = ferry_call(f, "queue.declare", a, deadline, &m, wait_ms);
    cbor_decref(&a);
    if (rc == 0 && m->err_code && !strcmp(m->err_code, "backend_error") && strstr(m->err_message, "404")) {
        ferry_msg_free(m);
        m = NULL;
        a = cbor_new_definite_map(1);
        cli_map_put(a, "name", cbor_build_string(queue));
        rc = ferry_call(f, "queue.declare", a, deadline, &m, wait_ms);
        cbor_decref(&a);
    }
    int status = cli_check_result(m, rc);
    ferry_msg_free(m);
    uint64_t sub;
    if (status || (status = subscribe(f, queue, 1, 0, deadline, wait_ms, &sub)) != 0)
        return status;
    fprintf(stderr, "ferry: serving requests from '%s'\n", queue);
    for (long n = 0; !o->count || n < o->count; n++) {
        if ((status = next_delivery(f, sub, -1, &m)) != 0)
            return status;
        status = serve_one(f, m->data, o, deadline, wait_ms);
        if (!status)
            status = settle(f, sub, m->data, deadline, wait_ms);
        ferry_msg_free(m);
        if (status)
            return status;
    }
    return 0;
}

static int broker_command(ferry_t *f, const char *cmd, int argc, char **argv, uint32_t deadline, int wait_ms,
                        int verbose)
{
    struct broker_opts o = {.verbose = verbose, .args = cbor_new_definite_map(32),
                          .headers = cbor_new_definite_map(32)};
    char **pos = calloc((size_t)argc + 1, sizeof(char *));
    int npos, status = 64;
    cbor_item_t *a = NULL;
    const char *op = NULL;
    if (broker_flags(argc, argv, &o, pos, &npos) != 0)
        goto out;
    if (!strcmp(cmd, "declare-exchange")) {
        if (need(npos, 2, "declare-exchange NAME TYPE [--durable]"))
            goto out;
        op = "exchange.declare";
        a = cbor_new_definite_map(3);
        cli_map_put(a, "name", cbor_build_string(pos[0]));
        cli_map_put(a, "type", cbor_build_string(pos[1]));
        cli_map_put(a, "durable", cbor_build_bool(o.durable));
    } else if (!strcmp(cmd, "declare-queue")) {
        if (need(npos, 1, "declare-queue NAME [--durable] [--arg k=v]..."))
            goto out;
        op = "queue.declare";
        a = cbor_new_definite_map(3);
        cli_map_put(a, "name", cbor_build_string(pos[0]));
        cli_map_put(a, "durable", cbor_build_bool(o.durable));
        if (cbor_map_size(o.args))
            cli_map_put(a, "arguments", cbor_incref(o.args));
    } else if (!strcmp(cmd, "bind")) {
        if (need(npos, 3, "bind QUEUE EXCHANGE KEY"))
            goto out;
        op = "queue.bind";
        a = cbor_new_definite_map(3);
        cli_map_put(a, "queue", cbor_build_string(pos[0]));
        cli_map_put(a, "exchange", cbor_build_string(pos[1]));
        cli_map_put(a, "routing_key", cbor_build_string(pos[2]));
    } else if (!strcmp(cmd, "publish") || !strcmp(cmd, "rpc")) {
        if (need(npos, 3, !strcmp(cmd, "rpc") ? "rpc EXCHANGE KEY BODY"
                                               : "publish EXCHANGE ROUTING_KEY BODY [--persistent] "
                                                 "[--header k=v]... [--mandatory]"))
            goto out;
        op = cmd;
        a = message_args(pos, &o);
    } else if (!strcmp(cmd, "get")) {
        if (need(npos, 1, "get QUEUE"))
            goto out;
        op = "get";
        a = cbor_new_definite_map(1);
        cli_map_put(a, "queue", cbor_build_string(pos[0]));
    } else if (!strcmp(cmd, "consume")) {
        if (need(npos, 1, "consume QUEUE [--count N] [--no-ack] [--follow]"))
            goto out;
        status = consume(f, pos[0], &o, deadline, wait_ms);
        goto out;
    } else if (!strcmp(cmd, "serve")) {
        if (need(npos, 1, "serve QUEUE [--count N] -- COMMAND [ARG...]"))
            goto out;
        if (!o.command || !o.command[0]) {
            fprintf(stderr, "usage: ferry serve QUEUE [--count N] -- COMMAND [ARG...]\n");
            goto out;
        }
        status = serve(f, pos[0], &o, deadline, wait_ms);
        goto out;
    }
    ferry_msg_t *m = NULL;
    int rc = ferry_call(f, op, a, deadline, &m, wait_ms);
    status = cli_check_result(m, rc);
    if (status == 1 && !strcmp(cmd, "rpc") && !strcmp(m->err_code, "timeout"))
        fprintf(stderr, "ferry: the request reached a queue, but no reply came: is anything consuming '%s'? "
                        "(e.g. ferry serve %s -- COMMAND)\n", pos[1], pos[1]);
    if (status == 0) {
        if (!strcmp(cmd, "get") || !strcmp(cmd, "rpc")) {
            if (cbor_isa_map(m->result))
                print_message(m->result, o.verbose);
            else
                putchar('\n');
        } else if (!strcmp(cmd, "declare-queue")) {
            struct cbor_pair *p = cbor_map_handle(m->result);
            cli_print_raw(p[0].value);
        } else {
            puts("OK");
        }
    }
    ferry_msg_free(m);
out:
    if (a)
        cbor_decref(&a);
    cbor_decref(&o.args);
    cbor_decref(&o.headers);
    free(pos);
    return status;
}

static int is_amqp_command(const char *c)
{
    static const char *const cmds[] = {"declare-exchange", "declare-queue", "bind", "publish",
                                       "consume", "get", "rpc", "serve", NULL};
    for (int i = 0; cmds[i]; i++)
        if (!strcmp(c, cmds[i]))
            return 1;
    return 0;
}

/* Runs health: a probe for systemd units, scripts and Kubernetes. It
 * exits 0 or 1 and nothing else, within --timeout: the deadline sent and
 * the wait for the answer are both the timeout. --live asks only that
 * ferryd answer (ping; any answer, even an error, is a live daemon). */
static int health(ferry_t *f, bool live, uint32_t timeout)
{
    ferry_msg_t *m = NULL;
    int rc = ferry_call(f, live ? "ping" : "health", NULL, timeout, &m, (int)timeout);
    if (rc != 0) {
        fprintf(stderr, "ferry: no answer: %s\n", ferry_strerror(rc));
        return 1;
    }
    int status = 1;
    if (live) {
        puts("live");
        status = 0;
    } else if (m->err_code) {
        fprintf(stderr, "(error) %s: %s\n", m->err_code, m->err_message);
    } else {
        const cbor_item_t *ready = cli_map_get(m->result, "ready");
        const cbor_item_t *backends = cli_map_get(m->result, "backends");
        const cbor_item_t *errors = cli_map_get(m->result, "errors");
        /* The width first: libcbor 0.8's cbor_is_bool() asserts on floats. */
        status = ready && cbor_isa_float_ctrl(ready) && cbor_float_get_width(ready) == CBOR_FLOAT_0 &&
                 cbor_is_bool(ready) && cbor_get_bool(ready) ? 0 : 1;
        puts(status ? "not ready" : "ready");
        struct cbor_pair *p = backends && cbor_isa_map(backends) ? cbor_map_handle(backends) : NULL;
        for (size_t i = 0; p && i < cbor_map_size(backends); i++) {
            if (!cbor_isa_string(p[i].key) || !cbor_isa_string(p[i].value))
                continue;
            int kn = (int)cbor_string_length(p[i].key);
            const char *k = (const char *)cbor_string_handle(p[i].key);
            printf("%.*s: %.*s", kn, k, (int)cbor_string_length(p[i].value),
                   (const char *)cbor_string_handle(p[i].value));
            char key[64];
            snprintf(key, sizeof(key), "%.*s", kn, k);
            const cbor_item_t *why = cli_map_get(errors, key);
            if (why && cbor_isa_string(why) && cbor_string_length(why))
                printf(" (%.*s)", (int)cbor_string_length(why), (const char *)cbor_string_handle(why));
            putchar('\n');
        }
    }
    ferry_msg_free(m);
    return status;
}

/* The options that apply to every command. */
struct global_opts {
    const char *path;        /* refers: argv */
    long timeout;
    int verbose;
    const char *traceparent; /* refers: argv */
};

/* The value of option a (short -x, long --name) at argv[*i]: attached
 * ("-sPATH", "--socket=PATH") or the next word. NULL when a is not this
 * option; *missing is set when it is but has no value. */
static const char *opt_value(int argc, char **argv, int *i, char x, const char *name, int *missing)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    const char *v = NULL;
    if (x && a[0] == '-' && a[1] == x)
        v = a + 2;
    else if (!strncmp(a, "--", 2) && !strncmp(a + 2, name, n) && (a[n + 2] == '\0' || a[n + 2] == '='))
        v = a + n + 2 + (a[n + 2] == '=');
    else
        return NULL;
    if (*v)
        return v;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* Takes the global option at argv[*i], and its value, if it is one.
 * Returns 1 when taken, 0 when argv[*i] is not a global option, 2 for
 * --help, or -1 after a message when the option is malformed. */
static int take_global(int argc, char **argv, int *i, struct global_opts *g)
{
    const char *a = argv[*i];
    int missing = 0;
    const char *v;
    if (!strcmp(a, "-h") || !strcmp(a, "--help"))
        return 2;
    if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
        g->verbose = 1;
        return 1;
    }
    if ((v = opt_value(argc, argv, i, 's', "socket", &missing))) {
        g->path = v;
        return 1;
    }
    if (!missing && (v = opt_value(argc, argv, i, 't', "timeout", &missing))) {
        char *end;
        g->timeout = strtol(v, &end, 10);
        if (*end || g->timeout <= 0 || g->timeout > 86400000) {
            fprintf(stderr, "ferry: --timeout needs a positive number of milliseconds\n");
            return -1;
        }
        return 1;
    }
    if (!missing && (v = opt_value(argc, argv, i, 0, "traceparent", &missing))) {
        g->traceparent = v;
        return 1;
    }
    if (missing) {
        fprintf(stderr, "ferry: option '%s' needs a value\n", a);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct global_opts g = {.path = NULL, .timeout = 5000, .verbose = 0, .traceparent = NULL};
    int i = 1;
    for (; i < argc; i++) {
        int r = take_global(argc, argv, &i, &g);
        if (r == 2) {
            usage(stdout);
            return 0;
        }
        if (r < 0)
            return 64;
        if (r == 0) {
            if (argv[i][0] == '-' && argv[i][1]) {
                fprintf(stderr, "ferry: unknown option '%s'\n", argv[i]);
                usage(stderr);
                return 64;
            }
            break;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 64;
    }
    const char *cmd = argv[i];
    const struct cli_cmd *pattern = NULL;
    for (size_t k = 0; k < cli_ncmds; k++)
        if (!strcmp(cmd, cli_cmds[k]->name))
            pattern = cli_cmds[k];
    int is_redis = strcmp(cmd, "redis") == 0;
    int is_amqp = is_amqp_command(cmd);
    int is_health = strcmp(cmd, "health") == 0;
    if (!pattern && !is_redis && !is_amqp && !is_health && strcmp(cmd, "ping") && strcmp(cmd, "hello") && strcmp(cmd, "stats")) {
        fprintf(stderr, "ferry: unknown command '%s'\n", cmd);
        usage(stderr);
        return 64;
    }
    /* The command's own words. Global options among them are taken too,
     * except after redis, whose words are all the Redis command's. */
    char **words = calloc((size_t)argc, sizeof(char *));
    int nwords = 0;
    bool only_words = is_redis; /* after "--", a word like "-top" is a word */
    for (int j = i + 1; j < argc; j++) {
        if (!only_words && !strcmp(argv[j], "--")) {
            only_words = true;
            /* serve's own "--" separates its queue from the command it
             * runs; so does that of lock run and cache get-or-run. */
            if (!strcmp(cmd, "serve") || pattern)
                words[nwords++] = argv[j];
            continue;
        }
        int r = only_words ? 0 : take_global(argc, argv, &j, &g);
        if (r == 2) {
            usage(stdout);
            free(words);
            return 0;
        }
        if (r < 0) {
            free(words);
            return 64;
        }
        if (r == 0)
            words[nwords++] = argv[j];
    }
    if (is_redis && nwords == 0) {
        fprintf(stderr, "ferry: redis needs a command, e.g. ferry redis GET key\n");
        free(words);
        return 64;
    }
    bool live = false;
    if (is_health && nwords == 1 && !strcmp(words[0], "--live")) {
        live = true;
        nwords = 0;
    }
    if (!pattern && !is_redis && !is_amqp && nwords > 0) {
        fprintf(stderr, "ferry: %s takes no arguments, got '%s'\n", cmd, words[0]);
        free(words);
        return 64;
    }
    const char *path = g.path;
    long timeout = g.timeout;
    int verbose = g.verbose;
    const char *traceparent = g.traceparent;
    int err = 0;
    ferry_t *f = ferry_connect(path, &err);
    if (!f) {
        fprintf(stderr, "ferry: cannot connect to %s: %s\n",
                path ? path : getenv("FERRY_SOCKET") ? getenv("FERRY_SOCKET") : FERRY_DEFAULT_SOCKET,
                ferry_strerror(err));
        free(words);
        return is_health ? 1 : 2;
    }
    if (is_health) {
        int st = health(f, live, (uint32_t)timeout);
        ferry_close(f);
        free(words);
        return st;
    }
    if (traceparent)
        ferry_set_trace(f, traceparent, NULL);
    ferry_msg_t *m = NULL;
    /* Wait a little past the deadline, so the daemon's own "timeout" answer
     * arrives rather than a client-side one. */
    int wait_ms = (int)timeout + 1000;
    int rc;
    if (pattern) {
        struct cli_ctx ctx = {(uint32_t)timeout, wait_ms, verbose};
        int st = pattern->run(f, nwords, words, &ctx);
        ferry_close(f);
        free(words);
        return st;
    }
    if (is_amqp) {
        int st = broker_command(f, cmd, nwords, words, (uint32_t)timeout, wait_ms, verbose);
        ferry_close(f);
        free(words);
        return st;
    }
    if (is_redis)
        rc = ferry_call_redis(f, nwords, (const char *const *)words, NULL, (uint32_t)timeout, &m, wait_ms);
    else
        rc = ferry_call(f, cmd, NULL, (uint32_t)timeout, &m, wait_ms);
    int status = 0;
    if (rc != 0) {
        fprintf(stderr, "ferry: %s\n", ferry_strerror(rc));
        status = 2;
    } else if (m->err_code) {
        fprintf(stderr, "(error) %s: %s\n", m->err_code, m->err_message);
        status = 1;
    } else if (strcmp(cmd, "stats") == 0) {
        cli_print_flat("", m->result);
    } else {
        cli_print_raw(m->result);
    }
    ferry_msg_free(m);
    ferry_close(f);
    free(words);
    return status;
}
