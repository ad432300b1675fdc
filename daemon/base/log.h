/* log.h: levelled, one-line-per-event logging on stderr, where systemd's
 * journal and Kubernetes pick it up. Callers never pass secrets: URLs go
 * through url_redact() first. */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_threshold;

/* Returns the level named name ("error", "warn", "info", "debug"), or -1. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level level);

void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* At most one line per every_ms for an event that can repeat without end
 * (a flood of refused clients, a collector that keeps failing):
 * log_limit_pass says whether to write one now, and how many were held
 * back since the last. */
struct log_limit {
    uint64_t last_ms;
    unsigned long held;
};
bool log_limit_pass(struct log_limit *l, uint64_t now_ms, uint64_t every_ms, unsigned long *held);

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...) do { if (log_threshold >= LOG_INFO) log_write(LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_threshold >= LOG_DEBUG) log_write(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
