/* listener.h: the Unix socket that applications connect to. */
#ifndef FERRY_LISTENER_H
#define FERRY_LISTENER_H

#include <stdbool.h>
#include <uv.h>

struct client_set;
struct config;

struct listener {
    uv_pipe_t pipe;
    struct client_set *clients;  /* refers: where accepted connections go */
    const struct config *cfg;    /* refers */
    bool listening;
    bool socket_bound;           /* we created the socket file and must unlink it */
};

/* Serves the listening socket a service manager passed (socket
 * activation: LISTEN_FDS, LISTEN_PID), or else creates, secures and
 * listens on cfg.socket, accepting into clients. Raises the open-files
 * limit first and records it in clients->fd_limit. A live ferryd already
 * on the path makes it fail; a dead one's socket file is replaced.
 * Returns 0, or -1 after logging why. Runs before the loop starts, so its
 * one blocking connect() (to probe the old socket) stalls nothing. */
int listener_open(struct listener *l, uv_loop_t *loop, const struct config *cfg, struct client_set *clients)
    __attribute__((warn_unused_result));
/* Stops accepting, and removes the socket file if ferryd created it
 * (never a socket the service manager passed). */
void listener_close(struct listener *l);

#endif
