/*
 * log.c - the logging sink. One line per call, written with a single fprintf so that
 * concurrent lines do not interleave. No buffering of its own, no rotation: operators
 * redirect stderr (the systemd journal, or files under run/).
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// -1 until first use, so that $LLM_LOG_LEVEL is read lazily and without a constructor.
static atomic_int log_level_now = -1;

int
log_parse_level(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

void
log_set_level(log_level level)
{
    atomic_store(&log_level_now, (int)level);
}

log_level
log_get_level(void)
{
    int lvl = atomic_load_explicit(&log_level_now, memory_order_relaxed);
    if (lvl < 0) {
        lvl = log_parse_level(getenv("LLM_LOG_LEVEL"));
        if (lvl < 0)
            lvl = LOG_LEVEL_INFO;
        atomic_store(&log_level_now, lvl);
    }
    return (log_level)lvl;
}

void
log_write(log_level level, const char *file, int line, const char *fmt, ...)
{
    static const char *const lvl_names[] = {"debug", "info", "warn", "error", "off"};
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s src=%s:%d %s\n",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, lvl_names[level], base, line, msg);
}
