/*
 * quantize_main.c - llm-quantize: convert a GGUF model to another weight type.
 *   llm-quantize IN.gguf OUT.gguf TYPE
 *   (TYPE: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, F16, BF16, F32)
 * Exit codes: 0 ok; 1 runtime error (unreadable or malformed input, write failure, full
 * disk); 2 bad usage (missing arguments, unknown type, OUT is IN). Every error is one
 * line on stderr starting "llm-quantize: error:". OUT is written under a temporary
 * name beside it and renamed at the end, so a failed run leaves no OUT and no temporary
 * file behind (an interrupted one, killed by a signal, can leave OUT.tmp<pid>).
 */
#include "args.h"
#include "llm_err.h"
#include "log.h"
#include "quantize.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: llm-quantize [options] IN.gguf OUT.gguf TYPE\n"
            "  TYPE is one of %s.\n"
            "  Matrices are stored as TYPE (when a row length does not fit its blocks: Q5_0\n"
            "  for Q4_K, Q5_1 for Q5_K, else Q8_0; F32 if not a multiple of 32), norms and\n"
            "  small tensors as F32; metadata is copied.\n"
            "  --log-level L   debug|info|warn|error|off (default info; $LLM_LOG_LEVEL);\n"
            "                  debug prints one line per tensor\n",
            quant_type_list());
}

/* same_file: true when both paths name one existing file (hard or symbolic links). */
static bool
same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (strcmp(a, b) == 0)
        return true;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

int
main(int argc, char **argv)
{
    const char *pos[3];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--log-level")) {
            int lvl = i + 1 < argc ? log_parse_level(argv[++i]) : -1;
            if (lvl < 0)
                return args_die("llm-quantize", 2,
                                "--log-level must be debug, info, warn, error or off");
            log_set_level((log_level)lvl);
            continue;
        }
        if (a[0] == '-' && a[1] != 0)
            return args_die("llm-quantize", 2, "unknown option '%s' (see --help)", a);
        if (n_pos == 3)
            return args_die("llm-quantize", 2, "unexpected argument '%s' (see --help)", a);
        pos[n_pos++] = a;
    }
    if (n_pos < 3)
        return args_die("llm-quantize", 2, "usage: llm-quantize IN.gguf OUT.gguf TYPE (%s)",
                        quant_type_list());
    const char *in = pos[0], *out = pos[1], *type_name = pos[2];
    llm_dtype type;
    int rc = quant_type_parse(type_name, &type);
    if (rc == LLM_ENOTSUP)
        return args_die("llm-quantize", 2, "type %s cannot be quantized to yet", type_name);
    if (rc != LLM_OK)
        return args_die("llm-quantize", 2, "unknown type '%s'; valid types: %s", type_name,
                        quant_type_list());
    if (same_file(in, out))
        return args_die("llm-quantize", 2, "output %s is the input file; choose another path", out);

    char err[1024] = "";
    quant_stats st;
    if ((rc = quant_file(in, out, type, &st, err, sizeof(err))) != LLM_OK)
        return args_die("llm-quantize", 1, "%s", err);
    LOG_INFO("event=quantized in=%s out=%s type=%s tensors=%llu converted=%llu fallback=%llu "
             "in_bytes=%llu out_bytes=%llu ratio=%.3f seconds=%.2f",
             in, out, type_name, (unsigned long long)st.n_tensors,
             (unsigned long long)st.n_converted, (unsigned long long)st.n_fallback,
             (unsigned long long)st.in_bytes, (unsigned long long)st.out_bytes,
             st.in_bytes ? (double)st.out_bytes / (double)st.in_bytes : 0.0,
             (double)st.elapsed_ns / 1e9);
    return 0;
}
