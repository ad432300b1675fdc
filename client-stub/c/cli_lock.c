/* cli_lock.c: `ferry lock acquire|release|extend|run`.
 *
 * The lock is held by this process's connection to ferryd: when it ends
 * (or dies), ferryd releases every lock it acquired, unless acquired
 * with --detach. So `lock run` is the way to hold a lock from a shell,
 * like flock(1): acquire, run the command while extending the lock every
 * ttl/3, release, exit with the command's status. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_cmds.h"
#include "cli_print.h"

struct lock_opts {
    const char *name;
    const char *token;
    long ttl;          /* --ttl MS, -1 when absent */
    long wait;         /* --wait MS, -1 when absent */
    int detach;        /* --detach */
    char **command;    /* after "--", NULL-terminated (lock run) */
};

static int bad_usage(const char *why)
{
    fprintf(stderr, "ferry lock: %s\n%s", why, cli_lock_cmd.usage);
    return 64;
}

static long number(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || end == s || v < 0 ? -1 : v;
}

/* Reads NAME [TOKEN] and the options; the command after "--". */
static int parse(int n, char **w, struct lock_opts *o, int want_token)
{
    memset(o, 0, sizeof(*o));
    o->ttl = o->wait = -1;
    int pos = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(w[i], "--")) {
            o->command = &w[i + 1];
            break;
        }
        if (!strcmp(w[i], "--ttl") || !strcmp(w[i], "--wait")) {
            long v = i + 1 < n ? number(w[i + 1]) : -1;
            if (v < 0)
                return bad_usage("--ttl and --wait take milliseconds");
            *(w[i][2] == 't' ? &o->ttl : &o->wait) = v;
            i++;
        } else if (!strcmp(w[i], "--detach")) {
            o->detach = 1;
        } else if (pos == 0) {
            o->name = w[i];
            pos++;
        } else if (pos == 1 && want_token) {
            o->token = w[i];
            pos++;
        } else {
            return bad_usage("too many arguments");
        }
    }
    if (!o->name || (want_token && !o->token))
        return bad_usage(want_token ? "a NAME and a TOKEN are needed" : "a NAME is needed");
    return 0;
}

/* Sends one lock op; returns its answer in *m (0) or the exit status. */
static int call(ferry_t *f, const char *op, const struct lock_opts *o, uint32_t deadline, int wait_ms,
                ferry_msg_t **m)
{
    cbor_item_t *a = cbor_new_definite_map(4);
    cli_map_put(a, "name", cbor_build_string(o->name));
    if (o->token)
        cli_map_put(a, "token", cbor_build_string(o->token));
    if (o->ttl >= 0)
        cli_map_put(a, "ttl_ms", cbor_build_uint64((uint64_t)o->ttl));
    if (o->wait >= 0 && !o->token)
        cli_map_put(a, "wait_ms", cbor_build_uint64((uint64_t)o->wait));
    if (o->detach)
        cli_map_put(a, "detach", cbor_build_bool(true));
    int rc = ferry_call(f, op, a, deadline, m, wait_ms);
    cbor_decref(&a);
    int st = cli_check_result(*m, rc);
    if (st) {
        ferry_msg_free(*m);
        *m = NULL;
    }
    return st;
}

/* Acquires o's lock, waiting --wait ms at most; on success copies the
 * token into token[33]. Returns 0, or the exit status (1: not acquired). */
static int acquire(ferry_t *f, const struct lock_opts *o, const struct cli_ctx *ctx, char token[33], int print)
{
    /* The deadline must cover the wait, or the answer is "timeout". */
    uint32_t deadline = ctx->deadline;
    if (o->wait > 0 && (uint64_t)o->wait + 1000 > deadline)
        deadline = (uint32_t)(o->wait + 1000);
    ferry_msg_t *m = NULL;
    int st = call(f, "lock.acquire", o, deadline, (int)deadline + 1000, &m);
    if (st)
        return st;
    const cbor_item_t *ok = cli_map_get(m->result, "acquired");
    const cbor_item_t *tok = cli_map_get(m->result, "token");
    if (!ok || !cbor_is_bool(ok) || !cbor_get_bool(ok) || !tok || !cbor_isa_string(tok) ||
        cbor_string_length(tok) != 32) {
        fprintf(stderr, "ferry: lock %s not acquired: another holds it\n", o->name);
        ferry_msg_free(m);
        return 1;
    }
    memcpy(token, cbor_string_handle(tok), 32);
    token[32] = '\0';
    if (print)
        cli_print_flat("", m->result);
    ferry_msg_free(m);
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the command while holding the lock; see the top of the file. */
static int run(ferry_t *f, struct lock_opts *o, const struct cli_ctx *ctx)
{
    if (!o->command || !o->command[0])
        return bad_usage("lock run needs a command after --");
    char token[33];
    o->detach = 0;
    int st = acquire(f, o, ctx, token, 0);
    if (st)
        return st;
    pid_t pid = fork();
    if (pid < 0) {
        perror("ferry: fork");
        return 1;
    }
    if (pid == 0) {
        execvp(o->command[0], o->command);
        fprintf(stderr, "ferry: cannot run %s: %s\n", o->command[0], strerror(errno));
        _exit(127);
    }
    struct lock_opts ext = *o;
    ext.token = token;
    uint64_t every = o->ttl / 3 > 0 ? (uint64_t)o->ttl / 3 : 1;
    uint64_t next = now_ms() + every;
    int status = 0, lost = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            perror("ferry: waitpid");
            return 1;
        }
        uint64_t t = now_ms();
        if (t >= next && !lost) {
            ferry_msg_t *m = NULL;
            /* The extend must answer before the lock could expire. */
            uint32_t dl = (uint32_t)(every < ctx->deadline ? every * 2 : ctx->deadline);
            if (call(f, "lock.extend", &ext, dl, (int)dl + 500, &m) != 0) {
                fprintf(stderr, "ferry: lost lock %s: stopping %s\n", o->name, o->command[0]);
                kill(pid, SIGTERM);
                lost = 1;
            }
            ferry_msg_free(m);
            next = t + every;
        }
        poll(NULL, 0, 20);
    }
    if (!lost) {
        ext.ttl = -1;
        ferry_msg_t *m = NULL;
        if (call(f, "lock.release", &ext, ctx->deadline, ctx->wait_ms, &m) == 0)
            ferry_msg_free(m);
    }
    if (lost)
        return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int lock_run(ferry_t *f, int n, char **w, const struct cli_ctx *ctx)
{
    if (n < 1)
        return bad_usage("acquire, release, extend or run?");
    const char *sub = w[0];
    struct lock_opts o;
    int is_acquire = !strcmp(sub, "acquire"), is_run = !strcmp(sub, "run");
    int is_release = !strcmp(sub, "release"), is_extend = !strcmp(sub, "extend");
    if (!is_acquire && !is_run && !is_release && !is_extend)
        return bad_usage("acquire, release, extend or run?");
    int st = parse(n - 1, w + 1, &o, is_release || is_extend);
    if (st)
        return st;
    if ((is_acquire || is_run || is_extend) && o.ttl <= 0)
        return bad_usage("--ttl MS is needed");
    if (o.command && !is_run)
        return bad_usage("only lock run takes a command");
    if (is_run)
        return run(f, &o, ctx);
    if (is_acquire) {
        char token[33];
        return acquire(f, &o, ctx, token, 1);
    }
    if (is_release)
        o.ttl = -1;
    ferry_msg_t *m = NULL;
    st = call(f, is_release ? "lock.release" : "lock.extend", &o, ctx->deadline, ctx->wait_ms, &m);
    if (st)
        return st;
    cli_print_flat("", m->result);
    ferry_msg_free(m);
    return 0;
}

const struct cli_cmd cli_lock_cmd = {
    "lock",
    "  lock acquire NAME --ttl MS [--wait MS] [--detach]\n"
    "                        take a lock, waiting up to MS for it; prints acquired, token, fence\n"
    "                        and ttl_ms (exit 1 when not acquired). It is released when this\n"
    "                        command exits, unless --detach (then only release or the TTL frees it)\n"
    "  lock release NAME TOKEN\n"
    "  lock extend NAME TOKEN --ttl MS\n"
    "                        (exit 1 with not_held when the token does not hold it)\n"
    "  lock run NAME --ttl MS [--wait MS] -- COMMAND [ARG...]\n"
    "                        run COMMAND holding the lock (extended every ttl/3), release it and\n"
    "                        exit with COMMAND's status; 1 if not acquired or the lock was lost\n",
    lock_run,
};
