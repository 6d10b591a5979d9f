/*
 * log.h - one-line key=value logging to stderr.
 *
 * The macros do exactly two things: skip formatting when the level is off, and add
 * file:line. Lines look like
 *   2026-11-23T09:40:01.123Z level=info src=model.c:88 event=model_loaded layers=30
 * Callers write the key=value pairs (event=, req=, trace=) themselves. Writes are one
 * fprintf per line, so lines from several threads do not interleave.
 */
#ifndef LLM_COMMON_LOG_H
#define LLM_COMMON_LOG_H

typedef enum {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
    LOG_LEVEL_OFF = 4,
} log_level;

/* log_set_level sets the lowest level printed (default info, or $LLM_LOG_LEVEL =
 * debug|info|warn|error|off read on first use). Any thread. */
void log_set_level(log_level level);
log_level log_get_level(void);

/* log_parse_level maps "debug".."off" to a level; returns -1 for anything else. */
int log_parse_level(const char *name);

/* log_write formats and writes one line. Use the macros, not this. */
#if defined(__GNUC__)
#define LLM_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define LLM_PRINTF_LIKE(f, a)
#endif
void log_write(log_level level, const char *file, int line, const char *fmt, ...)
    LLM_PRINTF_LIKE(4, 5);

#define LOG_AT(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((lvl) >= log_get_level())                                                              \
            log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);                                     \
    } while (0)
#define LOG_DEBUG(...) LOG_AT(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) LOG_AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_WARN(...) LOG_AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_ERROR(...) LOG_AT(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
