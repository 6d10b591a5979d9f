/*
 * args.h - strict parsing of numeric command-line values, shared by every binary.
 * "12abc", "", " 3", out-of-range values and NaN are errors, not silently clamped.
 */
#ifndef LLM_COMMON_ARGS_H
#define LLM_COMMON_ARGS_H

#include <stdint.h>

#include "log.h" // LLM_PRINTF_LIKE

/* args_int parses a base-10 integer in [lo, hi]. LLM_OK or LLM_EINVAL. */
int args_int(const char *s, int64_t lo, int64_t hi, int64_t *out);

/* args_u64 parses a base-10 unsigned 64-bit integer. LLM_OK or LLM_EINVAL. */
int args_u64(const char *s, uint64_t *out);

/* args_float parses a finite float in [lo, hi]. LLM_OK or LLM_EINVAL. */
int args_float(const char *s, double lo, double hi, double *out);

/* args_die prints "PROG: error: MESSAGE" as one line on stderr and returns code, so a
 * binary can `return args_die(...)` from main or its option parser. */
int args_die(const char *prog, int code, const char *fmt, ...) LLM_PRINTF_LIKE(3, 4);

/* The same for small command-line tools: a bad value prints "PROG: error: FLAG: ..."
 * and exits with code 2. */
int64_t args_need_int(const char *prog, const char *flag, const char *v, int64_t lo, int64_t hi);
uint64_t args_need_u64(const char *prog, const char *flag, const char *v);
double args_need_float(const char *prog, const char *flag, const char *v, double lo, double hi);

#endif
