/*
 * gguf_tool.c - llm-gguf: inspect GGUF files and make test models.
 *   llm-gguf info FILE                   metadata and tensor table
 *   llm-gguf dequant FILE TENSOR OUT     tensor decoded to float32 LE, GGUF element order
 *   llm-gguf tiny OUT --type T [--seed S] [--untied]   a tiny random llama model
 * Exit codes: 0 ok, 1 runtime error, 2 bad usage; errors are one "llm-gguf: error:" line.
 */
#include "args.h"
#include "gguf.h"
#include "kern.h"
#include "llm_err.h"
#include "tiny_model.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *
type_name(gguf_type t)
{
    static const char *const names[GGUF_TYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
    return (unsigned)t < GGUF_TYPE_COUNT ? names[t] : "?";
}

static void
print_value(const gguf_file *f, uint64_t i)
{
    gguf_str key = gguf_kv_key(f, i);
    char k[256];
    snprintf(k, sizeof(k), "%.*s", (int)(key.len > 200 ? 200 : key.len), key.ptr);
    gguf_type t = gguf_kv_type(f, i);
    gguf_str s;
    int64_t iv;
    float fv;
    bool bv;
    if (t == GGUF_TYPE_ARRAY) {
        printf("[%s; %" PRIu64 "]", type_name(gguf_kv_arr_type(f, i)), gguf_kv_arr_len(f, i));
    } else if (t == GGUF_TYPE_STRING && gguf_get_str(f, k, &s) == LLM_OK) {
        int n = s.len > 60 ? 60 : (int)s.len;
        printf("\"");
        for (int j = 0; j < n; j++)
            putchar(s.ptr[j] == '\n' ? ' ' : s.ptr[j]);
        printf("\"%s", s.len > 60 ? "..." : "");
    } else if (gguf_get_i64(f, k, &iv) == LLM_OK) {
        printf("%" PRId64, iv);
    } else if (gguf_get_f32(f, k, &fv) == LLM_OK) {
        printf("%g", (double)fv);
    } else if (gguf_get_bool(f, k, &bv) == LLM_OK) {
        printf("%s", bv ? "true" : "false");
    } else {
        printf("(%s)", type_name(t));
    }
}

static int
cmd_info(const char *path)
{
    char err[512];
    gguf_file *f = NULL;
    if (gguf_open(path, NULL, &f, err, sizeof(err)) != LLM_OK)
        return args_die("llm-gguf", 1, "%s: %s", path, err);
    printf("version %u, %" PRIu64 " metadata keys, %" PRIu64 " tensors, alignment %" PRIu64 "\n",
           gguf_version(f), gguf_kv_count(f), gguf_tensor_count(f), gguf_alignment(f));
    for (uint64_t i = 0; i < gguf_kv_count(f); i++) {
        gguf_str key = gguf_kv_key(f, i);
        printf("  %.*s = ", (int)(key.len > 200 ? 200 : key.len), key.ptr);
        print_value(f, i);
        putchar('\n');
    }
    for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        printf("  %-32.*s %-5s [%" PRId64, (int)t->name.len, t->name.ptr,
               kern_type_name((int)t->type), t->ne[0]);
        for (uint32_t d = 1; d < t->n_dims; d++)
            printf(", %" PRId64, t->ne[d]);
        printf("] %" PRIu64 " bytes\n", t->n_bytes);
    }
    gguf_close(f);
    return 0;
}

static int
cmd_dequant(const char *path, const char *name, const char *out)
{
    char err[512];
    gguf_file *f = NULL;
    if (gguf_open(path, NULL, &f, err, sizeof(err)) != LLM_OK)
        return args_die("llm-gguf", 1, "%s: %s", path, err);
    int code = 0;
    const gguf_tensor *t = gguf_find_tensor(f, name);
    FILE *fp = NULL;
    float *row = NULL;
    if (!t) {
        code = args_die("llm-gguf", 1, "%s: no tensor named '%s'", path, name);
        goto done;
    }
    kern_mat m = {t->type,
                  t->data,
                  t->ne[0],
                  (int64_t)(t->n_bytes / kern_row_size(t->type, t->ne[0])),
                  kern_row_size(t->type, t->ne[0]),
                  false};
    row = malloc(sizeof(float) * (size_t)m.n_cols);
    fp = fopen(out, "wb");
    if (!row || !fp) {
        code = args_die("llm-gguf", 1, "cannot write %s", out);
        goto done;
    }
    for (int64_t r = 0; r < m.n_rows; r++) {
        kern_get_row(&m, r, row);
        if (fwrite(row, sizeof(float), (size_t)m.n_cols, fp) != (size_t)m.n_cols) {
            code = args_die("llm-gguf", 1, "writing %s failed", out);
            goto done;
        }
    }
done:
    if (fp && fclose(fp) != 0 && code == 0)
        code = args_die("llm-gguf", 1, "writing %s failed", out);
    free(row);
    gguf_close(f);
    return code;
}

static int
cmd_tiny(int argc, char **argv)
{
    tiny_model_opts o = {.type = LLM_DTYPE_F32, .seed = 1};
    const char *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--untied")) {
            o.untied = true;
        } else if (!strcmp(argv[i], "--type") && i + 1 < argc) {
            const char *tn = argv[++i];
            int t = -1;
            for (int k = 0; k < LLM_DTYPE_COUNT; k++)
                if (kern_type(k) && !strcmp(kern_type_name(k), tn))
                    t = k;
            if (t < 0 || !kern_type_supported(t))
                return args_die("llm-gguf", 2,
                                "--type must be F32, F16, BF16, Q8_0, Q4_0 or Q4_1, got '%s'", tn);
            o.type = (llm_dtype)t;
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            if (args_u64(argv[++i], &o.seed) != LLM_OK)
                return args_die("llm-gguf", 2, "--seed must be an unsigned integer");
        } else if (!out && argv[i][0] != '-') {
            out = argv[i];
        } else {
            return args_die("llm-gguf", 2, "tiny: unexpected argument '%s'", argv[i]);
        }
    }
    if (!out)
        return args_die("llm-gguf", 2, "tiny: missing output path");
    int rc = tiny_model_write(out, &o);
    if (rc != LLM_OK)
        return args_die("llm-gguf", 1, "writing %s: %s", out, llm_strerror(rc));
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "info"))
        return cmd_info(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "dequant"))
        return cmd_dequant(argv[2], argv[3], argv[4]);
    if (argc >= 3 && !strcmp(argv[1], "tiny"))
        return cmd_tiny(argc - 2, argv + 2);
    fprintf(stderr, "usage: llm-gguf info FILE\n"
                    "       llm-gguf dequant FILE TENSOR OUT.f32\n"
                    "       llm-gguf tiny OUT.gguf --type T [--seed S] [--untied]\n");
    return 2;
}
