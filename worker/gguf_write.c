/*
 * gguf_write.c - in-memory GGUF v3 builder. Metadata is serialized into one growing
 * byte buffer as it is added; tensors are kept as copies and laid out at write time.
 * Small by design: the files it makes are test models and quantizer output, and the
 * quantizer will stream tensors itself rather than hold a whole model here.
 */
#include "gguf_write.h"

#include "llm_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    llm_dtype type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    void *data;
    size_t n_bytes;
} wr_tensor;

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

int
gguf_writer_add_tensor(gguf_writer *w, const char *name, llm_dtype type, uint32_t n_dims,
                       const int64_t *ne, const void *data, size_t n_bytes)
{
    const kern_type_traits *tr = kern_type((int)type);
    if (!tr || n_dims == 0 || n_dims > GGUF_MAX_DIMS || ne[0] % tr->blck != 0)
        return LLM_EINVAL;
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0)
            return LLM_EINVAL;
        n_elems *= (uint64_t)ne[d];
    }
    if (n_elems / (uint64_t)tr->blck * tr->size != n_bytes)
        return LLM_EINVAL;
    wr_tensor *ts = realloc(w->tensors, (w->n_tensors + 1) * sizeof(wr_tensor));
    if (!ts)
        return LLM_ENOMEM;
    w->tensors = ts;
    wr_tensor *t = &ts[w->n_tensors];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    t->data = malloc(n_bytes ? n_bytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return LLM_ENOMEM;
    }
    memcpy(t->data, data, n_bytes);
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->n_bytes = n_bytes;
    w->n_tensors++;
    return LLM_OK;
}

static size_t
align_up(size_t x)
{
    return (x + GGUF_DEFAULT_ALIGNMENT - 1) / GGUF_DEFAULT_ALIGNMENT * GGUF_DEFAULT_ALIGNMENT;
}

static bool
write_all(FILE *fp, const void *p, size_t n)
{
    return n == 0 || fwrite(p, 1, n, fp) == n; // fwrite(NULL, 1, 0) is undefined
}

static bool
write_file(const gguf_writer *w, FILE *fp)
{
    static const uint8_t zeros[GGUF_DEFAULT_ALIGNMENT];
    uint32_t version = 3;
    uint64_t nt = w->n_tensors, nk = w->n_kv;
    bool ok = write_all(fp, "GGUF", 4) && write_all(fp, &version, 4) && write_all(fp, &nt, 8) &&
              write_all(fp, &nk, 8) && write_all(fp, w->kv, w->kv_len);
    size_t pos = 24 + w->kv_len, off = 0;
    for (uint64_t i = 0; i < w->n_tensors && ok; i++) {
        const wr_tensor *t = &w->tensors[i];
        uint64_t len = strlen(t->name), o = off;
        uint32_t type = (uint32_t)t->type;
        ok = write_all(fp, &len, 8) && write_all(fp, t->name, len) &&
             write_all(fp, &t->n_dims, 4) && write_all(fp, t->ne, 8 * (size_t)t->n_dims) &&
             write_all(fp, &type, 4) && write_all(fp, &o, 8);
        pos += 8 + len + 4 + 8 * (size_t)t->n_dims + 4 + 8;
        off = align_up(off + t->n_bytes);
    }
    ok = ok && write_all(fp, zeros, align_up(pos) - pos);
    off = 0;
    for (uint64_t i = 0; i < w->n_tensors && ok; i++) {
        const wr_tensor *t = &w->tensors[i];
        ok = write_all(fp, t->data, t->n_bytes) &&
             write_all(fp, zeros, align_up(t->n_bytes) - t->n_bytes);
    }
    return ok;
}

int
gguf_writer_write(const gguf_writer *w, const char *path)
{
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp)
        return LLM_ENOMEM;
    snprintf(tmp, n, "%s.tmp%d", path, (int)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        free(tmp);
        return LLM_EIO;
    }
    bool ok = write_file(w, fp);
    ok = (fflush(fp) == 0) && ok;
    ok = (fclose(fp) == 0) && ok;
    if (ok)
        ok = rename(tmp, path) == 0;
    if (!ok)
        unlink(tmp);
    free(tmp);
    return ok ? LLM_OK : LLM_EIO;
}
