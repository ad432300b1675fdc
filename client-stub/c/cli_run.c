/* cli_run.c: see cli_run.h. */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_run.h"

int cli_run_command(char *const *argv, const uint8_t *in, size_t inlen, size_t max, uint8_t **out,
                    size_t *outlen, int *status)
{
    int to_child[2], from_child[2];
    *out = NULL;
    *outlen = 0;
    if (pipe2(to_child, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(from_child, O_CLOEXEC) != 0) {
        close(to_child[0]);
        close(to_child[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(to_child[0]);
        close(to_child[1]);
        close(from_child[0]);
        close(from_child[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        /* The parent ignores SIGPIPE (a command that does not read its
         * stdin must not kill us); an ignored signal survives exec, so the
         * command gets the default back. */
        signal(SIGPIPE, SIG_DFL);
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    int wfd = to_child[1], rfd = from_child[0];
    if (inlen == 0) {
        close(wfd);
        wfd = -1;
    } else {
        fcntl(wfd, F_SETFL, O_NONBLOCK);
    }
    size_t sent = 0, cap = 0;
    uint8_t *buf = NULL;
    /* Write stdin and read stdout together: a command that answers before
     * it has read all its input would otherwise fill one pipe while we
     * wait on the other. */
    while (rfd >= 0) {
        struct pollfd fds[2] = {{.fd = rfd, .events = POLLIN}, {.fd = wfd, .events = POLLOUT}};
        if (poll(fds, wfd >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (wfd >= 0 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = write(wfd, in + sent, inlen - sent);
            if (n > 0)
                sent += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || sent == inlen) {
                close(wfd); /* done, or the command stopped reading (EPIPE) */
                wfd = -1;
            }
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            uint8_t chunk[65536];
            ssize_t n = read(rfd, chunk, sizeof(chunk));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(rfd);
                rfd = -1;
                break;
            }
            size_t keep = *outlen + (size_t)n > max ? max - *outlen : (size_t)n;
            if (*outlen + keep > cap) {
                cap = (*outlen + keep) * 2;
                buf = realloc(buf, cap);
                if (!buf)
                    abort();
            }
            memcpy(buf + *outlen, chunk, keep);
            *outlen += keep;
        }
    }
    if (wfd >= 0)
        close(wfd);
    if (rfd >= 0)
        close(rfd);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : 1;
    *out = buf;
    return 0;
}
