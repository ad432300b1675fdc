/* ferry_cli.c: the `ferry` command, in the style of redis-cli, on libferry.
 *
 *   ferry [--socket PATH] [--timeout MS] ping | hello | stats | redis CMD [ARG...]
 *
 * Replies print as redis-cli prints them when its output is not a terminal
 * (raw): a bulk string as its bytes, an array one element per line, nil as
 * an empty line. An error prints "(error) CODE: message" on stderr and
 * exits 1; a connection failure exits 2; bad usage exits 64. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ferry [--socket PATH] [--timeout MS] COMMAND\n"
            "\n"
            "commands:\n"
            "  ping                  check that ferryd answers (prints PONG)\n"
            "  hello                 protocol version and the ops the daemon serves\n"
            "  stats                 the daemon's counters, one 'name: value' per line\n"
            "  redis CMD [ARG...]    run a Redis command through ferryd\n"
            "\n"
            "options:\n"
            "  -s, --socket PATH     daemon socket (default $FERRY_SOCKET or %s)\n"
            "  -t, --timeout MS      request deadline, and how long to wait (default 5000)\n"
            "  -h, --help\n",
            FERRY_DEFAULT_SOCKET);
}

/* Prints a value the way redis-cli's raw mode does. */
static void print_raw(const cbor_item_t *it)
{
    switch (cbor_typeof(it)) {
    case CBOR_TYPE_BYTESTRING:
    case CBOR_TYPE_STRING:
        if (cbor_isa_bytestring(it) ? cbor_bytestring_is_definite(it) : cbor_string_is_definite(it)) {
            size_t n = cbor_isa_bytestring(it) ? cbor_bytestring_length(it) : cbor_string_length(it);
            const unsigned char *p = cbor_isa_bytestring(it) ? cbor_bytestring_handle(it) : cbor_string_handle(it);
            fwrite(p, 1, n, stdout);
        }
        putchar('\n');
        break;
    case CBOR_TYPE_UINT:
        printf("%" PRIu64 "\n", cbor_get_int(it));
        break;
    case CBOR_TYPE_NEGINT:
        printf("-%" PRIu64 "\n", cbor_get_int(it) + 1);
        break;
    case CBOR_TYPE_ARRAY:
        for (size_t i = 0; i < cbor_array_size(it); i++)
            print_raw(cbor_array_handle((cbor_item_t *)it)[i]);
        break;
    case CBOR_TYPE_FLOAT_CTRL:
        if (cbor_is_null(it))
            putchar('\n');
        else if (cbor_is_bool(it))
            puts(cbor_get_bool(it) ? "true" : "false");
        else if (cbor_is_float(it))
            printf("%.17g\n", cbor_float_get_float(it));
        else
            putchar('\n');
        break;
    case CBOR_TYPE_MAP: {
        struct cbor_pair *p = cbor_map_handle((cbor_item_t *)it);
        for (size_t i = 0; i < cbor_map_size(it); i++) {
            print_raw(p[i].key);
            print_raw(p[i].value);
        }
        break;
    }
    default:
        putchar('\n');
        break;
    }
}

/* Prints a nested map as "a.b.c: value" lines, for stats. */
static void print_flat(const char *prefix, const cbor_item_t *it)
{
    char key[512];
    if (cbor_isa_map(it)) {
        struct cbor_pair *p = cbor_map_handle((cbor_item_t *)it);
        for (size_t i = 0; i < cbor_map_size(it); i++) {
            const cbor_item_t *k = p[i].key;
            int n = cbor_isa_string(k) ? (int)cbor_string_length(k) : 0;
            snprintf(key, sizeof(key), "%s%s%.*s", prefix, prefix[0] ? "." : "", n,
                     n ? (const char *)cbor_string_handle(k) : "");
            print_flat(key, p[i].value);
        }
        return;
    }
    if (cbor_isa_array(it)) {
        for (size_t i = 0; i < cbor_array_size(it); i++) {
            snprintf(key, sizeof(key), "%s.%zu", prefix, i);
            print_flat(key, cbor_array_handle((cbor_item_t *)it)[i]);
        }
        return;
    }
    printf("%s: ", prefix);
    print_raw(it);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    long timeout = 5000;
    int opt;
    /* '+' stops at the first command word, so "ferry redis SET k -1" works. */
    while ((opt = getopt_long(argc, argv, "+s:t:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': path = optarg; break;
        case 't': {
            char *end;
            timeout = strtol(optarg, &end, 10);
            if (*end || timeout <= 0 || timeout > 86400000) {
                fprintf(stderr, "ferry: --timeout needs a positive number of milliseconds\n");
                return 64;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 64;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 64;
    }
    const char *cmd = argv[optind];
    int is_redis = strcmp(cmd, "redis") == 0;
    if (!is_redis && strcmp(cmd, "ping") && strcmp(cmd, "hello") && strcmp(cmd, "stats")) {
        fprintf(stderr, "ferry: unknown command '%s'\n", cmd);
        usage(stderr);
        return 64;
    }
    if (is_redis && optind + 1 >= argc) {
        fprintf(stderr, "ferry: redis needs a command, e.g. ferry redis GET key\n");
        return 64;
    }
    int err = 0;
    ferry_t *f = ferry_connect(path, &err);
    if (!f) {
        fprintf(stderr, "ferry: cannot connect to %s: %s\n",
                path ? path : getenv("FERRY_SOCKET") ? getenv("FERRY_SOCKET") : FERRY_DEFAULT_SOCKET,
                ferry_strerror(err));
        return 2;
    }
    ferry_msg_t *m = NULL;
    /* Wait a little past the deadline, so the daemon's own "timeout" answer
     * arrives rather than a client-side one. */
    int wait_ms = (int)timeout + 1000;
    int rc;
    if (is_redis)
        rc = ferry_call_redis(f, argc - optind - 1, (const char *const *)argv + optind + 1, NULL,
                              (uint32_t)timeout, &m, wait_ms);
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
        print_flat("", m->result);
    } else {
        print_raw(m->result);
    }
    ferry_msg_free(m);
    ferry_close(f);
    return status;
}
