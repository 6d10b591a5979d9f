/*
 * gguf_write.c - GGUF v3 builder. Metadata is serialized into one growing byte buffer
 * as it is added; tensors given with data are kept as copies, tensors declared without
 * data are produced by the caller's fill callback while the file is written, so the
 * quantizer streams a model through here tensor by tensor. Layout (offsets, padding)
 * is computed at write time from the declared shapes alone.
 */
#define _POSIX_C_SOURCE 200809L // fsync, fileno

#include "gguf_write.h"

#include "llm_err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    llm_dtype type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    void *data; // NULL: declared with gguf_writer_add_tensor_info, produced by fill
    size_t n_bytes;
} wr_tensor;

struct gguf_sink {
    FILE *fp;
    uint64_t left; // bytes of the current tensor not yet written
    int err_no;    // errno of the first failed write, 0 if none
};

struct gguf_writer {
    uint8_t *kv; // serialized key/value pairs
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    char **keys; // for duplicate detection
    wr_tensor *tensors;
    uint64_t n_tensors;
};

int
gguf_writer_new(gguf_writer **out)
{
    gguf_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return LLM_ENOMEM;
    *out = w;
    return LLM_OK;
}

void
gguf_writer_free(gguf_writer *w)
{
    if (!w)
        return;
    for (uint64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->keys);
    free(w->tensors);
    free(w->kv);
    free(w);
}

static int
put(gguf_writer *w, const void *p, size_t n)
{
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap * 2 : 4096;
        while (cap < w->kv_len + n)
            cap *= 2;
        uint8_t *b = realloc(w->kv, cap);
        if (!b)
            return LLM_ENOMEM;
        w->kv = b;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return LLM_OK;
}

static int
put_u32(gguf_writer *w, uint32_t v)
{
    return put(w, &v, 4);
}

static int
put_str(gguf_writer *w, const char *s, size_t len)
{
    uint64_t n = len;
    int rc = put(w, &n, 8);
    return rc != LLM_OK ? rc : put(w, s, len);
}

// begin_kv writes the key and value type after checking the key is new.
static int
begin_kv(gguf_writer *w, const char *key, gguf_type type)
{
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return LLM_EINVAL;
    char **keys = realloc(w->keys, (w->n_kv + 1) * sizeof(char *));
    if (!keys)
        return LLM_ENOMEM;
    w->keys = keys;
    if (!(keys[w->n_kv] = strdup(key)))
        return LLM_ENOMEM;
    w->n_kv++;
    int rc = put_str(w, key, strlen(key));
    return rc != LLM_OK ? rc : put_u32(w, (uint32_t)type);
}

static int
set_scalar(gguf_writer *w, const char *key, gguf_type type, const void *v, size_t n)
{
    int rc = begin_kv(w, key, type);
    return rc != LLM_OK ? rc : put(w, v, n);
}

int
gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v)
{
    return set_scalar(w, key, GGUF_TYPE_UINT32, &v, 4);
}

int
gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, GGUF_TYPE_INT32, &v, 4);
}

int
gguf_writer_set_f32(gguf_writer *w, const char *key, float v)
{
    return set_scalar(w, key, GGUF_TYPE_FLOAT32, &v, 4);
}

int
gguf_writer_set_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, GGUF_TYPE_BOOL, &b, 1);
}

int
gguf_writer_set_str(gguf_writer *w, const char *key, const char *v)
{
    int rc = begin_kv(w, key, GGUF_TYPE_STRING);
    return rc != LLM_OK ? rc : put_str(w, v, strlen(v));
}

static int
begin_arr(gguf_writer *w, const char *key, gguf_type elem, size_t n)
{
    int rc = begin_kv(w, key, GGUF_TYPE_ARRAY);
    if (rc == LLM_OK)
        rc = put_u32(w, (uint32_t)elem);
    uint64_t n64 = n;
    return rc != LLM_OK ? rc : put(w, &n64, 8);
}

int
gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, const size_t *lens,
                        size_t n)
{
    int rc = begin_arr(w, key, GGUF_TYPE_STRING, n);
    for (size_t i = 0; i < n && rc == LLM_OK; i++)
        rc = put_str(w, v[i], lens ? lens[i] : strlen(v[i]));
    return rc;
}

int
gguf_writer_set_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n)
{
    int rc = begin_arr(w, key, GGUF_TYPE_INT32, n);
    return rc != LLM_OK ? rc : put(w, v, n * 4);
}

int
gguf_writer_set_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n)
{
    int rc = begin_arr(w, key, GGUF_TYPE_FLOAT32, n);
    return rc != LLM_OK ? rc : put(w, v, n * 4);
}

/* raw_value_len returns the bytes one serialized value of type t takes at p[0..n), or 0
 * if it is malformed or runs past n. Arrays of arrays are refused (gguf_open does too). */
static size_t
raw_value_len(gguf_type t, const uint8_t *p, size_t n, bool in_array)
{
    static const uint8_t fixed[GGUF_TYPE_COUNT] = {
        [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,    [GGUF_TYPE_UINT16] = 2,
        [GGUF_TYPE_INT16] = 2,   [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4,
        [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,    [GGUF_TYPE_UINT64] = 8,
        [GGUF_TYPE_INT64] = 8,   [GGUF_TYPE_FLOAT64] = 8,
    };
    if ((unsigned)t >= GGUF_TYPE_COUNT)
        return 0;
    if (fixed[t])
        return fixed[t] <= n ? fixed[t] : 0;
    if (t == GGUF_TYPE_STRING) {
        uint64_t len;
        if (n < 8)
            return 0;
        memcpy(&len, p, 8);
        return len <= n - 8 ? (size_t)(8 + len) : 0;
    }
    if (t != GGUF_TYPE_ARRAY || in_array || n < 12)
        return 0;
    uint32_t et;
    uint64_t count;
    memcpy(&et, p, 4);
    memcpy(&count, p + 4, 8);
    size_t pos = 12;
    for (uint64_t i = 0; i < count; i++) {
        size_t len = raw_value_len((gguf_type)et, p + pos, n - pos, true);
        if (len == 0)
            return 0;
        pos += len;
    }
    return pos;
}

int
gguf_writer_set_raw(gguf_writer *w, const char *key, gguf_type type, const void *val,
                    size_t n_bytes)
{
    if (n_bytes == 0 || raw_value_len(type, val, n_bytes, false) != n_bytes)
        return LLM_EINVAL;
    int rc = begin_kv(w, key, type);
    return rc != LLM_OK ? rc : put(w, val, n_bytes);
}

/* tensor_bytes checks a tensor's type and shape and gives its data size. */
static int
tensor_bytes(llm_dtype type, uint32_t n_dims, const int64_t *ne, size_t *n_bytes)
{
    const kern_type_traits *tr = kern_type((int)type);
    if (!tr || n_dims == 0 || n_dims > GGUF_MAX_DIMS || ne[0] <= 0 || ne[0] % tr->blck != 0)
        return LLM_EINVAL;
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0 || (uint64_t)ne[d] > (UINT64_MAX >> 1) / n_elems)
            return LLM_EINVAL;
        n_elems *= (uint64_t)ne[d];
    }
    uint64_t n_blocks = n_elems / (uint64_t)tr->blck;
    if (n_blocks > SIZE_MAX / tr->size)
        return LLM_EINVAL;
    *n_bytes = (size_t)(n_blocks * tr->size);
    return LLM_OK;
}

/* append_tensor adds the table entry; data (n_bytes of it) is copied unless NULL. */
static int
append_tensor(gguf_writer *w, const char *name, llm_dtype type, uint32_t n_dims, const int64_t *ne,
              const void *data, size_t n_bytes)
{
    wr_tensor *ts = realloc(w->tensors, (w->n_tensors + 1) * sizeof(wr_tensor));
    if (!ts)
        return LLM_ENOMEM;
    w->tensors = ts;
    wr_tensor *t = &ts[w->n_tensors];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    if (data)
        t->data = malloc(n_bytes ? n_bytes : 1);
    if (!t->name || (data && !t->data)) {
        free(t->name);
        free(t->data);
        return LLM_ENOMEM;
    }
    if (data)
        memcpy(t->data, data, n_bytes);
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->n_bytes = n_bytes;
    w->n_tensors++;
    return LLM_OK;
}

int
gguf_writer_add_tensor(gguf_writer *w, const char *name, llm_dtype type, uint32_t n_dims,
                       const int64_t *ne, const void *data, size_t n_bytes)
{
    size_t want = 0;
    if (tensor_bytes(type, n_dims, ne, &want) != LLM_OK || want != n_bytes || !data)
        return LLM_EINVAL;
    return append_tensor(w, name, type, n_dims, ne, data, n_bytes);
}

int
gguf_writer_add_tensor_info(gguf_writer *w, const char *name, llm_dtype type, uint32_t n_dims,
                            const int64_t *ne)
{
    size_t n_bytes = 0;
    int rc = tensor_bytes(type, n_dims, ne, &n_bytes);
    return rc != LLM_OK ? rc : append_tensor(w, name, type, n_dims, ne, NULL, n_bytes);
}

static uint64_t
align_up(uint64_t x)
{
    return (x + GGUF_DEFAULT_ALIGNMENT - 1) / GGUF_DEFAULT_ALIGNMENT * GGUF_DEFAULT_ALIGNMENT;
}

/* header_size is the bytes before the data section: fixed header, metadata, table. */
static uint64_t
header_size(const gguf_writer *w)
{
    uint64_t pos = 24 + w->kv_len;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const wr_tensor *t = &w->tensors[i];
        pos += 8 + strlen(t->name) + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    return pos;
}

uint64_t
gguf_writer_size(const gguf_writer *w)
{
    uint64_t size = align_up(header_size(w));
    for (uint64_t i = 0; i < w->n_tensors; i++)
        size += align_up(w->tensors[i].n_bytes);
    return size;
}

static bool
write_all(FILE *fp, const void *p, size_t n)
{
    return n == 0 || fwrite(p, 1, n, fp) == n; // fwrite(NULL, 1, 0) is undefined
}

int
gguf_sink_write(gguf_sink *s, const void *p, size_t n)
{
    if (n > s->left)
        return LLM_ERANGE;
    if (!write_all(s->fp, p, n)) {
        if (!s->err_no)
            s->err_no = errno ? errno : EIO;
        return LLM_EIO;
    }
    s->left -= n;
    return LLM_OK;
}

/* write_file writes everything to fp. On failure it returns the error and, for an
 * I/O error, leaves errno-derived text in err. */
static int
write_file(const gguf_writer *w, FILE *fp, gguf_fill_fn fill, void *ctx, char *err, size_t err_len)
{
    static const uint8_t zeros[GGUF_DEFAULT_ALIGNMENT];
    uint32_t version = 3;
    uint64_t nt = w->n_tensors, nk = w->n_kv;
    gguf_sink sink = {.fp = fp};
    bool ok = write_all(fp, "GGUF", 4) && write_all(fp, &version, 4) && write_all(fp, &nt, 8) &&
              write_all(fp, &nk, 8) && write_all(fp, w->kv, w->kv_len);
    uint64_t off = 0, pos = header_size(w);
    for (uint64_t i = 0; i < w->n_tensors && ok; i++) {
        const wr_tensor *t = &w->tensors[i];
        uint64_t len = strlen(t->name), o = off;
        uint32_t type = (uint32_t)t->type;
        ok = write_all(fp, &len, 8) && write_all(fp, t->name, len) &&
             write_all(fp, &t->n_dims, 4) && write_all(fp, t->ne, 8 * (size_t)t->n_dims) &&
             write_all(fp, &type, 4) && write_all(fp, &o, 8);
        off = align_up(off + t->n_bytes);
    }
    ok = ok && write_all(fp, zeros, (size_t)(align_up(pos) - pos));
    for (uint64_t i = 0; i < w->n_tensors && ok; i++) {
        const wr_tensor *t = &w->tensors[i];
        if (t->data) {
            ok = write_all(fp, t->data, t->n_bytes);
        } else {
            sink.left = t->n_bytes;
            int rc = fill(ctx, i, &sink);
            if (rc == LLM_OK && sink.left != 0)
                rc = LLM_EINVAL;
            if (rc != LLM_OK && rc != LLM_EIO) {
                llm_errf(err, err_len, "tensor '%s': producing its data failed: %s", t->name,
                         llm_strerror(rc == LLM_ERANGE ? LLM_EINVAL : rc));
                return rc == LLM_ERANGE ? LLM_EINVAL : rc;
            }
            if (rc == LLM_EIO && sink.err_no)
                errno = sink.err_no;
            ok = rc == LLM_OK;
        }
        ok = ok && write_all(fp, zeros, (size_t)(align_up(t->n_bytes) - t->n_bytes));
    }
    if (!ok) {
        llm_errf(err, err_len, "write failed: %s", strerror(errno ? errno : EIO));
        return LLM_EIO;
    }
    return LLM_OK;
}

int
gguf_writer_write_stream(const gguf_writer *w, const char *path, gguf_fill_fn fill, void *ctx,
                         char *err, size_t err_len)
{
    if (!fill)
        for (uint64_t i = 0; i < w->n_tensors; i++)
            if (!w->tensors[i].data) {
                llm_errf(err, err_len, "tensor '%s' has no data", w->tensors[i].name);
                return LLM_EINVAL;
            }
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return LLM_ENOMEM;
    snprintf(tmp, n, "%s.tmp%d", path, (int)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        llm_errf(err, err_len, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return LLM_EIO;
    }
    errno = 0;
    int rc = write_file(w, fp, fill, ctx, err, err_len);
    // A full disk often shows only when the stdio buffer is flushed, and a delayed
    // allocation failure only at fsync; both must fail the write, not the rename.
    if (rc == LLM_OK && (fflush(fp) != 0 || fsync(fileno(fp)) != 0)) {
        llm_errf(err, err_len, "write failed: %s", strerror(errno));
        rc = LLM_EIO;
    }
    if (fclose(fp) != 0 && rc == LLM_OK) {
        llm_errf(err, err_len, "write failed: %s", strerror(errno));
        rc = LLM_EIO;
    }
    if (rc == LLM_OK && rename(tmp, path) != 0) {
        llm_errf(err, err_len, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        rc = LLM_EIO;
    }
    if (rc != LLM_OK)
        unlink(tmp);
    free(tmp);
    return rc;
}

int
gguf_writer_write(const gguf_writer *w, const char *path)
{
    int rc = gguf_writer_write_stream(w, path, NULL, NULL, NULL, 0);
    return rc == LLM_ENOMEM || rc == LLM_EINVAL ? rc : rc == LLM_OK ? LLM_OK : LLM_EIO;
}
