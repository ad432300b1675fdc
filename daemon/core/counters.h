/* counters.h: the daemon-wide counters of the request path, declared
 * once: stats and the metrics read them from here. */
#ifndef FERRY_COUNTERS_H
#define FERRY_COUNTERS_H

#include <stdint.h>

/* X(name, help) */
#define CORE_COUNTERS(X)                                                            \
    X(clients_accepted, "client connections accepted")                              \
    X(clients_rejected, "connections refused: max_clients reached, out of descriptors, or no policy covers the peer") \
    X(clients_dropped_slow, "clients disconnected for not reading their responses") \
    X(clients_dropped_framing, "clients disconnected because framing was lost")     \
    X(clients_dropped_memory, "clients cut off because max_buffered was reached")   \
    X(clients_dropped_frame_timeout, "clients that did not finish a frame in time") \
    X(frames_in, "request frames received")                                         \
    X(bytes_in, "bytes received from clients")

struct counters {
#define CORE_COUNTER_FIELD(name, help) uint64_t name;
    CORE_COUNTERS(CORE_COUNTER_FIELD)
#undef CORE_COUNTER_FIELD
};

#endif
