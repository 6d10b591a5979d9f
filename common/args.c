/*
 * args.c - numeric flag parsing over strtoll/strtoull/strtod with full-string checks.
 */
#include "args.h"

#include "llm_err.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int
args_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return LLM_EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return LLM_EINVAL;
    *out = v;
    return LLM_OK;
}

int
args_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return LLM_EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return LLM_EINVAL;
    *out = v;
    return LLM_OK;
}

int
args_float(const char *s, double lo, double hi, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return LLM_EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi)
        return LLM_EINVAL;
    *out = v;
    return LLM_OK;
}

int
args_die(const char *prog, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: error: %s\n", prog, msg); // one write: the line stays whole
    return code;
}

int64_t
args_need_int(const char *prog, const char *flag, const char *v, int64_t lo, int64_t hi)
{
    int64_t x;
    if (args_int(v, lo, hi, &x) != LLM_OK)
        exit(args_die(prog, 2, "%s: '%s' is not an integer in [%lld, %lld]", flag, v, (long long)lo,
                      (long long)hi));
    return x;
}

uint64_t
args_need_u64(const char *prog, const char *flag, const char *v)
{
    uint64_t x;
    if (args_u64(v, &x) != LLM_OK)
        exit(args_die(prog, 2, "%s: '%s' is not an unsigned integer", flag, v));
    return x;
}

double
args_need_float(const char *prog, const char *flag, const char *v, double lo, double hi)
{
    double x;
    if (args_float(v, lo, hi, &x) != LLM_OK)
        exit(args_die(prog, 2, "%s: '%s' is not a number in [%g, %g]", flag, v, lo, hi));
    return x;
}
