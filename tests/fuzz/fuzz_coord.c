/*
 * fuzz_coord.c - libFuzzer target: bytes into the coordinator's two ports, the client
 * RPC (relay_handle) and the membership port (members_handle), over one registry and
 * relay built once (one model, "synthetic", with the synthetic engine's tokenizer; no
 * worker is ever connected, so every request's pump ends inside relay_handle).
 *
 * Each input is used three ways: as raw bytes to the client port, as raw bytes to the
 * membership port, and as the fields of one well-formed coordinator message (Register,
 * Heartbeat, Deregister, Drain, ListModels, ClusterStatus, Generate with chat messages
 * or prompt ids, Next, Cancel). The third way matters for the plain driver ctest runs:
 * its seeds are worker requests, and their mutations rarely turn into the bodies only
 * the coordinator answers. Every reply must decode as an Envelope; sanitizers catch the
 * rest. After each input relay_tick runs with finished_ttl_ms 0, so ended streams are
 * freed at once and a leak shows up as one.
 *
 * Register messages whose address does not start with WORKER_URL_PREFIX are skipped:
 * a later Drain of that worker dials its address synchronously, and a fuzz input must
 * not open TCP connections or resolve host names. No listener has such an address, so
 * those dials fail at once.
 *
 * Built with clang -fsanitize=fuzzer by scripts/fuzz.sh, and with fuzz_driver.c as a
 * plain program that ctest runs on seeds and mutations.
 */
#include "ctok.h"
#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "members.h"
#include "metrics.h"
#include "registry.h"
#include "relay.h"
#include "wire.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORKER_URL_PREFIX "inproc://fuzz-w"
#define MAX_FIELD 96 // bytes of one string field taken from the input

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static registry *reg;
static relay *rl;
static members *mb;
static ctok *tok;

static void
setup(void)
{
    char err[256] = "";
    log_set_level(LOG_LEVEL_ERROR); // a million refusals would be a million log lines
    metrics *met = metrics_new();
    reg_opts ro = {.max_workers = 32,
                   .heartbeat_timeout_ms = 3000,
                   .breaker_failures = 3,
                   .breaker_backoff_ms = 1000,
                   .breaker_backoff_max_ms = 30000,
                   .call_timeout_ms = 100,
                   .route = route_opts_default()};
    relay_opts o = {.listen = "inproc://fuzz-coord-unused",
                    .contexts = 1,
                    .max_requests = 64,
                    .max_attempts = 3,
                    .call_timeout_ms = 100,
                    .poll_wait_ms = 100,
                    .max_wait_ms = 100,
                    .accept_wait_ms = 100,
                    .finished_ttl_ms = 0,
                    .max_prompt_bytes = 1024};
    if (!met || reg_new(&ro, met, &reg) != LLM_OK ||
        reg_add_model(reg, "synthetic", ROUTE_PREFIX) != 0 ||
        ctok_new("synthetic", &tok, err, sizeof(err)) != LLM_OK ||
        relay_new(reg, &tok, met, &o, &rl, err, sizeof(err)) != LLM_OK ||
        members_listen(reg, met, "inproc://fuzz-coord-members", 1, &mb, err, sizeof(err)) !=
            LLM_OK) {
        fprintf(stderr, "fuzz setup failed: %s\n", err);
        abort();
    }
}

/* check_reply aborts unless the port answered with bytes that decode. */
static void
check_reply(int rc, uint8_t *reply, size_t len, const char *port)
{
    if (rc != LLM_OK || !reply) {
        fprintf(stderr, "%s: no reply (%s)\n", port, llm_strerror(rc));
        abort(); // every message, however bad, gets a reply
    }
    Llm__Envelope *env = NULL;
    char err[160];
    if (wire_decode(reply, len, &env, err, sizeof(err)) != LLM_OK) {
        fprintf(stderr, "%s: reply does not decode: %s\n", port, err);
        abort();
    }
    wire_free(env);
    free(reply);
}

static void
to_relay(const uint8_t *msg, size_t len)
{
    uint8_t *reply = NULL;
    size_t n = 0;
    int rc = relay_handle(rl, msg, len, &reply, &n);
    check_reply(rc, reply, n, "relay");
}

/* to_members skips a Register whose address could reach beyond this process. */
static void
to_members(const uint8_t *msg, size_t len)
{
    Llm__Envelope *env = NULL;
    if (wire_decode(msg, len, &env, NULL, 0) == LLM_OK &&
        env->body_case == LLM__ENVELOPE__BODY_REGISTER &&
        strncmp(env->register_->address, WORKER_URL_PREFIX, strlen(WORKER_URL_PREFIX)) != 0) {
        wire_free(env);
        return;
    }
    wire_free(env);
    uint8_t *reply = NULL;
    size_t n = 0;
    int rc = members_handle(mb, msg, len, &reply, &n);
    check_reply(rc, reply, n, "members");
}

/* ---- the structured message ------------------------------------------------------------- */

/* A reader over the input: numbers and strings, zeros once it runs dry. */
typedef struct {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t
u8(reader *r)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

static uint64_t
u64(reader *r, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | u8(r);
    return v;
}

/* str copies a length-prefixed string (any bytes, cut at a NUL) into buf[MAX_FIELD]. */
static char *
str(reader *r, char *buf)
{
    size_t len = u8(r) % MAX_FIELD;
    size_t i = 0;
    for (; i < len && r->n; i++)
        buf[i] = (char)u8(r);
    buf[i] = '\0';
    return buf;
}

/* worker_id: mostly one of a few ids (so messages meet the records earlier ones made),
 * sometimes anything. */
static char *
worker_id(reader *r, char *buf)
{
    uint8_t k = u8(r);
    if (k < 224) {
        snprintf(buf, MAX_FIELD, "w%d", k % 6);
        return buf;
    }
    return str(r, buf);
}

static const char *const roles[] = {"system", "user", "assistant", "", "tool"};
static const char *const models[] = {"synthetic", "", "other"};

static void
structured(const uint8_t *data, size_t size)
{
    reader in = {data, size};
    char s[8][MAX_FIELD];
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__Register rg = LLM__REGISTER__INIT;
    Llm__Heartbeat hb = LLM__HEARTBEAT__INIT;
    Llm__Deregister dg = LLM__DEREGISTER__INIT;
    Llm__WorkerLoad ld = LLM__WORKER_LOAD__INIT;
    Llm__DrainRequest dr = LLM__DRAIN_REQUEST__INIT;
    Llm__ListModelsRequest lm = LLM__LIST_MODELS_REQUEST__INIT;
    Llm__ClusterStatusRequest cs = LLM__CLUSTER_STATUS_REQUEST__INIT;
    Llm__GenerateRequest g = LLM__GENERATE_REQUEST__INIT;
    Llm__Sampling sp = LLM__SAMPLING__INIT;
    Llm__ChatList chat = LLM__CHAT_LIST__INIT;
    Llm__ChatMessage cm[3] = {LLM__CHAT_MESSAGE__INIT, LLM__CHAT_MESSAGE__INIT,
                              LLM__CHAT_MESSAGE__INIT};
    Llm__ChatMessage *cmp[3] = {&cm[0], &cm[1], &cm[2]};
    Llm__TokenList ids = LLM__TOKEN_LIST__INIT;
    Llm__NextRequest nx = LLM__NEXT_REQUEST__INIT;
    Llm__CancelRequest cc = LLM__CANCEL_REQUEST__INIT;
    uint64_t hashes[16];
    int32_t tokens[64];
    char *stops[10];
    bool membership = false;

    // The kind comes from a hash of the whole input: the driver's inputs all start with
    // the same bytes (an Envelope's version field), which would pick one kind only.
    uint32_t h = (uint32_t)size;
    for (size_t i = 0; i < size; i++)
        h = h * 31u + data[i];
    uint8_t kind = (uint8_t)(h % 10);
    env.request_id = u8(&in) % 8;
    switch (kind) {
    case 0: // Register
    case 1: // Heartbeat
        ld.model = (char *)models[u8(&in) % 3];
        ld.model_fingerprint = u8(&in) % 8 ? 1 : u8(&in) % 3; // mostly agreeing
        ld.running = (uint32_t)u64(&in, 4);
        ld.waiting = (uint32_t)u64(&in, 1);
        ld.kv_blocks_total = (uint32_t)u64(&in, 2);
        ld.step_ms_ewma = (float)(int8_t)u8(&in) / 4.0f;
        ld.tp_size = u8(&in);
        ld.draining = u8(&in) & 1;
        ld.n_prefix_hashes = u8(&in) % 17;
        for (size_t i = 0; i < ld.n_prefix_hashes; i++)
            hashes[i] = u64(&in, 2);
        ld.prefix_hashes = ld.n_prefix_hashes ? hashes : NULL;
        membership = true;
        if (kind == 0) {
            rg.worker_id = worker_id(&in, s[0]);
            snprintf(s[1], MAX_FIELD, WORKER_URL_PREFIX "%u", u8(&in) % 4);
            rg.address = s[1];
            rg.load = u8(&in) == 255 ? NULL : &ld;
            env.body_case = LLM__ENVELOPE__BODY_REGISTER;
            env.register_ = &rg;
        } else {
            hb.worker_id = worker_id(&in, s[0]);
            hb.load = &ld;
            env.body_case = LLM__ENVELOPE__BODY_HEARTBEAT;
            env.heartbeat = &hb;
        }
        break;
    case 2:
        dg.worker_id = worker_id(&in, s[0]);
        env.body_case = LLM__ENVELOPE__BODY_DEREGISTER;
        env.deregister = &dg;
        membership = true;
        break;
    case 3:
        dr.worker_id = worker_id(&in, s[0]);
        env.body_case = LLM__ENVELOPE__BODY_DRAIN;
        env.drain = &dr;
        break;
    case 4:
        env.body_case = LLM__ENVELOPE__BODY_LIST_MODELS;
        env.list_models = &lm;
        break;
    case 5:
        env.body_case = LLM__ENVELOPE__BODY_CLUSTER_STATUS;
        env.cluster_status = &cs;
        break;
    case 6: // Generate: text, chat messages or ids
    case 7:
    case 8: {
        uint8_t how = u8(&in);
        g.model = (char *)models[how % 3];
        if (kind == 6) {
            g.input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT;
            g.prompt = str(&in, s[0]);
        } else if (kind == 7) {
            chat.n_messages = u8(&in) % 4;
            for (size_t i = 0; i < chat.n_messages; i++) {
                cm[i].role = (char *)roles[u8(&in) % 5];
                cm[i].content = str(&in, s[1 + i]);
            }
            chat.messages = cmp;
            g.input_case = LLM__GENERATE_REQUEST__INPUT_MESSAGES;
            g.messages = &chat;
        } else {
            ids.n_ids = u8(&in) % 65;
            for (size_t i = 0; i < ids.n_ids; i++)
                tokens[i] = (int32_t)u64(&in, 2) - 1024;
            ids.ids = tokens;
            g.input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT_IDS;
            g.prompt_ids = &ids;
            if ((how & 0x70) == 0x70) // clients may not set this
                g.resume_ids = &ids;
        }
        sp.temperature = (float)u8(&in) / 64.0f;
        sp.top_p = (float)u8(&in) / 255.0f;
        sp.top_k = u8(&in);
        sp.seed = u64(&in, 2);
        sp.max_tokens = (uint32_t)u64(&in, 2);
        sp.n_stop = u8(&in) % 10;
        for (size_t i = 0; i < sp.n_stop; i++)
            stops[i] = i < 3 ? str(&in, s[4 + i]) : (char *)"x";
        sp.stop = stops;
        g.sampling = how & 0x80 ? NULL : &sp;
        g.tier = (Llm__SlaTier)(u8(&in) % 4);
        g.deadline_unix_ms = u64(&in, 1);
        g.traceparent = str(&in, s[7]);
        env.body_case = LLM__ENVELOPE__BODY_GENERATE;
        env.generate = &g;
        break;
    }
    default: // Next or Cancel of a small id (the streams of earlier inputs are gone)
        if (u8(&in) & 1) {
            nx.request_id = u8(&in) % 8;
            nx.after_seq = u8(&in) % 3;
            nx.wait_ms = u8(&in);
            env.body_case = LLM__ENVELOPE__BODY_NEXT;
            env.next = &nx;
        } else {
            cc.request_id = u8(&in) % 8;
            env.body_case = LLM__ENVELOPE__BODY_CANCEL;
            env.cancel = &cc;
        }
        break;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    if (wire_pack(&env, &buf, &len) != LLM_OK)
        abort();
    if (membership)
        to_members(buf, len);
    else
        to_relay(buf, len);
    free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rl)
        setup();
    to_relay(data, size);
    to_members(data, size);
    structured(data, size);
    relay_tick(rl, llm_now_ms()); // frees the streams that ended (finished_ttl_ms 0)
    return 0;
}
