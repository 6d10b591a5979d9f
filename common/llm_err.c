/*
 * llm_err.c - names for llm_err codes. Nothing else lives here.
 */
#include "llm_err.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static const char *const err_names[] = {
    [LLM_OK] = "ok",
    [LLM_ENOMEM] = "out of memory",
    [LLM_EINVAL] = "invalid argument",
    [LLM_ETIMEDOUT] = "timed out",
    [LLM_ECLOSED] = "closed",
    [LLM_EPROTO] = "protocol error",
    [LLM_EIO] = "i/o error",
    [LLM_EBUSY] = "resource busy",
    [LLM_ENOENT] = "not found",
    [LLM_ENOTSUP] = "not supported",
    [LLM_ERANGE] = "out of range",
    [LLM_ECANCELED] = "canceled",
    [LLM_EUNAVAIL] = "unavailable",
};

const char *
llm_strerror(int err)
{
    if (err < 0 || (size_t)err >= sizeof(err_names) / sizeof(err_names[0]) || !err_names[err])
        return "unknown error";
    return err_names[err];
}

void
llm_errf(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || !err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}
