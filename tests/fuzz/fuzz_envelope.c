/*
 * fuzz_envelope.c - libFuzzer target: random bytes into the worker's envelope decoder
 * and dispatcher (wserver_handle), over a live scheduler with the synthetic engine.
 * Every input must produce a reply that is itself a valid Envelope; sanitizers catch
 * the rest. Built with clang -fsanitize=fuzzer by scripts/fuzz.sh, and with
 * fuzz_driver.c as a plain program that ctest runs on seeds and mutations.
 */
#include "engine.h"
#include "llm_err.h"
#include "log.h"
#include "metrics.h"
#include "sched.h"
#include "server.h"
#include "wire.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static wserver *srv;

static void
setup(void)
{
    char err[256];
    engine *e = NULL;
    sched *s = NULL;
    engine_synth_opts eo = {.step_delay_us = 0,
                            .prefill_us_per_tok = 0,
                            .ctx_len = 256,
                            .n_blocks = 256,
                            .max_step_tokens = 64};
    sched_opts so = {.max_running = 16,
                     .prefill_chunk = 32,
                     .max_waiting = 64,
                     .finished_ttl_ms = 50,
                     .max_stop = SCHED_MAX_STOP};
    wserver_opts wo = {.listen = "inproc://fuzz",
                       .model_name = "synthetic",
                       .contexts = 1,
                       .first_chunk_wait_ms = 0,
                       .max_wait_ms = 0,
                       .max_prompt_bytes = 4096};
    log_set_level(LOG_LEVEL_ERROR); // a million refusals would be a million log lines
    metrics *reg = metrics_new();
    if (!reg || engine_synthetic_new(&eo, &e, err, sizeof(err)) != LLM_OK ||
        sched_new(e, &so, reg, &s) != LLM_OK || sched_start(s) != LLM_OK ||
        wserver_new(s, e, reg, &wo, &srv, err, sizeof(err)) != LLM_OK) {
        fprintf(stderr, "fuzz setup failed\n");
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv)
        setup();
    uint8_t *reply = NULL;
    size_t len = 0;
    if (wserver_handle(srv, data, size, &reply, &len) != LLM_OK || !reply)
        abort(); // every message, however bad, gets a reply
    Llm__Envelope *env = NULL;
    char err[160];
    if (wire_decode(reply, len, &env, err, sizeof(err)) != LLM_OK) {
        fprintf(stderr, "reply does not decode: %s\n", err);
        abort();
    }
    wire_free(env);
    free(reply);
    return 0;
}
