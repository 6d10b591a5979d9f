/*
 * tok_dump.c - print our tokenizer's ids for a list of strings, for test oracles.
 *
 *   tok_dump MODEL.gguf [--special] < INPUT > OUTPUT
 *
 * INPUT has one string per line, hex-encoded (two hex digits per byte, either case; an
 * empty line is the empty string), so that any bytes, newlines and NULs included, get
 * through. For each input line OUTPUT has one line: the token ids separated by single
 * spaces, a tab, and the hex of tok_decode(ids) (render_special off). --special sets
 * parse_special for the encoder. A summary goes to stderr:
 *   tok_dump: lines=N tokens=M bytes=B encode_ms=T
 * where T is the time spent in tok_encode alone.
 * Exit codes: 0 ok, 1 runtime error, 2 bad usage or malformed input.
 * What it does not do: compare anything (tests/integration/test_tokenizer_oracle.py does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "llm_err.h"
#include "llm_time.h"
#include "tok.h"

static int
hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* unhex decodes line[0..n) in place; returns the byte count or -1 if malformed. */
static long
unhex(char *line, size_t n)
{
    if (n % 2 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_val((unsigned char)line[i]), lo = hex_val((unsigned char)line[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        line[i / 2] = (char)(hi * 16 + lo);
    }
    return (long)(n / 2);
}

static void
print_hex(const char *s, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        putchar(digits[c >> 4]);
        putchar(digits[c & 15]);
    }
}

/* dump_line encodes one string, prints its ids and decoded hex, and adds the time. */
static int
dump_line(const tok_vocab *v, const char *s, size_t n, bool special, uint64_t *ns, size_t *n_tokens)
{
    int32_t *ids = NULL;
    size_t n_ids = 0, dec_len = 0;
    char *dec = NULL;
    uint64_t t0 = llm_now_ns();
    int rc = tok_encode(v, s, n, special, &ids, &n_ids);
    *ns += llm_now_ns() - t0;
    if (rc != LLM_OK)
        return rc;
    if ((rc = tok_decode(v, ids, n_ids, false, &dec, &dec_len)) == LLM_OK) {
        for (size_t i = 0; i < n_ids; i++)
            printf(i ? " %d" : "%d", (int)ids[i]);
        putchar('\t');
        print_hex(dec, dec_len);
        putchar('\n');
        *n_tokens += n_ids;
    }
    free(dec);
    free(ids);
    return rc;
}

int
main(int argc, char **argv)
{
    const char *model = NULL;
    bool special = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--special") == 0)
            special = true;
        else if (model == NULL && argv[i][0] != '-')
            model = argv[i];
        else
            model = NULL, i = argc; // unknown flag or a second path: usage
    }
    if (model == NULL) {
        fprintf(stderr, "usage: tok_dump MODEL.gguf [--special] < HEX_LINES\n");
        return 2;
    }

    char err[256] = "";
    gguf_file *f = NULL;
    tok_vocab *v = NULL;
    int rc = gguf_open(model, NULL, &f, err, sizeof(err));
    if (rc == LLM_OK)
        rc = tok_vocab_load(f, &v, err, sizeof(err));
    if (rc != LLM_OK) {
        fprintf(stderr, "tok_dump: error: %s: %s (%s)\n", model, err, llm_strerror(rc));
        gguf_close(f);
        return 1;
    }

    int code = 0;
    char *line = NULL;
    size_t cap = 0, n_lines = 0, n_tokens = 0, n_bytes = 0;
    uint64_t ns = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)got;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        long n = unhex(line, len);
        if (n < 0) {
            fprintf(stderr, "tok_dump: error: line %zu is not hex\n", n_lines + 1);
            code = 2;
            break;
        }
        if ((rc = dump_line(v, line, (size_t)n, special, &ns, &n_tokens)) != LLM_OK) {
            fprintf(stderr, "tok_dump: error: line %zu: %s\n", n_lines + 1, llm_strerror(rc));
            code = 1;
            break;
        }
        n_lines++;
        n_bytes += (size_t)n;
    }
    free(line);
    fprintf(stderr, "tok_dump: lines=%zu tokens=%zu bytes=%zu encode_ms=%.3f\n", n_lines, n_tokens,
            n_bytes, (double)ns / 1e6);
    tok_vocab_free(v);
    gguf_close(f);
    return code;
}
