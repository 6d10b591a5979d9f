/*
 * gguf_write.h - build a GGUF v3 file in memory order and write it out.
 *
 * Used by the tiny-model generator that the tests rely on (llm-gguf tiny) and, later,
 * by the quantizer. Keys and tensors are written in the order they were added; tensor
 * data is aligned to `general.alignment` (32 unless set). The writer copies everything it
 * is given, so callers may free their buffers right after each call.
 * What it does not do: quantize (kern.h does), validate model semantics.
 *
 * Thread: one thread per writer.
 */
#ifndef LLM_WORKER_GGUF_WRITE_H
#define LLM_WORKER_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct gguf_writer gguf_writer;

/* gguf_writer_new returns LLM_OK or LLM_ENOMEM; free with gguf_writer_free(). */
int gguf_writer_new(gguf_writer **out);
void gguf_writer_free(gguf_writer *w);

/* Scalar keys. Each returns LLM_OK, LLM_ENOMEM, or LLM_EINVAL for a duplicate key. */
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);

/* Arrays. Strings are NUL-terminated C strings; lens may be NULL (then strlen is used)
 * or give each string's byte length (strings may then hold NUL bytes). */
int gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v,
                            const size_t *lens, size_t n);
int gguf_writer_set_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n);
int gguf_writer_set_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n);

/* gguf_writer_add_tensor copies n_bytes of already-encoded data of the given type and
 * shape (ne[0] is the row length). LLM_EINVAL if n_bytes does not match the shape. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, llm_dtype type, uint32_t n_dims,
                           const int64_t *ne, const void *data, size_t n_bytes);

/* gguf_writer_write writes the file to path via a temporary name and rename(), so a
 * failure leaves no half-written file. LLM_EIO on failure. */
int gguf_writer_write(const gguf_writer *w, const char *path);

#endif
