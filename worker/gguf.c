/*
 * gguf.c - GGUF v2/v3 parser and validator over mmap.
 *
 * All parsing goes through one bounds-checked cursor (`rd`), so no read can leave the
 * buffer however the file lies. Counts that size allocations (kv_count, tensor_count,
 * array lengths) are checked against the bytes left before anything is allocated, so a
 * hostile header cannot ask for terabytes. Tensor extents are checked with overflow-safe
 * arithmetic against the data section. Strings are kept as (pointer, length) into the
 * mapping; nothing is copied but the index.
 */
#define _DEFAULT_SOURCE // madvise(MADV_DONTNEED): glibc's posix_madvise ignores DONTNEED
#include "gguf.h"

#include "llm_err.h"
#include "log.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_MAX_ELEMS (INT64_C(1) << 50) // per tensor; far above any real model

typedef struct {
    gguf_str key;
    gguf_type type;
    gguf_type arr_type; // arrays only
    uint64_t arr_n;     // arrays only
    const uint8_t *val; // scalar value, or first array element
    uint64_t *str_off;  // string arrays: offset of element i from val
} gguf_kv;

struct gguf_file {
    const uint8_t *base;
    uint64_t size;
    bool mapped;
    uint32_t version;
    uint64_t alignment;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t *kv_index; // open-addressing hashes of names: entry = index + 1, 0 = empty
    uint64_t kv_index_cap;
    uint64_t *tensor_index;
    uint64_t tensor_index_cap;
    uint64_t data_offset;
};

// A bounds-checked reader. `fail` latches the first error so callers can check once.
typedef struct {
    const uint8_t *p;
    uint64_t pos, size;
    char *err;
    size_t err_len;
    int rc;
} rd;

static void
rd_fail(rd *r, int rc, const char *fmt, ...)
{
    if (r->rc != LLM_OK)
        return;
    r->rc = rc;
    if (r->err && r->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->err_len, fmt, ap);
        va_end(ap);
    }
}

static const uint8_t *
rd_take(rd *r, uint64_t n, const char *what)
{
    if (r->rc != LLM_OK)
        return NULL;
    if (n > r->size - r->pos) {
        rd_fail(r, LLM_EINVAL, "truncated file: %s at offset %llu needs %llu bytes, %llu left",
                what, (unsigned long long)r->pos, (unsigned long long)n,
                (unsigned long long)(r->size - r->pos));
        return NULL;
    }
    const uint8_t *q = r->p + r->pos;
    r->pos += n;
    return q;
}

// Reads a little-endian unsigned integer of n_bytes (4 or 8); 0 once the reader failed.
static uint64_t
rd_uint(rd *r, unsigned n_bytes, const char *what)
{
    uint8_t b[8] = {0};
    const uint8_t *q = rd_take(r, n_bytes, what);
    if (q)
        memcpy(b, q, n_bytes);
    uint64_t v = 0;
    for (unsigned i = n_bytes; i-- > 0;)
        v = (v << 8) | b[i];
    return v;
}

static uint32_t
rd_u32(rd *r, const char *what)
{
    return (uint32_t)rd_uint(r, 4, what);
}

static uint64_t
rd_u64(rd *r, const char *what)
{
    return rd_uint(r, 8, what);
}

static gguf_str
rd_str(rd *r, const char *what)
{
    gguf_str s = {"", 0};
    uint64_t len = rd_u64(r, what);
    if (r->rc != LLM_OK)
        return s;
    if (len > r->size - r->pos) {
        rd_fail(r, LLM_EINVAL, "bad string length %llu for %s at offset %llu (%llu bytes left)",
                (unsigned long long)len, what, (unsigned long long)(r->pos - 8),
                (unsigned long long)(r->size - r->pos));
        return s;
    }
    s.ptr = (const char *)rd_take(r, len, what);
    s.len = len;
    return s;
}

// Byte size of a fixed-size value type; 0 for strings and arrays.
static uint64_t
type_size(gguf_type t)
{
    static const uint8_t sizes[GGUF_TYPE_COUNT] = {
        [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,    [GGUF_TYPE_UINT16] = 2,
        [GGUF_TYPE_INT16] = 2,   [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4,
        [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,    [GGUF_TYPE_UINT64] = 8,
        [GGUF_TYPE_INT64] = 8,   [GGUF_TYPE_FLOAT64] = 8,
    };
    return (unsigned)t < GGUF_TYPE_COUNT ? sizes[t] : 0;
}

static uint64_t
str_hash(const char *s, uint64_t len)
{
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (uint64_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

bool
gguf_str_eq(gguf_str s, const char *cstr)
{
    size_t n = strlen(cstr);
    return s.len == n && memcmp(s.ptr, cstr, n) == 0;
}

static bool
str_eq2(gguf_str a, gguf_str b)
{
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

static void
parse_kv(gguf_file *f, rd *r, uint64_t i)
{
    gguf_kv *kv = &f->kv[i];
    kv->key = rd_str(r, "metadata key");
    kv->type = (gguf_type)rd_u32(r, "metadata type");
    if (r->rc != LLM_OK)
        return;
    if (kv->key.len == 0)
        rd_fail(r, LLM_EINVAL, "metadata key %llu is empty", (unsigned long long)i);
    if (kv->type == GGUF_TYPE_ARRAY) {
        kv->arr_type = (gguf_type)rd_u32(r, "array type");
        kv->arr_n = rd_u64(r, "array length");
        if (r->rc != LLM_OK)
            return;
        kv->val = r->p + r->pos;
        uint64_t left = r->size - r->pos;
        if (kv->arr_type == GGUF_TYPE_STRING) {
            if (kv->arr_n > left / 8) {
                rd_fail(r, LLM_EINVAL, "metadata '%.*s': string array length %llu exceeds file",
                        (int)kv->key.len, kv->key.ptr, (unsigned long long)kv->arr_n);
                return;
            }
            kv->str_off = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof(uint64_t));
            if (!kv->str_off) {
                rd_fail(r, LLM_ENOMEM, "out of memory indexing metadata '%.*s'", (int)kv->key.len,
                        kv->key.ptr);
                return;
            }
            for (uint64_t j = 0; j < kv->arr_n && r->rc == LLM_OK; j++) {
                kv->str_off[j] = (uint64_t)(r->p + r->pos - kv->val);
                rd_str(r, "array string");
            }
        } else {
            uint64_t es = type_size(kv->arr_type);
            if (es == 0) {
                rd_fail(r, LLM_EINVAL, "metadata '%.*s': unsupported array element type %u",
                        (int)kv->key.len, kv->key.ptr, (unsigned)kv->arr_type);
                return;
            }
            if (kv->arr_n > left / es) {
                rd_fail(r, LLM_EINVAL, "metadata '%.*s': array length %llu exceeds file",
                        (int)kv->key.len, kv->key.ptr, (unsigned long long)kv->arr_n);
                return;
            }
            rd_take(r, kv->arr_n * es, "array data");
        }
    } else if (kv->type == GGUF_TYPE_STRING) {
        kv->val = r->p + r->pos;
        rd_str(r, "metadata string");
    } else {
        uint64_t es = type_size(kv->type);
        if (es == 0) {
            rd_fail(r, LLM_EINVAL, "metadata '%.*s': unknown value type %u", (int)kv->key.len,
                    kv->key.ptr, (unsigned)kv->type);
            return;
        }
        kv->val = rd_take(r, es, "metadata value");
        if (kv->type == GGUF_TYPE_BOOL && kv->val && *kv->val > 1)
            rd_fail(r, LLM_EINVAL, "metadata '%.*s': bool value %u", (int)kv->key.len, kv->key.ptr,
                    (unsigned)*kv->val);
    }
}

static void
parse_tensor(gguf_file *f, rd *r, uint64_t i)
{
    gguf_tensor *t = &f->tensors[i];
    t->name = rd_str(r, "tensor name");
    t->n_dims = rd_u32(r, "tensor n_dims");
    if (r->rc != LLM_OK)
        return;
    if (t->name.len == 0 || t->name.len > 256) {
        rd_fail(r, LLM_EINVAL, "tensor %llu: name length %llu (must be 1..256)",
                (unsigned long long)i, (unsigned long long)t->name.len);
        return;
    }
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS) {
        rd_fail(r, LLM_EINVAL, "tensor '%.*s': %u dimensions (must be 1..%d)", (int)t->name.len,
                t->name.ptr, t->n_dims, GGUF_MAX_DIMS);
        return;
    }
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t ne = d < t->n_dims ? rd_u64(r, "tensor dimension") : 1;
        if (r->rc != LLM_OK)
            return;
        if (ne == 0 || ne > (uint64_t)GGUF_MAX_ELEMS || n_elems > (uint64_t)GGUF_MAX_ELEMS / ne) {
            rd_fail(r, LLM_EINVAL, "tensor '%.*s': bad dimension %u = %llu", (int)t->name.len,
                    t->name.ptr, d, (unsigned long long)ne);
            return;
        }
        t->ne[d] = (int64_t)ne;
        n_elems *= ne;
    }
    uint32_t type = rd_u32(r, "tensor type");
    t->offset = rd_u64(r, "tensor offset");
    if (r->rc != LLM_OK)
        return;
    const kern_type_traits *tr = kern_type((int)type);
    if (!tr) {
        rd_fail(r, LLM_ENOTSUP, "tensor '%.*s': unknown tensor type %u", (int)t->name.len,
                t->name.ptr, type);
        return;
    }
    if (!kern_type_supported((int)type)) {
        rd_fail(r, LLM_ENOTSUP, "tensor '%.*s': tensor type %s is not supported", (int)t->name.len,
                t->name.ptr, tr->name);
        return;
    }
    t->type = (llm_dtype)type;
    if (t->ne[0] % tr->blck != 0) {
        rd_fail(r, LLM_EINVAL, "tensor '%.*s': row length %lld is not a multiple of %s block %d",
                (int)t->name.len, t->name.ptr, (long long)t->ne[0], tr->name, tr->blck);
        return;
    }
    t->n_bytes = n_elems / (uint64_t)tr->blck * tr->size; // < 2^50 * 292: no overflow
}

static gguf_str
name_at(const void *base, size_t stride, size_t name_off, uint64_t i)
{
    gguf_str s;
    memcpy(&s, (const char *)base + i * stride + name_off, sizeof(s));
    return s;
}

/* build_name_index hashes n names (each a gguf_str at base + i*stride + name_off) into
 * an open-addressing table twice their number. LLM_EINVAL with *dup set on a repeated
 * name: lookups by name would be ambiguous, so a file with one is malformed. */
static int
build_name_index(const void *base, size_t stride, size_t name_off, uint64_t n, uint64_t **out,
                 uint64_t *out_cap, uint64_t *dup)
{
    uint64_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    uint64_t *index = calloc(cap, sizeof(uint64_t));
    if (!index)
        return LLM_ENOMEM;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str name = name_at(base, stride, name_off, i);
        uint64_t h = str_hash(name.ptr, name.len) & (cap - 1);
        while (index[h]) {
            if (str_eq2(name_at(base, stride, name_off, index[h] - 1), name)) {
                free(index);
                *dup = i;
                return LLM_EINVAL;
            }
            h = (h + 1) & (cap - 1);
        }
        index[h] = i + 1;
    }
    *out = index;
    *out_cap = cap;
    return LLM_OK;
}

static int64_t
index_lookup(const uint64_t *index, uint64_t cap, const void *base, size_t stride, size_t name_off,
             const char *name)
{
    if (!index)
        return -1;
    uint64_t len = strlen(name);
    uint64_t h = str_hash(name, len) & (cap - 1);
    while (index[h]) {
        gguf_str s = name_at(base, stride, name_off, index[h] - 1);
        if (s.len == len && memcmp(s.ptr, name, len) == 0)
            return (int64_t)(index[h] - 1);
        h = (h + 1) & (cap - 1);
    }
    return -1;
}

static void
parse_header(gguf_file *f, rd *r)
{
    const uint8_t *magic = rd_take(r, 4, "magic");
    if (!magic)
        return;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0) {
        rd_fail(r, LLM_EINVAL, "not a GGUF file (bad magic %02x %02x %02x %02x)", magic[0],
                magic[1], magic[2], magic[3]);
        return;
    }
    f->version = rd_u32(r, "version");
    if (r->rc != LLM_OK)
        return;
    if (f->version != 2 && f->version != 3) {
        rd_fail(r, LLM_ENOTSUP, "unsupported GGUF version %u (2 and 3 are supported)", f->version);
        return;
    }
    f->n_tensors = rd_u64(r, "tensor count");
    f->n_kv = rd_u64(r, "metadata count");
    if (r->rc != LLM_OK)
        return;
    // Smallest encodings: a kv is >= 13 bytes (key length, type, 1-byte value), a tensor
    // info >= 32 (name length, n_dims, one dim, type, offset).
    uint64_t left = r->size - r->pos;
    if (f->n_kv > left / 13) {
        rd_fail(r, LLM_EINVAL, "metadata count %llu cannot fit in the file",
                (unsigned long long)f->n_kv);
        return;
    }
    if (f->n_tensors > left / 32) {
        rd_fail(r, LLM_EINVAL, "tensor count %llu cannot fit in the file",
                (unsigned long long)f->n_tensors);
        return;
    }
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof(gguf_kv));
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(gguf_tensor));
    if (!f->kv || !f->tensors) {
        rd_fail(r, LLM_ENOMEM, "out of memory for %llu tensors", (unsigned long long)f->n_tensors);
        return;
    }
    for (uint64_t i = 0; i < f->n_kv && r->rc == LLM_OK; i++)
        parse_kv(f, r, i);
    if (r->rc != LLM_OK)
        return;
    uint64_t dup = 0;
    int rc = build_name_index(f->kv, sizeof(gguf_kv), offsetof(gguf_kv, key), f->n_kv, &f->kv_index,
                              &f->kv_index_cap, &dup);
    if (rc != LLM_OK) {
        rd_fail(r, rc, "duplicate metadata key '%.*s'", (int)f->kv[dup].key.len,
                f->kv[dup].key.ptr);
        return;
    }
    for (uint64_t i = 0; i < f->n_tensors && r->rc == LLM_OK; i++)
        parse_tensor(f, r, i);
}

static void
place_tensors(gguf_file *f, rd *r)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = gguf_find_key(f, "general.alignment");
    if (ai >= 0) {
        uint32_t a = 0;
        if (gguf_get_u32(f, "general.alignment", &a) != LLM_OK || a == 0 || (a & (a - 1)) ||
            a > (1u << 20)) {
            rd_fail(r, LLM_EINVAL, "general.alignment must be a power of two up to 1 MiB");
            return;
        }
        f->alignment = a;
    }
    uint64_t data = (r->pos + f->alignment - 1) / f->alignment * f->alignment;
    if (data > f->size) {
        if (f->n_tensors > 0)
            rd_fail(r, LLM_EINVAL, "truncated file: data section starts at %llu, file is %llu",
                    (unsigned long long)data, (unsigned long long)f->size);
        data = f->size;
    }
    f->data_offset = data;
    uint64_t data_size = f->size - data;
    for (uint64_t i = 0; i < f->n_tensors && r->rc == LLM_OK; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0) {
            rd_fail(r, LLM_EINVAL, "tensor '%.*s': offset %llu is not aligned to %llu",
                    (int)t->name.len, t->name.ptr, (unsigned long long)t->offset,
                    (unsigned long long)f->alignment);
        } else if (t->offset > data_size || t->n_bytes > data_size - t->offset) {
            rd_fail(r, LLM_EINVAL,
                    "tensor '%.*s': data [%llu, +%llu) is past the end of the file "
                    "(%llu data bytes)",
                    (int)t->name.len, t->name.ptr, (unsigned long long)t->offset,
                    (unsigned long long)t->n_bytes, (unsigned long long)data_size);
        } else {
            t->data = f->base + data + t->offset;
        }
    }
    if (r->rc != LLM_OK)
        return;
    uint64_t dup = 0;
    int rc = build_name_index(f->tensors, sizeof(gguf_tensor), offsetof(gguf_tensor, name),
                              f->n_tensors, &f->tensor_index, &f->tensor_index_cap, &dup);
    if (rc != LLM_OK)
        rd_fail(r, rc, "duplicate tensor name '%.*s'", (int)f->tensors[dup].name.len,
                f->tensors[dup].name.ptr);
}

static int
gguf_parse(gguf_file *f, char *err, size_t err_len)
{
    rd r = {.p = f->base, .pos = 0, .size = f->size, .err = err, .err_len = err_len};
    parse_header(f, &r);
    if (r.rc == LLM_OK)
        place_tensors(f, &r);
    return r.rc;
}

int
gguf_open_memory(const void *buf, size_t len, gguf_file **out, char *err, size_t err_len)
{
    gguf_file *f = calloc(1, sizeof(*f));
    if (!f) {
        llm_errf(err, err_len, "out of memory");
        return LLM_ENOMEM;
    }
    f->base = buf;
    f->size = len;
    int rc = gguf_parse(f, err, err_len);
    if (rc != LLM_OK) {
        gguf_close(f);
        return rc;
    }
    *out = f;
    return LLM_OK;
}

int
gguf_open(const char *path, const gguf_open_opts *opts, gguf_file **out, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        llm_errf(err, err_len, "cannot open: %s", strerror(errno));
        return LLM_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        llm_errf(err, err_len, "not a regular file");
        close(fd);
        return LLM_EIO;
    }
    if (st.st_size < 8) {
        llm_errf(err, err_len, "truncated file: %lld bytes is too short for a GGUF header",
                 (long long)st.st_size);
        close(fd);
        return LLM_EINVAL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); // the mapping keeps the file open
    if (map == MAP_FAILED) {
        llm_errf(err, err_len, "cannot mmap: %s", strerror(errno));
        return LLM_EIO;
    }
    gguf_file *f = NULL;
    int rc = gguf_open_memory(map, (size_t)st.st_size, &f, err, err_len);
    if (rc != LLM_OK) {
        munmap(map, (size_t)st.st_size);
        return rc;
    }
    f->mapped = true;
    if (opts && opts->willneed)
        posix_madvise(map, (size_t)st.st_size, POSIX_MADV_WILLNEED);
    if (opts && opts->mlock && mlock(map, (size_t)st.st_size) != 0)
        LOG_WARN("event=gguf_mlock_failed path=%s err=\"%s\"", path, strerror(errno));
    *out = f;
    return LLM_OK;
}

void
gguf_release(const gguf_file *f, const void *p, size_t n)
{
    if (!f || !f->mapped || n == 0)
        return;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p, b = a + n, ps = page > 0 ? (uintptr_t)page : 4096;
    uintptr_t lo = (a + ps - 1) / ps * ps, hi = b / ps * ps; // whole pages inside only
    if (a < (uintptr_t)f->base || b > (uintptr_t)f->base + f->size || lo >= hi)
        return;
    madvise((void *)lo, hi - lo, MADV_DONTNEED); // a failure (mlocked pages) only costs RSS
}

void
gguf_close(gguf_file *f)
{
    if (!f)
        return;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++)
            free(f->kv[i].str_off);
    free(f->kv);
    free(f->tensors);
    free(f->kv_index);
    free(f->tensor_index);
    if (f->mapped)
        munmap((void *)f->base, f->size);
    free(f);
}

uint32_t
gguf_version(const gguf_file *f)
{
    return f->version;
}

uint64_t
gguf_file_size(const gguf_file *f)
{
    return f->size;
}

uint64_t
gguf_alignment(const gguf_file *f)
{
    return f->alignment;
}

// --- metadata ------------------------------------------------------------------------

uint64_t
gguf_kv_count(const gguf_file *f)
{
    return f->n_kv;
}

int64_t
gguf_find_key(const gguf_file *f, const char *key)
{
    return index_lookup(f->kv_index, f->kv_index_cap, f->kv, sizeof(gguf_kv),
                        offsetof(gguf_kv, key), key);
}

gguf_str
gguf_kv_key(const gguf_file *f, uint64_t i)
{
    return f->kv[i].key;
}

gguf_type
gguf_kv_type(const gguf_file *f, uint64_t i)
{
    return f->kv[i].type;
}

gguf_type
gguf_kv_arr_type(const gguf_file *f, uint64_t i)
{
    return f->kv[i].type == GGUF_TYPE_ARRAY ? f->kv[i].arr_type : GGUF_TYPE_COUNT;
}

uint64_t
gguf_kv_arr_len(const gguf_file *f, uint64_t i)
{
    return f->kv[i].type == GGUF_TYPE_ARRAY ? f->kv[i].arr_n : 0;
}

/* read_num converts one numeric value at p of type t. Integers go through int64 or
 * uint64 exactly; *is_int says which kind it was. */
static bool
read_num(gguf_type t, const uint8_t *p, int64_t *iv, uint64_t *uv, double *dv, int *kind)
{
    // kind: 0 signed, 1 unsigned, 2 float
    switch (t) {
    case GGUF_TYPE_UINT8:
        *uv = p[0];
        *kind = 1;
        return true;
    case GGUF_TYPE_INT8:
        *iv = (int8_t)p[0];
        *kind = 0;
        return true;
    case GGUF_TYPE_BOOL:
        *uv = p[0];
        *kind = 1;
        return true;
    case GGUF_TYPE_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        *uv = v;
        *kind = 1;
        return true;
    }
    case GGUF_TYPE_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        *iv = v;
        *kind = 0;
        return true;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t v;
        memcpy(&v, p, 4);
        *uv = v;
        *kind = 1;
        return true;
    }
    case GGUF_TYPE_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        *iv = v;
        *kind = 0;
        return true;
    }
    case GGUF_TYPE_UINT64:
        memcpy(uv, p, 8);
        *kind = 1;
        return true;
    case GGUF_TYPE_INT64:
        memcpy(iv, p, 8);
        *kind = 0;
        return true;
    case GGUF_TYPE_FLOAT32: {
        float v;
        memcpy(&v, p, 4);
        *dv = v;
        *kind = 2;
        return true;
    }
    case GGUF_TYPE_FLOAT64:
        memcpy(dv, p, 8);
        *kind = 2;
        return true;
    default: return false;
    }
}

static int
get_int(gguf_type t, const uint8_t *p, int64_t lo, uint64_t hi, int64_t *out)
{
    int64_t iv = 0;
    uint64_t uv = 0;
    double dv = 0;
    int kind = 0;
    if (t == GGUF_TYPE_BOOL || !read_num(t, p, &iv, &uv, &dv, &kind) || kind == 2)
        return LLM_EINVAL;
    if (kind == 1) {
        if (uv > hi)
            return LLM_EINVAL;
        *out = (int64_t)uv;
    } else {
        if (iv < lo || (iv > 0 && (uint64_t)iv > hi))
            return LLM_EINVAL;
        *out = iv;
    }
    return LLM_OK;
}

static const gguf_kv *
find_kv(const gguf_file *f, const char *key)
{
    int64_t i = gguf_find_key(f, key);
    return i < 0 ? NULL : &f->kv[i];
}

int
gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out)
{
    const gguf_kv *kv = find_kv(f, key);
    int64_t v;
    if (!kv)
        return LLM_ENOENT;
    if (get_int(kv->type, kv->val, 0, UINT32_MAX, &v) != LLM_OK)
        return LLM_EINVAL;
    *out = (uint32_t)v;
    return LLM_OK;
}

int
gguf_get_i64(const gguf_file *f, const char *key, int64_t *out)
{
    const gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return LLM_ENOENT;
    return get_int(kv->type, kv->val, INT64_MIN, INT64_MAX, out);
}

int
gguf_get_f32(const gguf_file *f, const char *key, float *out)
{
    const gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return LLM_ENOENT;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        memcpy(out, kv->val, 4);
    } else if (kv->type == GGUF_TYPE_FLOAT64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
    } else {
        return LLM_EINVAL;
    }
    return LLM_OK;
}

int
gguf_get_bool(const gguf_file *f, const char *key, bool *out)
{
    const gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return LLM_ENOENT;
    if (kv->type != GGUF_TYPE_BOOL)
        return LLM_EINVAL;
    *out = kv->val[0] != 0;
    return LLM_OK;
}

static gguf_str
str_at(const uint8_t *p)
{
    gguf_str s;
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

int
gguf_get_str(const gguf_file *f, const char *key, gguf_str *out)
{
    const gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return LLM_ENOENT;
    if (kv->type != GGUF_TYPE_STRING)
        return LLM_EINVAL;
    *out = str_at(kv->val);
    return LLM_OK;
}

int
gguf_get_arr(const gguf_file *f, const char *key, gguf_type *elem_type, uint64_t *n)
{
    const gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return LLM_ENOENT;
    if (kv->type != GGUF_TYPE_ARRAY)
        return LLM_EINVAL;
    *elem_type = kv->arr_type;
    *n = kv->arr_n;
    return LLM_OK;
}

int
gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, gguf_str *out)
{
    const gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return LLM_ENOENT;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return LLM_EINVAL;
    if (i >= kv->arr_n)
        return LLM_ERANGE;
    *out = str_at(kv->val + kv->str_off[i]);
    return LLM_OK;
}

static int
numeric_arr(const gguf_file *f, const char *key, uint64_t n, const gguf_kv **out)
{
    const gguf_kv *kv = find_kv(f, key);
    if (!kv)
        return LLM_ENOENT;
    if (kv->type != GGUF_TYPE_ARRAY || type_size(kv->arr_type) == 0)
        return LLM_EINVAL;
    if (n > kv->arr_n)
        return LLM_ERANGE;
    *out = kv;
    return LLM_OK;
}

int
gguf_get_arr_i32(const gguf_file *f, const char *key, int32_t *out, uint64_t n)
{
    const gguf_kv *kv;
    int rc = numeric_arr(f, key, n, &kv);
    if (rc != LLM_OK)
        return rc;
    uint64_t es = type_size(kv->arr_type);
    for (uint64_t i = 0; i < n; i++) {
        int64_t v;
        if (get_int(kv->arr_type, kv->val + i * es, INT32_MIN, INT32_MAX, &v) != LLM_OK)
            return LLM_EINVAL;
        out[i] = (int32_t)v;
    }
    return LLM_OK;
}

int
gguf_get_arr_f32(const gguf_file *f, const char *key, float *out, uint64_t n)
{
    const gguf_kv *kv;
    int rc = numeric_arr(f, key, n, &kv);
    if (rc != LLM_OK)
        return rc;
    uint64_t es = type_size(kv->arr_type);
    for (uint64_t i = 0; i < n; i++) {
        int64_t iv = 0;
        uint64_t uv = 0;
        double dv = 0;
        int kind = 0;
        read_num(kv->arr_type, kv->val + i * es, &iv, &uv, &dv, &kind);
        out[i] = kind == 2 ? (float)dv : kind == 1 ? (float)uv : (float)iv;
    }
    return LLM_OK;
}

// --- tensors -------------------------------------------------------------------------

uint64_t
gguf_tensor_count(const gguf_file *f)
{
    return f->n_tensors;
}

const gguf_tensor *
gguf_tensor_at(const gguf_file *f, uint64_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_tensor *
gguf_find_tensor(const gguf_file *f, const char *name)
{
    int64_t i = index_lookup(f->tensor_index, f->tensor_index_cap, f->tensors, sizeof(gguf_tensor),
                             offsetof(gguf_tensor, name), name);
    return i < 0 ? NULL : &f->tensors[i];
}
