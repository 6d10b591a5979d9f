/*
 * fuzz_driver.c - runs a libFuzzer target without libFuzzer (gcc builds, ctest):
 * files given as arguments are run as they are; with none, valid seed envelopes and
 * LLM_FUZZ_ITERS (default 20000) random mutations of them (bit flips, truncations,
 * insertions, splices, random bytes), from a fixed seed so a failure reproduces.
 *
 * With one argument that is a directory (fuzz_oai: tests/fuzz/seeds/oai), the files in
 * it, in name order, are the seeds instead of the envelopes, inputs may grow to 4 KiB,
 * and a sixth mutation inserts a JSON token, so text formats get past their parser's
 * first error. The envelope targets' runs are unchanged.
 */
#include "wire.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t
next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* seeds builds valid envelopes of every request kind; returns how many. */
static int
seeds(uint8_t **buf, size_t *len)
{
    int n = 0;
    for (int kind = 0; kind < 6; kind++) {
        Llm__Envelope env = LLM__ENVELOPE__INIT;
        Llm__GenerateRequest g = LLM__GENERATE_REQUEST__INIT;
        Llm__Sampling s = LLM__SAMPLING__INIT;
        Llm__NextRequest nx = LLM__NEXT_REQUEST__INIT;
        Llm__CancelRequest c = LLM__CANCEL_REQUEST__INIT;
        Llm__HealthRequest h = LLM__HEALTH_REQUEST__INIT;
        Llm__StatsRequest st = LLM__STATS_REQUEST__INIT;
        char *stop[] = {"\n", "END"};
        env.request_id = 7;
        switch (kind) {
        case 0:
        case 1:
            s.max_tokens = 8;
            s.temperature = kind ? 0.7f : 0.0f;
            s.n_stop = 2;
            s.stop = stop;
            g.input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT;
            g.prompt = "hello fuzz";
            g.sampling = &s;
            g.tier = (Llm__SlaTier)kind;
            env.body_case = LLM__ENVELOPE__BODY_GENERATE;
            env.generate = &g;
            env.request_id = 0;
            break;
        case 2:
            nx.request_id = 7;
            nx.after_seq = 1;
            env.body_case = LLM__ENVELOPE__BODY_NEXT;
            env.next = &nx;
            break;
        case 3:
            c.request_id = 7;
            env.body_case = LLM__ENVELOPE__BODY_CANCEL;
            env.cancel = &c;
            break;
        case 4:
            env.body_case = LLM__ENVELOPE__BODY_HEALTH;
            env.health = &h;
            break;
        default:
            env.body_case = LLM__ENVELOPE__BODY_STATS;
            env.stats = &st;
            break;
        }
        if (wire_pack(&env, &buf[n], &len[n]) != 0)
            abort();
        n++;
    }
    return n;
}

#define MAX_SEEDS 64

static int
by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* dir_seeds reads the regular files of dir (at most MAX_SEEDS, each up to 4 KiB) in
 * name order; returns how many, or -1 when dir cannot be read. */
static int
dir_seeds(const char *dir, uint8_t **buf, size_t *len)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char *names[MAX_SEEDS];
    int n_names = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n_names < MAX_SEEDS)
        if (de->d_name[0] != '.')
            names[n_names++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)n_names, sizeof(names[0]), by_name);
    int n = 0;
    for (int i = 0; i < n_names; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        free(names[i]);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        buf[n] = malloc(4096);
        len[n] = fread(buf[n], 1, 4096, f);
        fclose(f);
        n++;
    }
    return n;
}

static bool
is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int
run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    static uint8_t data[1 << 20];
    size_t n = fread(data, 1, sizeof(data), f);
    fclose(f);
    LLVMFuzzerTestOneInput(data, n);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *dir = argc == 2 && is_dir(argv[1]) ? argv[1] : NULL;
    if (argc > 1 && !dir) {
        int rc = 0;
        for (int i = 1; i < argc; i++)
            rc |= run_file(argv[i]);
        return rc;
    }
    const char *it = getenv("LLM_FUZZ_ITERS");
    long iters = it ? atol(it) : 20000;
    uint8_t *seed[MAX_SEEDS];
    size_t seed_len[MAX_SEEDS];
    int n_seeds = dir ? dir_seeds(dir, seed, seed_len) : seeds(seed, seed_len);
    if (n_seeds <= 0) {
        fprintf(stderr, "fuzz driver: no seeds in %s\n", dir);
        return 1;
    }
    static uint8_t buf[4096];
    size_t cap = dir ? sizeof(buf) : 512;
    static const char *const tokens[] = {
        "{", "}",  "[",   "]",     ",",       ":",       "\"",        "null",  "true",
        "0", "-1", "1.5", "1e999", "\\u0000", "\\ud800", "\"model\"", "\"n\"", "\"\":"};
    for (int i = 0; i < n_seeds; i++)
        LLVMFuzzerTestOneInput(seed[i], seed_len[i]);
    for (long k = 0; k < iters; k++) {
        int si = (int)(next_rand() % (uint32_t)n_seeds);
        size_t n = seed_len[si] < cap ? seed_len[si] : cap;
        memcpy(buf, seed[si], n);
        int ops = 1 + (int)(next_rand() % 4);
        for (int op = 0; op < ops; op++) {
            switch (next_rand() % (dir ? 6 : 5)) {
            case 0: // flip bits
                if (n)
                    buf[next_rand() % n] ^= (uint8_t)(1u << (next_rand() % 8));
                break;
            case 1: // truncate
                n = n ? next_rand() % n : 0;
                break;
            case 2: // insert a random byte
                if (n < cap) {
                    size_t at = n ? next_rand() % (n + 1) : 0;
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = (uint8_t)next_rand();
                    n++;
                }
                break;
            case 3: { // splice another seed's tail
                int sj = (int)(next_rand() % (uint32_t)n_seeds);
                size_t from = seed_len[sj] ? next_rand() % seed_len[sj] : 0;
                size_t take = seed_len[sj] - from;
                if (n + take <= cap) {
                    memcpy(buf + n, seed[sj] + from, take);
                    n += take;
                }
                break;
            }
            case 5: { // insert a JSON token (directory seeds only)
                const char *t = tokens[next_rand() % (sizeof(tokens) / sizeof(tokens[0]))];
                size_t tl = strlen(t);
                if (n + tl <= cap) {
                    size_t at = next_rand() % (n + 1);
                    memmove(buf + at + tl, buf + at, n - at);
                    memcpy(buf + at, t, tl);
                    n += tl;
                }
                break;
            }
            default: // overwrite a byte with a boundary value
                if (n) {
                    static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
                    buf[next_rand() % n] = vals[next_rand() % 5];
                }
                break;
            }
        }
        // An exact-size copy, so ASan sees a read past the input's end.
        uint8_t *in = malloc(n ? n : 1);
        memcpy(in, buf, n);
        LLVMFuzzerTestOneInput(in, n);
        free(in);
    }
    for (int i = 0; i < n_seeds; i++)
        free(seed[i]);
    printf("%s: %d seeds + %ld mutations, no crash\n", argv[0], n_seeds, iters);
    return 0;
}
