/* notify.c: the service manager's notification protocol (sd_notify(3)),
 * written here rather than linked from libsystemd.
 *
 * Why not libsystemd: the protocol is a few lines of text in one datagram
 * to the AF_UNIX socket named by $NOTIFY_SOCKET, documented and stable
 * since systemd 209 (and spoken by other managers: s6, supervisord
 * plugins, podman's --sdnotify). Linking libsystemd for it would add a
 * runtime dependency to every install, the container image and hosts
 * without systemd included, for about forty lines; and its sd_notify()
 * may block on a full socket, which the loop must never do.
 *
 * What ferryd sends, and when (server.c):
 *   READY=1       the listener is up and every configured backend connected,
 *                 or ready_timeout_ms passed first (STATUS= says which is not)
 *   RELOADING=1   with MONOTONIC_USEC=, on SIGHUP; READY=1 once reloaded
 *   STOPPING=1    when the drain begins
 *   WATCHDOG=1    every WATCHDOG_USEC / 2, from a loop timer, so a loop that
 *                 stalls misses its pings and systemd restarts the service */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "list.h"
#include "log.h"
#include "notify.h"

int notify_parse_address(const char *value, struct sockaddr_un *addr, socklen_t *len)
{
    size_t n = value ? strlen(value) : 0;
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    /* A path must be absolute; '@' names the abstract namespace, where the
     * name starts with a NUL byte and is not NUL-terminated. Anything else
     * (vsock:, a relative path) is not a socket we can reach. */
    if (n < 2 || n >= sizeof(addr->sun_path) || (value[0] != '/' && value[0] != '@'))
        return -1;
    memcpy(addr->sun_path, value, n);
    if (value[0] == '@') {
        addr->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

static void on_watchdog(uv_timer_t *t)
{
    notify_send(container_of(t, struct notify, watchdog), "WATCHDOG=1");
}

/* The watchdog applies to us when WATCHDOG_USEC is set and WATCHDOG_PID,
 * if set, is our pid (a manager sets it when the variable may have been
 * inherited by a child). Returns the interval in microseconds, or 0. */
static uint64_t watchdog_usec(void)
{
    const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (!us)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(us, &end, 10);
    if (errno || *end || v == 0) {
        log_warn("WATCHDOG_USEC='%.40s' is not a positive number of microseconds; no watchdog pings", us);
        return 0;
    }
    if (pid) {
        long p = strtol(pid, &end, 10);
        if (*end || p != (long)getpid()) {
            log_debug("WATCHDOG_PID=%.20s is not ours: no watchdog pings", pid);
            return 0;
        }
    }
    return (uint64_t)v;
}

void notify_open(struct notify *n, uv_loop_t *loop)
{
    memset(n, 0, sizeof(*n));
    n->fd = -1;
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path)
        return;
    if (notify_parse_address(path, &n->addr, &n->addr_len) != 0) {
        log_warn("NOTIFY_SOCKET='%.60s' is not an absolute path or an @abstract name; not notifying", path);
        return;
    }
    /* Non-blocking: a full socket buffer loses a datagram, never stalls
     * the loop. */
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (n->fd < 0) {
        log_warn("notify socket: %s; not notifying", strerror(errno));
        return;
    }
    n->watchdog_usec = watchdog_usec();
    if (n->watchdog_usec) {
        uint64_t ms = n->watchdog_usec / 2000;
        uv_timer_init(loop, &n->watchdog);
        uv_timer_start(&n->watchdog, on_watchdog, ms ? ms : 1, ms ? ms : 1);
        n->watchdog_on = true;
        log_info("watchdog: pinging the service manager every %llu ms", (unsigned long long)(ms ? ms : 1));
    }
    log_debug("notifying the service manager at %s", path);
}

void notify_send(struct notify *n, const char *fmt, ...)
{
    if (n->fd < 0)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    if ((size_t)len >= sizeof(msg))
        len = sizeof(msg) - 1; /* a STATUS= cut short still says something */
    ssize_t w;
    do
        w = sendto(n->fd, msg, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&n->addr, n->addr_len);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        n->lost++;
        static struct log_limit lim;
        unsigned long held;
        if (log_limit_pass(&lim, (uint64_t)time(NULL) * 1000, 1000, &held))
            log_warn("notify: %s (%lu more lost since the last report)", strerror(errno), held);
    }
}

void notify_reloading(struct notify *n)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    notify_send(n, "RELOADING=1\nMONOTONIC_USEC=%llu",
                (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
}

void notify_close(struct notify *n)
{
    if (n->watchdog_on) {
        uv_close((uv_handle_t *)&n->watchdog, NULL);
        n->watchdog_on = false;
    }
    if (n->fd >= 0) {
        close(n->fd);
        n->fd = -1;
    }
}
