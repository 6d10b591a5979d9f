/*
 * test_helpers.h - small helpers shared by unit tests: temporary files and tiny models.
 */
#ifndef LLM_TESTS_TEST_HELPERS_H
#define LLM_TESTS_TEST_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kern.h"
#include "tiny_model.h"

/* test_tmp_path fills buf with a unique path under $TMPDIR (or /tmp). */
static inline void
test_tmp_path(char *buf, size_t n, const char *tag)
{
    static int counter;
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/llm-test-%d-%d-%s", dir && *dir ? dir : "/tmp", (int)getpid(), counter++,
             tag);
}

/* test_tiny_model writes a tiny model of the given type and returns its path in buf. */
static inline int
test_tiny_model(char *buf, size_t n, llm_dtype type, uint64_t seed, bool untied)
{
    test_tmp_path(buf, n, "tiny.gguf");
    tiny_model_opts o = {.type = type, .seed = seed, .untied = untied};
    return tiny_model_write(buf, &o);
}

/* test_read_file returns the malloc'ed contents of path and its size in *len. */
static inline void *
test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

#endif
