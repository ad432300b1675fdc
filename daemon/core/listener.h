/* listener.h: the Unix socket that applications connect to. */
#ifndef FERRY_LISTENER_H
#define FERRY_LISTENER_H

struct server;

/* Serves the listening socket a service manager passed (socket
 * activation: LISTEN_FDS, LISTEN_PID), or else creates, secures and
 * listens on cfg.socket. A live ferryd already on the path makes it fail;
 * a dead one's socket file is replaced. Returns 0, or
 * -1 after logging why. Runs before the loop starts, so its one blocking
 * connect() (to probe the old socket) stalls nothing. */
int listener_open(struct server *s) __attribute__((warn_unused_result));
/* Stops accepting, and removes the socket file if ferryd created it
 * (never a socket the service manager passed). */
void listener_close(struct server *s);

#endif
