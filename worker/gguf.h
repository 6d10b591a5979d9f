/*
 * gguf.h - read-only access to a GGUF (v2/v3) model file over mmap.
 *
 * gguf_open() maps the file and validates everything before anyone uses it: magic,
 * version, counts, every string and array length, every key's type, every tensor's
 * dimensions, type, offset, size and alignment against the file size. After a
 * successful open, every accessor is bounds-safe: a hostile or truncated file is an
 * error at open, never a crash later. Tensor data is used straight from the mapping
 * (no copy). What this module does not do: interpret model hyperparameters (model.c)
 * or the vocabulary (tok.c); write files (gguf_write.h).
 *
 * Thread: a gguf_file is immutable after open; any thread may read it concurrently.
 */
#ifndef LLM_WORKER_GGUF_H
#define LLM_WORKER_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kern.h"

typedef struct gguf_file gguf_file;

/* Metadata value types, numbered as in the GGUF specification. */
typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

/* A string inside the mapping: not NUL-terminated. */
typedef struct {
    const char *ptr;
    uint64_t len;
} gguf_str;

/* One tensor; all fields validated at open. `data` points into the mapping,
 * n_bytes = kern_row_size(type, ne[0]) * ne[1] * ne[2] * ne[3]. */
typedef struct {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; // ne[0] is the contiguous (row) dimension; unused dims are 1
    llm_dtype type;
    uint64_t offset; // relative to the start of the data section
    uint64_t n_bytes;
    const void *data; // borrowed, valid until gguf_close()
} gguf_tensor;

typedef struct {
    bool mlock;    // mlock() the mapping (failure is a warning, not an error)
    bool willneed; // madvise(MADV_WILLNEED) to start reading the weights in
} gguf_open_opts;

/* gguf_open maps and validates path. On success *out is set (free with gguf_close()).
 * On failure returns LLM_EIO (cannot open/map), LLM_EINVAL (malformed file) or
 * LLM_ENOTSUP (unsupported version or tensor type), and writes one human-readable
 * line naming the problem to err (err_len bytes, may be 0). opts may be NULL. */
int gguf_open(const char *path, const gguf_open_opts *opts, gguf_file **out, char *err,
              size_t err_len);

/* gguf_open_memory is gguf_open over a caller-owned buffer (tests, fuzzing); the
 * buffer must outlive the gguf_file. */
int gguf_open_memory(const void *buf, size_t len, gguf_file **out, char *err, size_t err_len);

/* gguf_release drops the resident pages of [p, p + n) (inside the mapping) from this
 * process: for tensors whose bytes were copied elsewhere, so they stop counting in RSS.
 * Reading them again faults them back in from the file. No-op for gguf_open_memory. */
void gguf_release(const gguf_file *f, const void *p, size_t n);

/* gguf_close unmaps and frees. Accepts NULL. */
void gguf_close(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
uint64_t gguf_file_size(const gguf_file *f);
uint64_t gguf_alignment(const gguf_file *f);

/* --- metadata ---------------------------------------------------------------------- */

uint64_t gguf_kv_count(const gguf_file *f);
/* gguf_find_key returns the index of key, or -1. */
int64_t gguf_find_key(const gguf_file *f, const char *key);
gguf_str gguf_kv_key(const gguf_file *f, uint64_t i);
gguf_type gguf_kv_type(const gguf_file *f, uint64_t i);
/* For arrays: element type and count (GGUF_TYPE_COUNT / 0 for non-arrays). */
gguf_type gguf_kv_arr_type(const gguf_file *f, uint64_t i);
uint64_t gguf_kv_arr_len(const gguf_file *f, uint64_t i);

/* Typed getters by key. Return LLM_OK, LLM_ENOENT (no such key) or LLM_EINVAL (wrong
 * type, or an integer that does not fit). Integer getters accept any integer type
 * whose value fits the output. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
int gguf_get_f32(const gguf_file *f, const char *key, float *out); // FLOAT32 or FLOAT64
int gguf_get_bool(const gguf_file *f, const char *key, bool *out);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);

/* Arrays by key. gguf_get_arr returns element type and count. */
int gguf_get_arr(const gguf_file *f, const char *key, gguf_type *elem_type, uint64_t *n);
/* Element i of a string array (LLM_ERANGE if i >= n). */
int gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out);
/* Copies a numeric array into out[0..n) converting to the out type; LLM_EINVAL if the
 * element type is not numeric (or, for _i32, a value does not fit). */
int gguf_get_arr_i32(const gguf_file *f, const char *key, int32_t *out, uint64_t n);
int gguf_get_arr_f32(const gguf_file *f, const char *key, float *out, uint64_t n);

/* --- tensors ------------------------------------------------------------------------ */

uint64_t gguf_tensor_count(const gguf_file *f);
/* Borrowed, valid until gguf_close(). i < gguf_tensor_count(). */
const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i);
/* Returns NULL when there is no tensor of that name. */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* gguf_str_eq compares a gguf_str with a C string. */
bool gguf_str_eq(gguf_str s, const char *cstr);

#endif
