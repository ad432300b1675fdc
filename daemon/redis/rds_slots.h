/* rds_slots.h: Redis Cluster's arithmetic: the hash slot of a key
 * (CRC16 with {hash tags}), the slot map from CLUSTER SLOTS, and the
 * MOVED/ASK redirections. Pure: no I/O, for unit tests. */
#ifndef FERRY_RDS_SLOTS_H
#define FERRY_RDS_SLOTS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define RDS_SLOTS 16384
#define RDS_SLOTS_MAX_REPLICAS 4

/* A node as CLUSTER SLOTS names it. */
struct rds_slots_node {
    char host[256];
    int port;
    char id[48];
};

/* A range of slots, its primary and (up to RDS_SLOTS_MAX_REPLICAS of)
 * its replicas. */
struct rds_slots_range {
    int start, end; /* inclusive */
    struct rds_slots_node primary;
    struct rds_slots_node replica[RDS_SLOTS_MAX_REPLICAS];
    int nreplicas;
};

struct rds_slots_map {
    struct rds_slots_range *range; /* owns */
    size_t n;
};

uint16_t rds_slots_crc16(const char *p, size_t len);
/* The slot of key: CRC16 of the whole key, or of the part between the
 * first '{' and the next '}' when that part is not empty. */
int rds_slots_of(const char *key, size_t len);

/* Builds m from CLUSTER SLOTS's reply. A node announced without an
 * address (an empty host, or "?") is taken to be at fallback_host, the
 * node that answered. Returns 0, or -1 with why (m is then empty). */
int rds_slots_parse(const redisReply *reply, const char *fallback_host, struct rds_slots_map *m, char *why,
                    size_t len);
void rds_slots_free(struct rds_slots_map *m);

enum rds_redirect { RDS_REDIRECT_NONE, RDS_REDIRECT_MOVED, RDS_REDIRECT_ASK };
/* Reads an error reply's text: "MOVED 3999 127.0.0.1:6381" or "ASK ...",
 * into slot, host (hostlen bytes) and port. An empty host ("MOVED 1 :6380",
 * a node with no announced address) is left empty for the caller. */
enum rds_redirect rds_slots_redirect(const char *err, size_t len, int *slot, char *host, size_t hostlen,
                                     int *port);

#endif
