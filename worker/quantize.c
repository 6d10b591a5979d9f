/*
 * quantize.c - GGUF to GGUF type conversion, streamed one row at a time.
 *
 * The output is planned completely before a byte is written: every key copied, every
 * tensor's output type and shape declared to a gguf_writer, so the header and all
 * offsets are known. Then gguf_writer_write_stream calls fill_tensor for each tensor,
 * which decodes a source row to floats and encodes it to the output type. A tensor whose
 * type does not change is copied byte for byte (re-encoding would only add error).
 * Metadata values are copied as raw GGUF bytes (see copy_key), so keys of every type,
 * 64-bit ones included, survive exactly.
 */
#include "quantize.h"

#include "gguf_write.h"
#include "llm_err.h"
#include "llm_time.h"
#include "log.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* One row per target: the name users type, the type, llama.cpp's file type
 * (LLAMA_FTYPE_MOSTLY_*; the K-quants are reported as their _S mixes, 14, 16 and 18,
 * since every matrix gets the target), and the type of a matrix whose rows are not a
 * multiple of the target's block: llama.cpp's choice for the K-quants (Q5_0 for
 * Q4_K, Q5_1 for Q5_K, Q8_0 for Q6_K: blocks of 32 with about the bits per weight of
 * the target, so a model with 576-wide rows does not grow), Q8_0 for the rest. */
typedef struct {
    const char *name;
    llm_dtype type;
    int ftype;
    llm_dtype fallback;
} quant_target;

static const quant_target targets[] = {
    {"Q8_0", LLM_DTYPE_Q8_0, 7, LLM_DTYPE_Q8_0},  {"Q4_0", LLM_DTYPE_Q4_0, 2, LLM_DTYPE_Q8_0},
    {"Q4_1", LLM_DTYPE_Q4_1, 3, LLM_DTYPE_Q8_0},  {"Q5_0", LLM_DTYPE_Q5_0, 8, LLM_DTYPE_Q8_0},
    {"Q5_1", LLM_DTYPE_Q5_1, 9, LLM_DTYPE_Q8_0},  {"Q4_K", LLM_DTYPE_Q4_K, 14, LLM_DTYPE_Q5_0},
    {"Q5_K", LLM_DTYPE_Q5_K, 16, LLM_DTYPE_Q5_1}, {"Q6_K", LLM_DTYPE_Q6_K, 18, LLM_DTYPE_Q8_0},
    {"F16", LLM_DTYPE_F16, 1, LLM_DTYPE_F16},     {"BF16", LLM_DTYPE_BF16, 32, LLM_DTYPE_BF16},
    {"F32", LLM_DTYPE_F32, 0, LLM_DTYPE_F32},
};
#define N_TARGETS (sizeof(targets) / sizeof(targets[0]))

static const quant_target *
find_target(llm_dtype type)
{
    for (size_t i = 0; i < N_TARGETS; i++)
        if (targets[i].type == type)
            return &targets[i];
    return NULL;
}

int
quant_type_parse(const char *name, llm_dtype *out)
{
    for (size_t i = 0; i < N_TARGETS; i++) {
        if (strcmp(name, targets[i].name) != 0)
            continue;
        *out = targets[i].type;
        const kern_type_traits *tr = kern_type((int)targets[i].type);
        return tr && tr->from_float ? LLM_OK : LLM_ENOTSUP;
    }
    return LLM_EINVAL;
}

const char *
quant_type_list(void)
{
    return "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, F16, BF16, F32";
}

int
quant_ftype(llm_dtype target)
{
    const quant_target *q = find_target(target);
    return q ? q->ftype : -1;
}

/* is_matrix: quantized at all (two or more dimensions, not small). */
static bool
is_matrix(const gguf_tensor *t)
{
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        n_elems *= (uint64_t)t->ne[d];
    return t->n_dims >= 2 && n_elems >= QUANT_MIN_ELEMS;
}

llm_dtype
quant_tensor_type(const gguf_tensor *t, llm_dtype target)
{
    if (!is_matrix(t))
        return LLM_DTYPE_F32;
    const kern_type_traits *tr = kern_type((int)target);
    if (tr && t->ne[0] % tr->blck == 0)
        return target;
    const quant_target *q = find_target(target);
    llm_dtype fb = q ? q->fallback : LLM_DTYPE_Q8_0; // every fallback has blocks of 32
    return t->ne[0] % 32 == 0 ? fb : LLM_DTYPE_F32;
}

/* c_name copies a GGUF string into a NUL-terminated one; NULL if it holds a NUL byte
 * (then no C-string API could name it) or on allocation failure. */
static char *
c_name(gguf_str s)
{
    if (memchr(s.ptr, 0, s.len))
        return NULL;
    char *c = malloc(s.len + 1);
    if (c) {
        memcpy(c, s.ptr, s.len);
        c[s.len] = 0;
    }
    return c;
}

static size_t
scalar_size(gguf_type t)
{
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* copy_key copies metadata entry i of f to w unchanged. The reader hands out keys and
 * strings as pointers into its mapping, and GGUF stores an entry as key, u32 type,
 * value, so the value's bytes start right after the type; their length follows from
 * the type and, for strings, from where the (last) string ends. gguf_open validated all
 * of it, and gguf_writer_set_raw checks the span again. */
static int
copy_key(gguf_writer *w, const gguf_file *f, uint64_t i, const char *key)
{
    gguf_str k = gguf_kv_key(f, i);
    gguf_type type = gguf_kv_type(f, i);
    const uint8_t *val = (const uint8_t *)k.ptr + k.len + 4;
    size_t len = scalar_size(type);
    gguf_str s;
    if (type == GGUF_TYPE_STRING) {
        if (gguf_get_str(f, key, &s) != LLM_OK)
            return LLM_EINVAL;
        len = (size_t)((const uint8_t *)s.ptr + s.len - val);
    } else if (type == GGUF_TYPE_ARRAY) {
        gguf_type et = gguf_kv_arr_type(f, i);
        uint64_t n = gguf_kv_arr_len(f, i);
        if (et == GGUF_TYPE_STRING && n > 0) {
            if (gguf_get_arr_str(f, key, n - 1, &s) != LLM_OK)
                return LLM_EINVAL;
            len = (size_t)((const uint8_t *)s.ptr + s.len - val);
        } else {
            len = 12 + (size_t)n * scalar_size(et);
        }
    }
    return gguf_writer_set_raw(w, key, type, val, len);
}

typedef struct {
    const gguf_file *in;
    const llm_dtype *out_type; // [n_tensors]
    float *row;                // [max row length]
    uint8_t *enc;              // [bytes of the longest encoded row]
} quant_ctx;

/* fill_tensor produces output tensor idx (same index as the input's) row by row. */
static int
fill_tensor(void *arg, uint64_t idx, gguf_sink *sink)
{
    quant_ctx *q = arg;
    const gguf_tensor *t = gguf_tensor_at(q->in, idx);
    llm_dtype dst = q->out_type[idx];
    size_t in_row = kern_row_size(t->type, t->ne[0]), out_row = kern_row_size(dst, t->ne[0]);
    uint64_t n_rows = t->n_bytes / in_row, t0 = llm_now_ns();
    int rc = LLM_OK;
    if (t->type == dst) {
        rc = gguf_sink_write(sink, t->data, (size_t)t->n_bytes);
    } else {
        kern_to_float_fn decode = kern_type((int)t->type)->to_float;
        kern_from_float_fn encode = kern_type((int)dst)->from_float;
        const uint8_t *src = t->data;
        for (uint64_t r = 0; r < n_rows && rc == LLM_OK; r++) {
            decode(src + r * in_row, q->row, t->ne[0]);
            encode(q->row, q->enc, t->ne[0]);
            rc = gguf_sink_write(sink, q->enc, out_row);
        }
    }
    LOG_DEBUG("event=quant_tensor i=%llu name=%.*s from=%s to=%s ne0=%lld rows=%llu "
              "in_bytes=%llu out_bytes=%llu ms=%.2f",
              (unsigned long long)idx, (int)t->name.len, t->name.ptr, kern_type_name((int)t->type),
              kern_type_name((int)dst), (long long)t->ne[0], (unsigned long long)n_rows,
              (unsigned long long)t->n_bytes, (unsigned long long)(out_row * n_rows),
              (double)(llm_now_ns() - t0) / 1e6);
    return rc;
}

/* plan declares every key and tensor of the output to w and fills out_type. */
static int
plan(gguf_writer *w, const gguf_file *in, llm_dtype target, llm_dtype *out_type, int64_t *max_ne0,
     quant_stats *st, char *err, size_t err_len)
{
    int rc = LLM_OK;
    char *name = NULL;
    bool have_ftype = false, have_qver = false;
    for (uint64_t i = 0; i < gguf_kv_count(in) && rc == LLM_OK; i++) {
        free(name);
        if (!(name = c_name(gguf_kv_key(in, i)))) {
            rc = LLM_EINVAL;
            llm_errf(err, err_len, "metadata key %llu holds a NUL byte", (unsigned long long)i);
            break;
        }
        if (!strcmp(name, "general.file_type")) {
            have_ftype = true;
            rc = gguf_writer_set_u32(w, name, (uint32_t)quant_ftype(target));
        } else if (!strcmp(name, "general.quantization_version")) {
            have_qver = true;
            rc = gguf_writer_set_u32(w, name, QUANT_VERSION);
        } else if (!strcmp(name, "general.alignment") &&
                   gguf_alignment(in) != GGUF_DEFAULT_ALIGNMENT) {
            // The writer aligns to 32; copying another value would misplace every tensor.
            LOG_INFO("event=quant_drop_key key=%s value=%llu reason=writer_aligns_to_%d", name,
                     (unsigned long long)gguf_alignment(in), GGUF_DEFAULT_ALIGNMENT);
        } else {
            rc = copy_key(w, in, i, name);
        }
        if (rc != LLM_OK)
            llm_errf(err, err_len, "copying metadata key '%s': %s", name, llm_strerror(rc));
    }
    if (rc == LLM_OK && !have_ftype)
        rc = gguf_writer_set_u32(w, "general.file_type", (uint32_t)quant_ftype(target));
    if (rc == LLM_OK && !have_qver)
        rc = gguf_writer_set_u32(w, "general.quantization_version", QUANT_VERSION);
    for (uint64_t i = 0; i < gguf_tensor_count(in) && rc == LLM_OK; i++) {
        const gguf_tensor *t = gguf_tensor_at(in, i);
        free(name);
        if (!(name = c_name(t->name))) {
            rc = LLM_EINVAL;
            llm_errf(err, err_len, "tensor %llu's name holds a NUL byte", (unsigned long long)i);
            break;
        }
        llm_dtype dst = quant_tensor_type(t, target);
        const kern_type_traits *src_tr = kern_type((int)t->type);
        if (dst != t->type && (!src_tr || !src_tr->to_float)) {
            rc = LLM_ENOTSUP;
            llm_errf(err, err_len, "tensor '%s': type %s cannot be decoded", name,
                     kern_type_name((int)t->type));
            break;
        }
        if (dst == target) {
            st->n_converted++;
        } else if (is_matrix(t)) {
            st->n_fallback++;
            LOG_INFO("event=quant_fallback tensor=%s row=%lld target=%s stored=%s "
                     "reason=row_not_multiple_of_block block=%d",
                     name, (long long)t->ne[0], kern_type_name((int)target),
                     kern_type_name((int)dst), kern_type((int)target)->blck);
        }
        out_type[i] = dst;
        if (t->ne[0] > *max_ne0)
            *max_ne0 = t->ne[0];
        if ((rc = gguf_writer_add_tensor_info(w, name, dst, t->n_dims, t->ne)) != LLM_OK)
            llm_errf(err, err_len, "tensor '%s': cannot declare it: %s", name, llm_strerror(rc));
    }
    st->n_tensors = gguf_tensor_count(in);
    free(name);
    return rc;
}

int
quant_file(const char *in_path, const char *out_path, llm_dtype target, quant_stats *st, char *err,
           size_t err_len)
{
    assert(in_path && out_path);
    quant_stats local = {0};
    quant_ctx q = {0};
    gguf_file *in = NULL;
    gguf_writer *w = NULL;
    llm_dtype *out_type = NULL;
    int64_t max_ne0 = 1;
    char why[512] = "";
    uint64_t t0 = llm_now_ns();
    int rc;
    if (!st)
        st = &local;
    memset(st, 0, sizeof(*st));

    const kern_type_traits *tr = kern_type((int)target);
    if (quant_ftype(target) < 0 || !tr || !tr->from_float) {
        llm_errf(err, err_len, "type %s cannot be quantized to yet", kern_type_name((int)target));
        return LLM_ENOTSUP;
    }
    if ((rc = gguf_open(in_path, NULL, &in, why, sizeof(why))) != LLM_OK) {
        llm_errf(err, err_len, "%s: %s", in_path, why);
        return rc == LLM_ENOTSUP || rc == LLM_ENOMEM ? rc : rc == LLM_EIO ? LLM_EIO : LLM_EINVAL;
    }
    uint64_t n_t = gguf_tensor_count(in);
    if ((rc = gguf_writer_new(&w)) != LLM_OK ||
        !(out_type = calloc(n_t ? n_t : 1, sizeof(llm_dtype)))) {
        rc = LLM_ENOMEM;
        llm_errf(err, err_len, "out of memory");
        goto out;
    }
    if ((rc = plan(w, in, target, out_type, &max_ne0, st, err, err_len)) != LLM_OK)
        goto out;
    q.in = in;
    q.out_type = out_type;
    // The longest encoded row is at most 4 bytes an element (F32 is the widest type).
    q.row = malloc(sizeof(float) * (size_t)max_ne0);
    q.enc = malloc(sizeof(float) * (size_t)max_ne0);
    if (!q.row || !q.enc) {
        rc = LLM_ENOMEM;
        llm_errf(err, err_len, "out of memory for a row of %lld elements", (long long)max_ne0);
        goto out;
    }
    st->in_bytes = gguf_file_size(in);
    st->out_bytes = gguf_writer_size(w);
    rc = gguf_writer_write_stream(w, out_path, fill_tensor, &q, why, sizeof(why));
    if (rc != LLM_OK)
        llm_errf(err, err_len, "writing %s: %s", out_path, why);
    st->elapsed_ns = llm_now_ns() - t0;
out:
    free(q.row);
    free(q.enc);
    free(out_type);
    gguf_writer_free(w);
    gguf_close(in);
    return rc;
}
