/* log.c: the logger behind log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

enum log_level log_threshold = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *name)
{
    for (int i = 0; i <= LOG_DEBUG; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return LOG_WARN;
    return -1;
}

const char *log_level_name(enum log_level level)
{
    return level <= LOG_DEBUG ? level_names[level] : "?";
}

/* Formats the whole line first and writes it with one write(2), so that
 * lines from ferryd never interleave with a supervisor's own output. */
void log_write(enum log_level level, const char *fmt, ...)
{
    if (level > log_threshold)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ferryd[%d] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(), level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* One event, one line: fold embedded newlines. */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

bool log_limit_pass(struct log_limit *l, uint64_t now_ms, uint64_t every_ms, unsigned long *held)
{
    if (l->last_ms && now_ms - l->last_ms < every_ms) {
        l->held++;
        return false;
    }
    *held = l->held;
    l->held = 0;
    l->last_ms = now_ms ? now_ms : 1;
    return true;
}
