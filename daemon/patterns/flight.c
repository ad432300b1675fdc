/* flight.c: single flight for the redis op's GETs (flight.h). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cachetab.h"
#include "cbuf.h"
#include "flight.h"
#include "list.h"
#include "rds_backend.h"
#include "rds_config.h"
#include "rds_reply.h"
#include "request.h"

struct flight_state {
    struct rds_backend *rb;    /* refers */
    struct cachetab flights;   /* owns the table; its entries are struct flight */
    uint64_t leaders;          /* GETs sent for a flight */
    uint64_t followers;        /* GETs that shared another's round trip */
    uint64_t abandoned;        /* members that went away before the reply */
};

/* One GET in flight. Owned by its call's callback: freed there. */
struct flight {
    struct cachetab_node node; /* in flights while no reply came */
    struct flight_state *fs;   /* refers */
    struct dlist members;      /* owns: struct member */
    char key[];                /* owns: the key, node.key points here */
};

struct member {
    struct rds_job job;        /* job.r: the request, NULL once it went away */
    struct dlist node;         /* in its flight's members (or a landing list) */
    struct flight_state *fs;   /* refers */
};

static void member_cancel(struct rds_job *j)
{
    struct member *m = container_of(j, struct member, job);
    m->fs->abandoned++;
    dlist_remove(&m->node);
    free(m);
}

/* The GET answered. The members are moved to a list of their own first,
 * and taken from it one at a time: completing one may close its client,
 * which cancels other members (taking them off that list) before their
 * turn. */
static void on_reply(void *arg, const redisReply *reply)
{
    struct flight *f = arg;
    struct flight_state *fs = f->fs;
    cachetab_remove(&fs->flights, &f->node);
    struct dlist landing;
    dlist_init(&landing);
    if (!dlist_empty(&f->members)) {
        landing.next = f->members.next;
        landing.prev = f->members.prev;
        landing.next->prev = &landing;
        landing.prev->next = &landing;
        dlist_init(&f->members);
    }
    struct cbuf enc;
    cbuf_init(&enc);
    bool ok = reply && reply->type != REDIS_REPLY_ERROR;
    if (ok)
        rds_reply_encode(reply, &enc);
    while (!dlist_empty(&landing)) {
        struct member *m = container_of(landing.next, struct member, node);
        dlist_remove(&m->node);
        struct request *r = m->job.r;
        free(m);
        if (ok)
            request_result(r, enc.data, enc.len);
        else
            rds_backend_fail_reply(r, reply);
    }
    cbuf_free(&enc);
    free(f);
}

/* Names the request's span GET, as the redis op would have. */
static void describe(struct rds_backend *rb, struct request *r, int argc, const char *const *argv,
                     const size_t *lens)
{
    struct reqtrace_desc *d = &rb->desc;
    d->operation = "GET";
    d->operation_len = 3;
    d->peer_address = NULL;
    d->conn = rb;
    d->conn_gen = 0;
    d->argc = argc;
    d->argv = (const char **)argv;
    d->lens = lens;
    d->procedure = NULL;
    d->procedure_len = 0;
    reqtrace_describe(&r->trace, d);
}

static void join(struct flight *f, struct request *r)
{
    struct member *m = xcalloc(1, sizeof(*m));
    m->fs = f->fs;
    m->job.cancel = member_cancel;
    dlist_push_tail(&f->members, &m->node);
    rds_backend_hold(r, &m->job);
}

static bool fl_intercept(struct rds_backend *rb, void *state, struct request *r, int argc,
                         const char *const *argv, const size_t *lens)
{
    struct flight_state *fs = state;
    if (rb->t.rc->single_flight[0] != 'y' || argc != 2 || lens[0] != 3 || strncasecmp(argv[0], "GET", 3))
        return false;
    struct cachetab_node *n = cachetab_find(&fs->flights, argv[1], lens[1]);
    if (n) {
        describe(rb, r, argc, argv, lens);
        fs->followers++;
        join(container_of(n, struct flight, node), r);
        return true;
    }
    struct flight *f = xmalloc(sizeof(*f) + lens[1] + 1);
    memcpy(f->key, argv[1], lens[1]);
    f->key[lens[1]] = '\0';
    f->node.key = f->key;
    f->node.keylen = lens[1];
    f->fs = fs;
    dlist_init(&f->members);
    const char *cmd[2] = {"GET", f->key};
    size_t cmdlens[2] = {3, lens[1]};
    if (rds_backend_call(rb, f->key, lens[1], 2, cmd, cmdlens, on_reply, f) != 0) {
        /* Left to the redis op's own path, which answers it as usual. */
        free(f);
        return false;
    }
    describe(rb, r, argc, argv, lens);
    cachetab_add(&fs->flights, &f->node);
    fs->leaders++;
    join(f, r);
    return true;
}

static int fl_create(struct rds_backend *rb, void **state, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct flight_state *fs = xcalloc(1, sizeof(*fs));
    fs->rb = rb;
    cachetab_init(&fs->flights);
    *state = fs;
    return 0;
}

static void fl_stats(struct rds_backend *rb, void *state, struct cbuf *o)
{
    struct flight_state *fs = state;
    cbuf_map(o, 5);
    cbuf_str(o, "enabled");
    cbuf_bool(o, rb->t.rc->single_flight[0] == 'y');
    cbuf_str(o, "in_flight");
    cbuf_uint(o, fs->flights.n);
    cbuf_str(o, "leaders");
    cbuf_uint(o, fs->leaders);
    cbuf_str(o, "followers");
    cbuf_uint(o, fs->followers);
    cbuf_str(o, "abandoned");
    cbuf_uint(o, fs->abandoned);
}

/* Every request is answered by now, so every flight's call has landed or
 * been failed: the table is empty. */
static void fl_destroy(struct rds_backend *rb, void *state)
{
    (void)rb;
    struct flight_state *fs = state;
    cachetab_free(&fs->flights);
    free(fs);
}

const struct rds_module flight_module = {
    .name = "single_flight",
    .create = fl_create,
    .intercept = fl_intercept,
    .stats = fl_stats,
    .destroy = fl_destroy,
};
