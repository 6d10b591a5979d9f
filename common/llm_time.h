/*
 * llm_time.h - clock helpers: the monotonic clock, the only one used for durations, and
 * the wall clock, for deadlines that travel between processes (unix ms).
 */
#ifndef LLM_COMMON_LLM_TIME_H
#define LLM_COMMON_LLM_TIME_H

#include <stdint.h>

/* llm_now_ns returns CLOCK_MONOTONIC in nanoseconds. Any thread. */
uint64_t llm_now_ns(void);
/* llm_now_ms: the same clock in milliseconds. */
int64_t llm_now_ms(void);
/* llm_unix_ms: CLOCK_REALTIME in milliseconds since the epoch. Any thread. */
int64_t llm_unix_ms(void);
/* llm_ms_until_unix: milliseconds from now to the wall-clock time unix_ms (negative
 * once past). A hostile unix_ms past INT64_MAX / 2 counts as far away, not as negative.
 * Any thread. */
int64_t llm_ms_until_unix(uint64_t unix_ms);
/* llm_sleep_ms sleeps ms milliseconds (less if a signal arrives: callers loop on a flag). */
void llm_sleep_ms(int ms);

#endif
