/* rds_cluster.h: Redis Cluster: the nodes and the slot map (this file),
 * and the requests routed over them (rds_cljob.h): each command goes to
 * the primary that owns its keys' slot, with MOVED, ASK, TRYAGAIN and
 * CLUSTERDOWN handled, and MGET/MSET/DEL/UNLINK/EXISTS/TOUCH split per
 * slot and merged.
 *
 *   rds_backend.c rb_submit --> rds_cljob_submit --> a job (one part per
 *   slot) --> rds_conn_call on the slot's node --> on_part_reply:
 *     MOVED: the slot moves, the map is refreshed, the part resent;
 *     ASK: ASKING + the part on the target; TRYAGAIN/CLUSTERDOWN: the
 *     retry list, with backoff; else the reply (merged) completes r.
 */
#ifndef FERRY_RDS_CLUSTER_H
#define FERRY_RDS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#include "backend.h"
#include "cbuf.h"
#include "rds_commands.h"
#include "rds_conn.h"
#include "rds_slots.h"

struct request;
struct rds_cluster;

/* What the cluster needs of its backend (which it does not include). */
struct rds_cluster_host {
    const struct rds_target *tmpl;       /* refers: credentials, settings, loop, flusher */
    const struct rds_commands *commands; /* refers: key positions, for routing */
    void *arg;
    /* A node's readiness changed: the backend's health may have. */
    void (*changed)(void *arg);
    /* A node's connection is ready: the backend may learn the command
     * table on it, when it has none yet. */
    void (*node_ready)(void *arg, struct rds_conn *c);
    /* Describes r's span for the node c (NULL: none) before it is sent. */
    void (*describe)(void *arg, struct request *r, const struct rds_conn *c, int argc, const char *const *argv,
                     const size_t *lens);
};

#define RDS_CLUSTER_MAX_NODES 512
#define RDS_CLUSTER_MIXED 0xFFFF

enum clu_role { ROLE_UNKNOWN, ROLE_PRIMARY, ROLE_REPLICA };

/* A node of the cluster: a seed, or named by the map or a redirection. */
struct clu_node {
    struct rds_target t;       /* owns: this node's address (credentials copied from the backend's) */
    struct rds_cluster *cl;    /* refers */
    struct rds_conn *conn;     /* owns; NULL while no request needs the node (a replica without replica reads) */
    unsigned index;            /* in cl->node */
    enum clu_role role;        /* per the latest map */
    bool in_map;               /* named by the latest map */
    unsigned slots;            /* slots it serves as primary, per the latest map */
    char id[48];
    char hostport[300];        /* host:port, for stats and the metrics */
};

struct clu_part;

struct rds_cluster {
    struct rds_cluster_host h;
    struct clu_node **node;    /* owns, each */
    size_t nnodes, cap;
    uint16_t owner[RDS_SLOTS];   /* each slot's primary: node index + 1, 0 for none */
    uint16_t replica[RDS_SLOTS]; /* with replica reads, a replica of it: index + 1, 0 for none */
    /* Per slot, the value of moves when a MOVED last moved it: a map
     * asked before that (from a node whose view lags) does not move it
     * back. */
    uint32_t moved_at[RDS_SLOTS];
    uint32_t moves, moves_asked;  /* MOVEDs applied; moves when the map in flight was asked */
    bool map_known;
    bool refreshing;           /* a CLUSTER SLOTS is awaited */
    bool refresh_wanted;       /* at the next tick */
    bool started, stopped;
    uint64_t map_at;           /* loop time of the latest map */
    uint64_t map_version;      /* bumped whenever a map changes a slot's owner */
    uv_timer_t map_timer;
    uv_timer_t retry_timer;    /* rds_cljob.c's, for TRYAGAIN and CLUSTERDOWN */
    struct clu_part *retry;    /* refers: parts waiting to be sent again (rds_cljob.c) */
    /* Per slot, for keeping commands to one slot in order (rds_cljob.c):
     * parts in flight (or waiting to be retried), the node they went to
     * (index + 1; RDS_CLUSTER_MIXED: more than one), and parts held back
     * until those are answered, in cl->held. */
    uint32_t inflight[RDS_SLOTS];
    uint16_t via[RDS_SLOTS];
    uint16_t waiting[RDS_SLOTS];
    struct clu_part *held, *held_tail; /* refers: FIFO */
    /* owns: single-part jobs kept for reuse (rds_cljob.c), linked
     * through their first word: a malloc and a free per request were
     * a tenth of the routed path. */
    void *spare;
    unsigned nspare;
    size_t rr;                 /* round-robin start for keyless commands */
    uint64_t moved, asks, tryagain, crossslot, split, unavailable, replica_reads;
    uint64_t refreshes, refresh_failures;
    /* The address of the connections that may go to any node (a pub/sub
     * subscriber's): a copy of a ready primary's target, moved to another
     * one when that node fails or stops being a primary, so that such a
     * connection reconnects to a live node (rds_cluster_floating_target). */
    struct rds_target floating;
    struct clu_node *floating_node; /* refers: the node floating copies; NULL until first used */
};

/* NULL with err when redis_cluster does not parse. */
struct rds_cluster *rds_cluster_new(const struct rds_cluster_host *h, const char *seeds, char *err, size_t errlen);
void rds_cluster_start(struct rds_cluster *cl);
/* The node at host:port; made (not connected) when create and unknown.
 * NULL when unknown and not created. */
struct clu_node *rds_cluster_node(struct rds_cluster *cl, const char *host, int port, bool create);
/* Gives n its connection (started once the cluster is). */
void rds_cluster_connect(struct clu_node *n);
/* Asks for the slot map again (from prefer when it is ready), unless a
 * request for it is out. */
void rds_cluster_refresh(struct rds_cluster *cl, struct clu_node *prefer);
/* A MOVED said slot is n's now: routes it there at once, and asks n
 * (at most once per 100 ms) for the whole map. */
void rds_cluster_moved(struct rds_cluster *cl, int slot, struct clu_node *n);
/* The node to send slot's command to (slot < 0: keyless, any usable
 * primary); NULL when the map names none. read_only: a replica may do. */
struct clu_node *rds_cluster_route(struct rds_cluster *cl, int slot, bool read_only);
struct clu_node *rds_cluster_any(struct rds_cluster *cl);
/* A node's target, for dedicated connections (blocking commands): a
 * ready primary's, else the first seed's. */
struct rds_target *rds_cluster_any_target(struct rds_cluster *cl);
/* For the patterns' own connections (dedicated ones, redis.multi):
 * the slot of argv's keys (RDS_CLUSTER_KEYLESS: none, or the command is
 * unknown; RDS_CLUSTER_CROSSSLOT: they span slots), with the position of
 * the first key in *first (0 when keyless). */
#define RDS_CLUSTER_KEYLESS (-1)
#define RDS_CLUSTER_CROSSSLOT (-2)
int rds_cluster_keys_slot(struct rds_cluster *cl, int argc, const char *const *argv, const size_t *lens,
                          int *first);
/* The target of the primary serving slot (slot < 0, or no owner known:
 * a ready primary's, as rds_cluster_any_target). */
struct rds_target *rds_cluster_slot_target(struct rds_cluster *cl, int slot);
/* The shared connection of slot's primary (slot < 0: any primary's), or
 * NULL when it cannot take a command now. */
struct rds_conn *rds_cluster_slot_conn(struct rds_cluster *cl, int slot);
/* An error reply read on a connection of the patterns' own (not routed
 * by rds_cljob.c): a MOVED moves its slot in the map, so that the next
 * command for it goes to the right node. Returns whether it was one. */
bool rds_cluster_redirected(struct rds_cluster *cl, const redisReply *reply);
/* The target of connections that may go to any node and must survive
 * that node's failure (rds_cluster.h, floating). */
struct rds_target *rds_cluster_floating_target(struct rds_cluster *cl);
enum backend_health rds_cluster_health(struct rds_cluster *cl, char *why, size_t len);
/* Appends one map: nodes, map age and version, counters. */
void rds_cluster_stats(struct rds_cluster *cl, struct cbuf *o);
void rds_cluster_metrics(struct rds_cluster *cl, const struct metric_emit *e);
/* Stops the connections and timers (after rds_cljob_stop). */
void rds_cluster_stop(struct rds_cluster *cl);
void rds_cluster_free(struct rds_cluster *cl);

#endif
