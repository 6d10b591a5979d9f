/*
 * llm_time.c - the monotonic and wall clocks.
 */
#define _DEFAULT_SOURCE // nanosleep

#include "llm_time.h"

#include <time.h>

uint64_t
llm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t
llm_now_ms(void)
{
    return (int64_t)(llm_now_ns() / 1000000u);
}

int64_t
llm_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
llm_ms_until_unix(uint64_t unix_ms)
{
    return (int64_t)(unix_ms > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : unix_ms) - llm_unix_ms();
}

void
llm_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
