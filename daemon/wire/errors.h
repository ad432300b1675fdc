/* errors.h: ferry's one error convention.
 *
 * Functions return 0 or a negative fe_code. The same table yields the wire
 * name that clients see in {"error": {"code": ...}} and a default message,
 * so a code never has two spellings. The set is stable: codes are only ever
 * added, and docs/protocol.md lists them. */
#ifndef FERRY_ERRORS_H
#define FERRY_ERRORS_H

/* X(symbol, wire name, default message) */
#define FE_CODES(X)                                                          \
    X(BAD_REQUEST,   "bad_request",   "the request is malformed")            \
    X(UNKNOWN_OP,    "unknown_op",    "no such op")                          \
    X(DENIED,        "denied",        "the command is denied by policy")     \
    X(TIMEOUT,       "timeout",       "the deadline passed")                 \
    X(UNAVAILABLE,   "unavailable",   "the backend is unreachable")          \
    X(BACKEND_ERROR, "backend_error", "the backend returned an error")       \
    X(TOO_LARGE,     "too_large",     "the frame or value is too large")     \
    X(OVERLOADED,    "overloaded",    "a limit was reached; retry later")    \
    X(SHUTTING_DOWN, "shutting_down", "the daemon is shutting down")         \
    X(INTERNAL,      "internal",      "internal error")                      \
    X(NACKED,        "nacked",        "the broker refused the message")      \
    X(UNROUTABLE,    "unroutable",    "no queue took the mandatory message") \
    X(UNCONFIRMED,   "unconfirmed",   "the broker did not confirm in time")  \
    X(BLOCKED,       "blocked",       "the broker is blocking publishers")   \
    X(NOT_HELD,      "not_held",      "the lock is not held with this token")

#define FE_OK 0

/* The codes, as negative numbers in table order. */
enum {
#define FE_NEG(sym, name, msg) FE_IDX_##sym,
    FE_CODES(FE_NEG)
#undef FE_NEG
    FE_NCODES
};
#define FE_E(sym) (-(FE_IDX_##sym) - 1)
#define FE_BAD_REQUEST   FE_E(BAD_REQUEST)
#define FE_UNKNOWN_OP    FE_E(UNKNOWN_OP)
#define FE_DENIED        FE_E(DENIED)
#define FE_TIMEOUT       FE_E(TIMEOUT)
#define FE_UNAVAILABLE   FE_E(UNAVAILABLE)
#define FE_BACKEND_ERROR FE_E(BACKEND_ERROR)
#define FE_TOO_LARGE     FE_E(TOO_LARGE)
#define FE_OVERLOADED    FE_E(OVERLOADED)
#define FE_SHUTTING_DOWN FE_E(SHUTTING_DOWN)
#define FE_INTERNAL      FE_E(INTERNAL)
#define FE_NACKED        FE_E(NACKED)
#define FE_UNROUTABLE    FE_E(UNROUTABLE)
#define FE_UNCONFIRMED   FE_E(UNCONFIRMED)
#define FE_BLOCKED       FE_E(BLOCKED)
#define FE_NOT_HELD      FE_E(NOT_HELD)

/* Index 0..FE_NCODES-1 of a negative code; outcome tables put "ok" at
 * FE_NCODES. */
static inline int fe_index(int code) { return code == 0 ? FE_NCODES : -code - 1; }

const char *fe_name(int code);
const char *fe_message(int code);
/* The code whose wire name is name, or 0 if none. */
int fe_from_name(const char *name);

#endif
