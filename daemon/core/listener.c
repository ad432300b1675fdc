/* listener.c: see listener.h. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <string.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "counters.h"
#include "listener.h"
#include "log.h"

/* Decides what to do with a file already at path: 0 when the path is free
 * (or was a dead socket, now removed), -1 when we must not start. */
static int clear_stale(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : (log_error("socket %s: %s", path, strerror(errno)), -1);
    if (!S_ISSOCK(st.st_mode)) {
        log_error("socket %s: the path exists and is not a socket; refusing to replace it", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("socket(): %s", strerror(errno));
        return -1;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int err = errno;
    close(fd);
    if (rc == 0) {
        log_error("socket %s: another ferryd is live on it; refusing to start", path);
        return -1;
    }
    if (err != ECONNREFUSED) {
        log_error("socket %s: cannot tell whether it is in use: %s", path, strerror(err));
        return -1;
    }
    log_info("socket %s: removing the stale socket of a dead process", path);
    if (unlink(path) != 0 && errno != ENOENT) {
        log_error("socket %s: unlink: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The owner was checked when the configuration was read (the same
 * config_owner_resolve), but the user database may have changed since. */
static int set_owner(const char *path, const char *owner)
{
    uid_t uid;
    gid_t gid;
    char why[300];
    if (config_owner_resolve(owner, &uid, &gid, why, sizeof(why)) != 0) {
        log_error("key 'socket_owner': %s", why);
        return -1;
    }
    if (chown(path, uid, gid) != 0) {
        log_error("socket %s: chown %s: %s", path, owner, strerror(errno));
        return -1;
    }
    return 0;
}

/* Raises the soft limit on open files to the hard one: each client is a
 * descriptor, and a distribution's default soft limit (1024) is often
 * below max_clients. Warns when max_clients still cannot fit. */
static void raise_fd_limit(struct listener *l)
{
    struct client_set *s = l->clients;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        s->fd_limit = 1024;
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            log_info("open files limit raised from %llu to %llu", (unsigned long long)old,
                     (unsigned long long)rl.rlim_max);
        else
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    s->fd_limit = rl.rlim_cur > (rlim_t)LONG_MAX ? LONG_MAX : (long)rl.rlim_cur;
    if (l->cfg->max_clients + s->fd_reserve > s->fd_limit)
        log_warn("max_clients %ld cannot fit in the open files limit (%ld): clients past about %ld are "
                 "refused with 'overloaded'; raise the limit (LimitNOFILE=, ulimit -n)",
                 l->cfg->max_clients, s->fd_limit, s->fd_limit - s->fd_reserve);
}

static void on_connection(uv_stream_t *st, int status)
{
    struct listener *l = container_of((uv_pipe_t *)st, struct listener, pipe);
    struct client_set *s = l->clients;
    if (status < 0) {
        /* libuv closed the connection it could not accept (its reserved
         * descriptor trick); it is counted, and that is all that is left. */
        s->counters->clients_rejected++;
        static struct log_limit lim;
        unsigned long held;
        if (log_limit_pass(&lim, uv_now(s->loop), 1000, &held))
            log_warn("client refused: accept: %s (%lu more since the last report)", uv_strerror(status), held);
        return;
    }
    client_accept(s, st);
}

/* The first descriptor a service manager passes (SD_LISTEN_FDS_START). */
#define LISTEN_FDS_START 3

/* Socket activation (sd_listen_fds(3), done by hand for the reasons in
 * notify.c): systemd, or systemd-socket-activate, made and bound the
 * socket and passes it as descriptor 3, with LISTEN_PID naming us and
 * LISTEN_FDS counting the descriptors. The variables are removed either
 * way, so that nothing started later takes them for its own. Returns the
 * descriptor, -1 when none was passed to us, or -2 after logging why the
 * passed one cannot be used. */
static int passed_socket(void)
{
    const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
    long pid = pid_s ? strtol(pid_s, NULL, 10) : 0, nfds = fds_s ? strtol(fds_s, NULL, 10) : 0;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (!pid_s || !fds_s || pid != (long)getpid() || nfds < 1)
        return -1;
    int fd = LISTEN_FDS_START;
    /* Ours from now on: not inherited by anything we might run. */
    for (int i = fd; i < fd + nfds; i++)
        fcntl(i, F_SETFD, FD_CLOEXEC);
    if (nfds > 1) {
        log_warn("socket activation: %ld sockets passed; ferryd serves one, closing the others", nfds);
        for (int i = fd + 1; i < fd + nfds; i++)
            close(i);
    }
    int domain = 0, type = 0, accepting = 0;
    socklen_t len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &(socklen_t){sizeof(int)}) != 0 || type != SOCK_STREAM ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &(socklen_t){sizeof(int)}) != 0 || !accepting) {
        log_error("socket activation: descriptor %d is not a listening Unix stream socket "
                  "(ListenStream= with a path, and Accept=no)", fd);
        return -2;
    }
    return fd;
}

/* Serves the socket the service manager passed. It stays the manager's:
 * ferryd neither chmods nor unlinks it (SocketMode= and the unit own
 * those), so connections that arrive while ferryd restarts wait in its
 * backlog for the next ferryd. */
static int adopt(struct listener *l, uv_loop_t *loop, int fd)
{
    struct sockaddr_un sa;
    socklen_t len = sizeof(sa);
    char path[sizeof(sa.sun_path) + 1] = "?";
    /* A name that fills sun_path has no terminating NUL: bounded by len. */
    if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0 && len > offsetof(struct sockaddr_un, sun_path) &&
        len <= sizeof(sa))
        snprintf(path, sizeof(path), "%.*s", (int)(len - offsetof(struct sockaddr_un, sun_path)),
                 sa.sun_path[0] ? sa.sun_path : "(abstract)");
    raise_fd_limit(l);
    uv_pipe_init(loop, &l->pipe, 0);
    int rc = uv_pipe_open(&l->pipe, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->pipe, 511, on_connection);
    if (rc < 0) {
        log_error("socket activation: %s: %s", path, uv_strerror(rc));
        uv_close((uv_handle_t *)&l->pipe, NULL);
        return -1;
    }
    l->listening = true;
    if (strcmp(path, l->cfg->socket) != 0)
        log_info("socket activation: serving %s, passed by the service manager (key 'socket', %s, is not used)",
                 path, l->cfg->socket);
    else
        log_info("listening on %s (passed by the service manager)", path);
    return 0;
}

int listener_open(struct listener *l, uv_loop_t *loop, const struct config *cfg, struct client_set *clients)
{
    l->cfg = cfg;
    l->clients = clients;
    int fd = passed_socket();
    if (fd == -2)
        return -1;
    if (fd >= 0)
        return adopt(l, loop, fd);
    const char *path = l->cfg->socket;
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        log_error("key 'socket': path longer than %zu bytes", sizeof(sa.sun_path) - 1);
        return -1;
    }
    /* Create the parent directory (one level, like /run/ferry) if missing. */
    char dir[sizeof(sa.sun_path)];
    snprintf(dir, sizeof(dir), "%s", path);
    char *d = dirname(dir);
    if (mkdir(d, 0755) != 0 && errno != EEXIST) {
        log_error("socket directory %s: %s", d, strerror(errno));
        return -1;
    }
    if (clear_stale(path) != 0)
        return -1;
    raise_fd_limit(l);
    uv_pipe_init(loop, &l->pipe, 0);
    /* Bind under a strict umask so that no one can connect in the moment
     * before chmod() applies socket_mode. */
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&l->pipe, path);
    umask(old);
    if (rc < 0) {
        log_error("socket %s: bind: %s", path, uv_strerror(rc));
        uv_close((uv_handle_t *)&l->pipe, NULL);
        return -1;
    }
    l->socket_bound = true;
    if (chmod(path, (mode_t)l->cfg->socket_mode) != 0) {
        log_error("socket %s: chmod: %s", path, strerror(errno));
        listener_close(l);
        return -1;
    }
    if (l->cfg->socket_owner[0] && set_owner(path, l->cfg->socket_owner) != 0) {
        listener_close(l);
        return -1;
    }
    rc = uv_listen((uv_stream_t *)&l->pipe, 511, on_connection);
    if (rc < 0) {
        log_error("socket %s: listen: %s", path, uv_strerror(rc));
        listener_close(l);
        return -1;
    }
    l->listening = true;
    log_info("listening on %s (mode %04lo)", path, l->cfg->socket_mode);
    return 0;
}

void listener_close(struct listener *l)
{
    if (l->socket_bound) {
        unlink(l->cfg->socket);
        l->socket_bound = false;
    }
    if (l->pipe.loop && !uv_is_closing((uv_handle_t *)&l->pipe))
        uv_close((uv_handle_t *)&l->pipe, NULL);
    l->listening = false;
}
