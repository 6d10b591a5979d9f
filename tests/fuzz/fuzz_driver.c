/*
 * fuzz_driver.c - runs a libFuzzer target without libFuzzer (gcc builds, ctest):
 * files given as arguments are run as they are; with none, valid seed envelopes and
 * LLM_FUZZ_ITERS (default 20000) random mutations of them (bit flips, truncations,
 * insertions, splices, random bytes), from a fixed seed so a failure reproduces.
 */
#include "wire.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (argc > 1) {
        int rc = 0;
        for (int i = 1; i < argc; i++)
            rc |= run_file(argv[i]);
        return rc;
    }
    const char *it = getenv("LLM_FUZZ_ITERS");
    long iters = it ? atol(it) : 20000;
    uint8_t *seed[8];
    size_t seed_len[8];
    int n_seeds = seeds(seed, seed_len);
    uint8_t buf[512];
    for (int i = 0; i < n_seeds; i++)
        LLVMFuzzerTestOneInput(seed[i], seed_len[i]);
    for (long k = 0; k < iters; k++) {
        int si = (int)(next_rand() % (uint32_t)n_seeds);
        size_t n = seed_len[si] < sizeof(buf) ? seed_len[si] : sizeof(buf);
        memcpy(buf, seed[si], n);
        int ops = 1 + (int)(next_rand() % 4);
        for (int op = 0; op < ops; op++) {
            switch (next_rand() % 5) {
            case 0: // flip bits
                if (n)
                    buf[next_rand() % n] ^= (uint8_t)(1u << (next_rand() % 8));
                break;
            case 1: // truncate
                n = n ? next_rand() % n : 0;
                break;
            case 2: // insert a random byte
                if (n < sizeof(buf)) {
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
                if (n + take <= sizeof(buf)) {
                    memcpy(buf + n, seed[sj] + from, take);
                    n += take;
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
        LLVMFuzzerTestOneInput(buf, n);
    }
    for (int i = 0; i < n_seeds; i++)
        free(seed[i]);
    printf("fuzz_envelope: %d seeds + %ld mutations, no crash\n", n_seeds, iters);
    return 0;
}
