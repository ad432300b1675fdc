/* request.c: the request lifecycle, which every op and backend shares.
 *
 * The path of a request, in file order:
 *
 *   listener.c   accept()
 *       |
 *   client.c     read --> frame.c splits frames --> request_handle()
 *       |                                               |
 *   request.c    codec.c decodes --> op lookup --> deadline armed
 *       |                                               |
 *       +--> ops_core.c   ping / hello / stats (answer at once)
 *       +--> backend.h    submit() --> rds_backend.c --> rds_conn.c
 *                                                           | reply
 *   request.c    request_result_*() / request_fail()  <-----+
 *       |        (or: deadline expired --> cancel() --> "timeout")
 *       |        (or: client gone      --> cancel() --> no response)
 *   client.c     response appended to the client's outq
 *   outq.c       one coalesced write per loop iteration
 *
 * Telemetry stays beside this path: reqtrace_begin() in request_handle(),
 * reqtrace_describe() in the backend, reqtrace_end() in request_end().
 *
 * Ownership: the request is malloc'd with a copy of its frame, so every
 * field of its view stays valid for its whole life whatever happens to the
 * client's input buffer. It is owned by its client's in-flight list; a
 * backend only refers to it between submit() and completion or cancel().
 * Exactly one of result, fail, expire or abandon ends it, and each goes
 * through request_end(), the one place a request is freed. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "counters.h"
#include "log.h"
#include "policy.h"
#include "request.h"
#include "telemetry.h"

/* outcome is fe_index() of the code sent, or OUTCOME_ABANDONED; message
 * is the error's text. */
static void request_end(struct request *r, int outcome, const char *message)
{
    struct request_owner *o = r->owner;
    struct request_ctx *s = o->ctx;
    r->op->outcomes[outcome]++;
    const char *etype = outcome == OUTCOME_OK          ? NULL
                      : outcome == OUTCOME_ABANDONED ? "abandoned"
                                                     : fe_name(-outcome - 1);
    reqtrace_end(&r->trace, &r->op->duration, etype, message);
    deadline_remove(&s->deadlines, &r->deadline);
    dlist_remove(&r->client_node);
    o->ninflight--;
    free(r);
    o->done(o);
}

/* Answers a frame that never became a request. */
static void answer_early(struct request_owner *o, bool has_id, uint64_t id, int code, const char *why)
{
    codec_error_frame(o->out, has_id, id, code, why);
    o->sent(o);
}

/* The access policy's first word on a request: whether its client is
 * covered at all (again, after a reload) and whether its policy allows
 * the op. Returns the policy, or NULL after answering 'denied'. The
 * backends check the rest (commands, keys, names) at submit. */
static struct policy *check_policy(struct request_ctx *s, struct request_owner *o, struct op *op, uint64_t id)
{
    if (o->policy_gen != s->policies->gen) {
        o->policy = o->has_cred ? policy_find(s->policies, o->uid, o->gid) : NULL;
        o->policy_gen = s->policies->gen;
    }
    struct policy *p = o->policy;
    char msg[200];
    if (!p) {
        snprintf(msg, sizeof(msg), "no policy covers this peer (uid %u gid %u)", (unsigned)o->uid, (unsigned)o->gid);
    } else {
        p->requests++;
        if (policy_allows_op(p, (unsigned)(op - s->ops->op)))
            return p;
        p->denied++;
        snprintf(msg, sizeof(msg), "policy '%s' does not allow op '%s'", p->name, op->name);
    }
    op->outcomes[fe_index(FE_DENIED)]++;
    answer_early(o, true, id, FE_DENIED, msg);
    return NULL;
}

void request_handle(struct request_owner *o, struct client *c, const uint8_t *body, size_t len)
{
    struct request_ctx *s = o->ctx;
    struct codec_limits lim = {.max_depth = (unsigned)s->cfg->max_depth,
                               .max_items = (size_t)s->cfg->max_items};
    struct req_view v;
    const char *why = NULL;

    s->counters->frames_in++;
    int rc = codec_decode_request(body, len, &lim, &v, &why);
    if (rc) {
        log_debug("client %llu: %s: %s", (unsigned long long)o->id, fe_name(rc), why);
        answer_early(o, v.has_id, v.id, rc, why);
        return;
    }
    struct op *op = ops_find(s->ops, v.op, v.op_len);
    if (!op) {
        char msg[160];
        snprintf(msg, sizeof(msg), "no op named '%.*s'", (int)(v.op_len > 64 ? 64 : v.op_len), v.op);
        answer_early(o, true, v.id, FE_UNKNOWN_OP, msg);
        return;
    }
    if (s->draining) {
        op->outcomes[fe_index(FE_SHUTTING_DOWN)]++;
        answer_early(o, true, v.id, FE_SHUTTING_DOWN, NULL);
        return;
    }
    struct policy *pol = NULL;
    if (s->policies->n && (pol = check_policy(s, o, op, v.id)) == NULL)
        return;

    struct request *r = xmalloc(sizeof(*r) + len);
    memcpy(r->frame, body, len);
    r->frame_len = len;
    /* Re-point the view into our own copy of the frame. */
    ptrdiff_t shift = (const uint8_t *)r->frame - body;
    r->v = v;
    r->v.op += shift;
    if (v.args)
        r->v.args += shift;
    if (v.traceparent)
        r->v.traceparent += shift;
    if (v.tracestate)
        r->v.tracestate += shift;
    r->owner = o;
    r->client = c;
    r->op = op;
    r->policy = pol;
    r->id = v.id;
    r->start_ns = uv_hrtime();
    r->backend = NULL;
    r->bseq = 0;
    r->bdata = NULL;
    r->bflags = 0;
    /* A backend that describes its requests may leave the root span
     * unrecorded until needed. */
    reqtrace_begin(&r->trace, s->tel, op->name, r->start_ns, r->v.traceparent, r->v.traceparent_len, r->v.tracestate,
                   r->v.tracestate_len, op->backend && op->backend->ops->spans_on_demand);
    dlist_init(&r->deadline.node);
    dlist_push_tail(&o->inflight, &r->client_node);
    o->ninflight++;

    uint64_t ms = v.has_deadline ? v.deadline_ms : (uint64_t)s->cfg->default_deadline_ms;
    if (ms > (uint64_t)s->cfg->max_deadline_ms)
        ms = (uint64_t)s->cfg->max_deadline_ms;
    deadline_add(&s->deadlines, &r->deadline, uv_now(s->loop) + ms);

    if (op->run) {
        rc = op->run(op->ctx, r);
    } else {
        /* r may be complete and freed when submit returns. */
        r->backend = op->backend;
        op->backend->ops->submit(op->backend, r);
        return;
    }
    if (rc)
        request_fail(r, rc, NULL);
}

struct cbuf *request_result_begin(struct request *r, size_t *at)
{
    *at = codec_result_begin(r->owner->out, r->id);
    return r->owner->out;
}

void request_result_end(struct request *r, size_t at)
{
    struct request_owner *o = r->owner;
    struct cbuf *out = o->out;
    if (out->len - at - 4 > (size_t)o->ctx->cfg->max_frame) {
        /* The result would be a frame the client may refuse; say so
         * instead of sending it. */
        out->len = at;
        char msg[128];
        snprintf(msg, sizeof(msg), "the response is larger than max_frame (%ld bytes)",
                 o->ctx->cfg->max_frame);
        codec_error_frame(out, true, r->id, FE_TOO_LARGE, msg);
        request_end(r, fe_index(FE_TOO_LARGE), msg);
    } else {
        codec_result_end(out, at);
        request_end(r, OUTCOME_OK, NULL);
    }
    o->sent(o);
}

void request_result(struct request *r, const uint8_t *cbor, size_t len)
{
    size_t at;
    struct cbuf *out = request_result_begin(r, &at);
    cbuf_put(out, cbor, len);
    request_result_end(r, at);
}

void request_fail(struct request *r, int code, const char *message)
{
    struct request_owner *o = r->owner;
    codec_error_frame(o->out, true, r->id, code, message);
    request_end(r, fe_index(code), message ? message : fe_message(code));
    o->sent(o);
}

void request_abandon(struct request *r)
{
    if (r->backend) {
        r->backend->ops->cancel(r->backend, r);
        r->backend = NULL;
    }
    request_end(r, OUTCOME_ABANDONED, "the client disconnected");
}

void request_expired(struct deadlines *d, struct deadline *e)
{
    (void)d;
    struct request *r = container_of(e, struct request, deadline);
    int code = FE_TIMEOUT;
    if (r->backend) {
        if (r->backend->ops->timeout_code)
            code = r->backend->ops->timeout_code(r->backend, r);
        r->backend->ops->cancel(r->backend, r);
        r->backend = NULL;
    }
    char msg[128];
    unsigned long long ms = (uv_hrtime() - r->start_ns) / 1000000;
    if (code == FE_TIMEOUT)
        snprintf(msg, sizeof(msg), "no reply within the deadline (%llu ms)", ms);
    else
        snprintf(msg, sizeof(msg), "%s within the deadline (%llu ms)", fe_message(code), ms);
    request_fail(r, code, msg);
}
