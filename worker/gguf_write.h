/*
 * gguf_write.h - build a GGUF v3 file in memory order and write it out.
 *
 * Used by the tiny-model generator that the tests rely on (llm-gguf tiny) and by the
 * quantizer. Keys and tensors are written in the order they were added; tensor data is
 * aligned to 32 bytes (GGUF_DEFAULT_ALIGNMENT; do not set `general.alignment` to anything
 * else). The writer copies everything it is given, so callers may free their buffers
 * right after each call. A tensor may also be declared without data
 * (gguf_writer_add_tensor_info) and produced at write time by a callback
 * (gguf_writer_write_stream), so a whole model never has to be in memory at once.
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
typedef struct gguf_sink gguf_sink;

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

/* gguf_writer_set_raw adds a key of any type whose value is already serialized as GGUF v3
 * stores it (little-endian; a string is its u64 length and bytes; an array is its u32
 * element type, u64 count and elements), e.g. copied byte for byte from another file.
 * The value is checked: n_bytes must be exactly one well-formed value of that type
 * (arrays of arrays are refused, as gguf_open refuses them). LLM_OK, LLM_ENOMEM, or
 * LLM_EINVAL for a duplicate key or a malformed value. */
int gguf_writer_set_raw(gguf_writer *w, const char *key, gguf_type type, const void *val,
                        size_t n_bytes);

/* gguf_writer_add_tensor copies n_bytes of already-encoded data of the given type and
 * shape (ne[0] is the row length). LLM_EINVAL if n_bytes does not match the shape. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, llm_dtype type, uint32_t n_dims,
                           const int64_t *ne, const void *data, size_t n_bytes);

/* gguf_writer_add_tensor_info declares a tensor of the given type and shape whose data
 * is not given now: gguf_writer_write_stream asks its fill callback for it. LLM_OK,
 * LLM_ENOMEM, or LLM_EINVAL for a bad shape (a row not a multiple of the block size). */
int gguf_writer_add_tensor_info(gguf_writer *w, const char *name, llm_dtype type, uint32_t n_dims,
                                const int64_t *ne);

/* gguf_writer_size returns the exact size in bytes of the file the writer would write
 * now (header, tensor table, padding and all tensor data). */
uint64_t gguf_writer_size(const gguf_writer *w);

/* gguf_writer_write writes the file to path via a temporary name and rename(), so a
 * failure leaves no half-written file. LLM_EIO on failure, LLM_EINVAL if a tensor was
 * declared without data (use gguf_writer_write_stream). */
int gguf_writer_write(const gguf_writer *w, const char *path);

/* Produces the data of tensor `index` (0-based, in the order tensors were added) by
 * calling gguf_sink_write until exactly the tensor's size has been written. Returns
 * LLM_OK, or an error that aborts the write (it is returned by gguf_writer_write_stream).
 * On a sink error, return that error. */
typedef int (*gguf_fill_fn)(void *ctx, uint64_t index, gguf_sink *sink);

/* gguf_sink_write appends n bytes to the current tensor's data. LLM_OK, LLM_ERANGE when
 * that would exceed the tensor's declared size (nothing is written), or LLM_EIO when the
 * write failed (disk full, file size limit, I/O error). Valid only inside the fill
 * callback it was passed to. */
int gguf_sink_write(gguf_sink *s, const void *p, size_t n);

/* gguf_writer_write_stream writes the header and tensor table, then each tensor's data
 * in order: tensors added with data are copied, tensors declared with
 * gguf_writer_add_tensor_info are produced by fill(ctx, index, sink), one at a time,
 * while the file is written (so memory is bounded by what fill holds). The file is
 * written under a temporary name in path's directory (path + ".tmp<pid>"), flushed
 * to disk and renamed to path only when everything succeeded; on any failure the
 * temporary file is removed and path is untouched. Returns LLM_OK, LLM_ENOMEM, LLM_EIO
 * (cannot create, write, sync or rename; err says why, e.g. "No space left on device"),
 * LLM_EINVAL (fill wrote too little or too much, or fill is NULL while a tensor has no
 * data), or what fill returned. err (err_len bytes, may be 0) gets one line on failure. */
int gguf_writer_write_stream(const gguf_writer *w, const char *path, gguf_fill_fn fill, void *ctx,
                             char *err, size_t err_len);

#endif
