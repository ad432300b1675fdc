/* notify.h: telling a service manager (systemd, Type=notify) about the
 * daemon's life: READY=1, RELOADING=1, STOPPING=1, STATUS= and WATCHDOG=1.
 *
 * Without NOTIFY_SOCKET in the environment every call does nothing, so
 * ferryd runs the same under systemd, in a container or from a shell. */
#ifndef FERRY_NOTIFY_H
#define FERRY_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

struct notify {
    int fd;                      /* owns: AF_UNIX datagram socket, or -1 when not notifying */
    struct sockaddr_un addr;     /* NOTIFY_SOCKET: a path, or an abstract name ('@' as NUL) */
    socklen_t addr_len;
    uv_timer_t watchdog;         /* sends WATCHDOG=1 at half of WATCHDOG_USEC */
    bool watchdog_on;            /* the timer is initialised and not yet closed */
    uint64_t watchdog_usec;      /* 0 when the manager asked for no watchdog */
    uint64_t lost;               /* datagrams the socket refused (full, or the manager gone) */
};

/* Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID and starts the
 * watchdog pings on loop. A malformed variable is logged and ignored:
 * the daemon still runs, only unsupervised. */
void notify_open(struct notify *n, uv_loop_t *loop);
/* Sends one message ("READY=1\nSTATUS=..."), printf-style. Never blocks:
 * a datagram the socket cannot take now is dropped and counted, since
 * the next state change says all there is to say. */
void notify_send(struct notify *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sends RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC now), as
 * systemd asks of a reload. */
void notify_reloading(struct notify *n);
/* Stops the watchdog and closes the socket (handles close on the loop). */
void notify_close(struct notify *n);

/* Parses a NOTIFY_SOCKET value into *addr: "/path" or "@abstract". Pure,
 * for the unit tests. Returns 0 or -1. */
int notify_parse_address(const char *value, struct sockaddr_un *addr, socklen_t *len);

#endif
