/*
 * llm_err.h - the one error vocabulary of the project.
 *
 * Every function that can fail returns an llm_err (as int) and hands results back
 * through out-parameters. Foreign error codes (errno, NNG, hiredis, libconfig) are
 * translated once, at the module that wraps the library; they never cross a module
 * boundary. Values are append-only: they travel in protobuf error replies.
 */
#ifndef LLM_COMMON_LLM_ERR_H
#define LLM_COMMON_LLM_ERR_H

typedef enum {
    LLM_OK = 0,
    LLM_ENOMEM = 1,     // allocation failed
    LLM_EINVAL = 2,     // bad argument or bad input (malformed file, flag, message)
    LLM_ETIMEDOUT = 3,  // deadline passed
    LLM_ECLOSED = 4,    // object or peer closed
    LLM_EPROTO = 5,     // protocol violation
    LLM_EIO = 6,        // I/O failure (open, read, mmap, socket)
    LLM_EBUSY = 7,      // resource exhausted for now; retry later
    LLM_ENOENT = 8,     // no such key, tensor, model or request
    LLM_ENOTSUP = 9,    // well-formed but unsupported (tensor type, architecture)
    LLM_ERANGE = 10,    // value out of the allowed range (too long, too big)
    LLM_ECANCELED = 11, // stopped on request
    LLM_EUNAVAIL = 12,  // no worker can serve it now (none ready, retries spent)
} llm_err;

/* llm_strerror returns a static, human-readable name for err ("unknown error" for
 * values outside the enum). Thread-safe. */
const char *llm_strerror(int err);

#include <stddef.h>

#if defined(__GNUC__)
#define LLM_ERRF_FORMAT __attribute__((format(printf, 3, 4)))
#else
#define LLM_ERRF_FORMAT
#endif

/* llm_errf formats a one-line error message into err[0..err_len) for a caller that
 * asked for one (err may be NULL or err_len 0: then it does nothing). This is how
 * modules hand a human-readable reason back with an llm_err code. */
void llm_errf(char *err, size_t err_len, const char *fmt, ...) LLM_ERRF_FORMAT;

#endif
