/*
 * test_relay.c - the coordinator's client RPC, driven through relay_handle (no
 * sockets): refusals of bad envelopes and bad Generate requests with their codes, the
 * life of a request no worker can take (accepted, then `unavailable` on Next), Next and
 * Cancel cursors and ids, the table's limit and TTL, and the cluster-level answers
 * (Health, ListModels, ClusterStatus, Drain, Stats).
 *
 * The registry serves one model ("synthetic", with the synthetic engine's tokenizer)
 * and has no connected worker, so every pump ends at once inside relay_handle; real
 * workers are the integration tests' business.
 */
#include "ctok.h"
#include "llm_err.h"
#include "llm_time.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "relay.h"
#include "wire.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PROMPT 64

/* Registered workers advertise an empty, non-NULL hash list: NULL trips the undefined
 * memcpy in registry.c's take_load (test_registry.c has the test of that bug). */
static const uint64_t no_hashes[1];
#define TTL_MS 60000

/* ---- fixture ------------------------------------------------------------------------- */

static metrics *met;
static registry *reg;
static ctok *tok;
static relay *rl;

static void
setup_with(int max_requests)
{
    char err[256] = "";
    log_set_level(LOG_LEVEL_OFF);
    met = metrics_new();
    ck_assert_ptr_nonnull(met);
    reg_opts ro = {.max_workers = 4,
                   .heartbeat_timeout_ms = 3000,
                   .breaker_failures = 3,
                   .breaker_backoff_ms = 1000,
                   .breaker_backoff_max_ms = 30000,
                   .call_timeout_ms = 1000,
                   .route = route_opts_default()};
    ck_assert_int_eq(reg_new(&ro, met, &reg), LLM_OK);
    ck_assert_int_eq(reg_add_model(reg, "synthetic", ROUTE_PREFIX), 0);
    ck_assert_int_eq(ctok_new("synthetic", &tok, err, sizeof(err)), LLM_OK);
    relay_opts o = {.listen = "inproc://relay-test-unused",
                    .contexts = 1,
                    .max_requests = max_requests,
                    .max_attempts = 3,
                    .call_timeout_ms = 1000,
                    .poll_wait_ms = 1000,
                    .max_wait_ms = 1000,
                    .accept_wait_ms = 1000,
                    .finished_ttl_ms = TTL_MS,
                    .max_prompt_bytes = MAX_PROMPT};
    ck_assert_int_eq(relay_new(reg, &tok, met, &o, &rl, err, sizeof(err)), LLM_OK);
}

static void
setup(void)
{
    setup_with(64);
}

static void
teardown(void)
{
    relay_free(rl);
    reg_free(reg);
    ctok_free(tok);
    metrics_free(met);
    rl = NULL;
    reg = NULL;
    tok = NULL;
    met = NULL;
}

/* ---- calls ------------------------------------------------------------------------------ */

/* handle_bytes answers raw bytes; the reply must always decode. Free with wire_free. */
static Llm__Envelope *
handle_bytes(const uint8_t *msg, size_t len)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    ck_assert_int_eq(relay_handle(rl, msg, len, &out, &out_len), LLM_OK);
    ck_assert_ptr_nonnull(out);
    Llm__Envelope *rep = NULL;
    char err[160] = "";
    ck_assert_msg(wire_decode(out, out_len, &rep, err, sizeof(err)) == LLM_OK,
                  "the reply does not decode: %s", err);
    free(out);
    return rep;
}

static Llm__Envelope *
handle(Llm__Envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(wire_pack(env, &buf, &len), LLM_OK);
    Llm__Envelope *rep = handle_bytes(buf, len);
    free(buf);
    return rep;
}

/* expect_error checks that rep is Error{code} and frees it; returns nothing. */
static void
expect_error(Llm__Envelope *rep, int code, const char *in_message)
{
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_ERROR);
    ck_assert_msg((int)rep->error->code == code, "code %s (%u), want %s: %s",
                  llm_strerror((int)rep->error->code), rep->error->code, llm_strerror(code),
                  rep->error->message);
    if (in_message)
        ck_assert_msg(strstr(rep->error->message, in_message), "'%s' lacks '%s'",
                      rep->error->message, in_message);
    wire_free(rep);
}

/* A Generate the tests change field by field. */
typedef struct {
    Llm__Envelope env;
    Llm__GenerateRequest g;
    Llm__Sampling s;
    Llm__TokenList ids, resume;
    Llm__ChatList chat;
    Llm__ChatMessage msg;
    Llm__ChatMessage *msgs[1];
} gen_req;

static void
gen_init(gen_req *q, uint64_t id, const char *prompt)
{
    memset(q, 0, sizeof(*q));
    llm__envelope__init(&q->env);
    llm__generate_request__init(&q->g);
    llm__sampling__init(&q->s);
    llm__token_list__init(&q->ids);
    llm__token_list__init(&q->resume);
    llm__chat_list__init(&q->chat);
    llm__chat_message__init(&q->msg);
    q->s.max_tokens = 8;
    q->g.model = "synthetic";
    q->g.input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT;
    q->g.prompt = (char *)prompt;
    q->g.sampling = &q->s;
    q->env.request_id = id;
    q->env.body_case = LLM__ENVELOPE__BODY_GENERATE;
    q->env.generate = &q->g;
}

static Llm__Envelope *
next(uint64_t id, uint32_t after_seq)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__NextRequest nr = LLM__NEXT_REQUEST__INIT;
    nr.request_id = id;
    nr.after_seq = after_seq;
    nr.wait_ms = 100; // relay_handle never waits
    env.body_case = LLM__ENVELOPE__BODY_NEXT;
    env.next = &nr;
    return handle(&env);
}

static Llm__Envelope *
cancel(uint64_t id)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__CancelRequest cr = LLM__CANCEL_REQUEST__INIT;
    cr.request_id = id;
    env.body_case = LLM__ENVELOPE__BODY_CANCEL;
    env.cancel = &cr;
    return handle(&env);
}

/* generate_accepted sends a valid Generate (id may be 0) and checks the answer:
 * accepted, nothing generated. Returns the request's id. */
static uint64_t
generate_accepted(uint64_t id)
{
    gen_req q;
    gen_init(&q, id, "hello");
    Llm__Envelope *rep = handle(&q.env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_ACCEPTED);
    uint64_t got = rep->accepted->request_id;
    ck_assert_uint_ne(got, 0);
    if (id)
        ck_assert_uint_eq(got, id);
    ck_assert_uint_eq(rep->request_id, got);
    ck_assert_ptr_null(rep->accepted->first);
    wire_free(rep);
    return got;
}

static char *
stats_text(void)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__StatsRequest sr = LLM__STATS_REQUEST__INIT;
    env.body_case = LLM__ENVELOPE__BODY_STATS;
    env.stats = &sr;
    Llm__Envelope *rep = handle(&env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_STATS_REPLY);
    char *text = strdup(rep->stats_reply->prometheus_text);
    wire_free(rep);
    return text;
}

/* ---- envelopes ---------------------------------------------------------------------------- */

START_TEST(test_malformed_bytes_get_an_eproto_error)
{
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    expect_error(handle_bytes(junk, sizeof(junk)), LLM_EPROTO, "malformed");
    // A length-delimited field that runs past the end.
    static const uint8_t cut[] = {0x08, 0x01, 0x52, 0x40, 0x0a};
    expect_error(handle_bytes(cut, sizeof(cut)), LLM_EPROTO, NULL);
}
END_TEST

START_TEST(test_a_wrong_version_gets_an_eproto_error)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__HealthRequest h = LLM__HEALTH_REQUEST__INIT;
    env.version = WIRE_VERSION + 1;
    env.request_id = 9;
    env.body_case = LLM__ENVELOPE__BODY_HEALTH;
    env.health = &h;
    uint8_t buf[64];
    size_t len = llm__envelope__pack(&env, buf); // wire_pack would set the version
    expect_error(handle_bytes(buf, len), LLM_EPROTO, "version");
}
END_TEST

START_TEST(test_an_empty_envelope_gets_an_eproto_error)
{
    // Zero bytes unpack as version 0.
    expect_error(handle_bytes((const uint8_t *)"", 0), LLM_EPROTO, NULL);
    // The right version and no body.
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    env.request_id = 3;
    Llm__Envelope *rep = handle(&env);
    expect_error(rep, LLM_EPROTO, "no body");
}
END_TEST

START_TEST(test_a_worker_message_on_the_client_port_is_refused)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__Register rg = LLM__REGISTER__INIT;
    Llm__WorkerLoad ld = LLM__WORKER_LOAD__INIT;
    rg.worker_id = "w1";
    rg.address = "inproc://w1";
    ld.model = "synthetic";
    rg.load = &ld;
    env.request_id = 4;
    env.body_case = LLM__ENVELOPE__BODY_REGISTER;
    env.register_ = &rg;
    Llm__Envelope *rep = handle(&env);
    ck_assert_uint_eq(rep->request_id, 4);
    expect_error(rep, LLM_EPROTO, "register");
    ck_assert_int_eq(reg_n_workers(reg), 0);
}
END_TEST

/* ---- Generate refusals -------------------------------------------------------------------- */

START_TEST(test_generate_for_an_unknown_model_is_enoent)
{
    gen_req q;
    gen_init(&q, 11, "hi");
    q.g.model = "nope";
    Llm__Envelope *rep = handle(&q.env);
    ck_assert_uint_eq(rep->request_id, 11);
    expect_error(rep, LLM_ENOENT, "nope");
    // "" names the only model.
    q.g.model = "";
    rep = handle(&q.env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_ACCEPTED);
    wire_free(rep);
}
END_TEST

START_TEST(test_generate_without_sampling_is_einval)
{
    gen_req q;
    gen_init(&q, 12, "hi");
    q.g.sampling = NULL;
    expect_error(handle(&q.env), LLM_EINVAL, "sampling");
    ck_assert_int_eq(relay_active(rl), 0);
}
END_TEST

START_TEST(test_generate_with_too_many_stop_strings_is_einval)
{
    char *stops[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    gen_req q;
    gen_init(&q, 13, "hi");
    q.s.stop = stops;
    q.s.n_stop = 9;
    expect_error(handle(&q.env), LLM_EINVAL, "stop");
    // Eight is the limit, and fine.
    q.s.n_stop = 8;
    Llm__Envelope *rep = handle(&q.env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_ACCEPTED);
    wire_free(rep);
}
END_TEST

START_TEST(test_generate_with_invalid_utf8_is_einval)
{
    gen_req q;
    gen_init(&q, 14, "ok \xc3\x28 not");
    expect_error(handle(&q.env), LLM_EINVAL, "UTF-8");
    // In a chat message too.
    gen_init(&q, 15, NULL);
    q.g.input_case = LLM__GENERATE_REQUEST__INPUT_MESSAGES;
    q.msg.role = "user";
    q.msg.content = "\xff";
    q.msgs[0] = &q.msg;
    q.chat.messages = q.msgs;
    q.chat.n_messages = 1;
    q.g.messages = &q.chat;
    expect_error(handle(&q.env), LLM_EINVAL, "UTF-8");
    ck_assert_int_eq(relay_active(rl), 0);
}
END_TEST

START_TEST(test_chat_messages_need_a_known_role_and_at_least_one_message)
{
    gen_req q;
    gen_init(&q, 16, NULL);
    q.g.input_case = LLM__GENERATE_REQUEST__INPUT_MESSAGES;
    q.msg.role = "robot";
    q.msg.content = "hi";
    q.msgs[0] = &q.msg;
    q.chat.messages = q.msgs;
    q.chat.n_messages = 1;
    q.g.messages = &q.chat;
    expect_error(handle(&q.env), LLM_EINVAL, "role");
    q.chat.n_messages = 0;
    expect_error(handle(&q.env), LLM_EINVAL, "empty");
    q.chat.n_messages = 1;
    q.msg.role = "user";
    Llm__Envelope *rep = handle(&q.env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_ACCEPTED);
    wire_free(rep);
}
END_TEST

START_TEST(test_an_oversized_prompt_is_erange_and_the_limit_itself_is_fine)
{
    char big[MAX_PROMPT + 2];
    memset(big, 'x', sizeof(big));
    big[MAX_PROMPT + 1] = '\0'; // one byte over
    gen_req q;
    gen_init(&q, 17, big);
    expect_error(handle(&q.env), LLM_ERANGE, NULL);
    big[MAX_PROMPT] = '\0'; // at the limit
    gen_init(&q, 18, big);
    Llm__Envelope *rep = handle(&q.env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_ACCEPTED);
    wire_free(rep);
    // Chat messages count their contents (and some overhead per message).
    gen_init(&q, 19, NULL);
    q.g.input_case = LLM__GENERATE_REQUEST__INPUT_MESSAGES;
    q.msg.role = "user";
    q.msg.content = big;
    q.msgs[0] = &q.msg;
    q.chat.messages = q.msgs;
    q.chat.n_messages = 1;
    q.g.messages = &q.chat;
    expect_error(handle(&q.env), LLM_ERANGE, NULL);
}
END_TEST

START_TEST(test_prompt_ids_must_be_present_and_bounded)
{
    int32_t ids[MAX_PROMPT + 1];
    for (int i = 0; i <= MAX_PROMPT; i++)
        ids[i] = 'a' + i % 26;
    gen_req q;
    gen_init(&q, 20, NULL);
    q.g.input_case = LLM__GENERATE_REQUEST__INPUT_PROMPT_IDS;
    q.ids.ids = ids;
    q.ids.n_ids = MAX_PROMPT + 1;
    q.g.prompt_ids = &q.ids;
    expect_error(handle(&q.env), LLM_ERANGE, NULL);
    q.ids.n_ids = 0;
    expect_error(handle(&q.env), LLM_EINVAL, "empty");
    q.ids.n_ids = MAX_PROMPT;
    Llm__Envelope *rep = handle(&q.env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_ACCEPTED);
    wire_free(rep);
    // No input at all.
    gen_init(&q, 21, NULL);
    q.g.input_case = LLM__GENERATE_REQUEST__INPUT__NOT_SET;
    expect_error(handle(&q.env), LLM_EINVAL, "no prompt");
}
END_TEST

START_TEST(test_a_client_set_resume_ids_is_einval)
{
    int32_t done[2] = {104, 105};
    gen_req q;
    gen_init(&q, 22, "hi");
    q.resume.ids = done;
    q.resume.n_ids = 2;
    q.g.resume_ids = &q.resume;
    expect_error(handle(&q.env), LLM_EINVAL, "resume_ids");
    ck_assert_int_eq(relay_active(rl), 0);
}
END_TEST

/* ---- a request no worker can take ---------------------------------------------------------- */

START_TEST(test_a_valid_generate_without_workers_is_accepted_then_unavailable)
{
    uint64_t id = generate_accepted(31);
    ck_assert_int_eq(relay_active(rl), 1);
    // The pump found no worker: the stream ends with `unavailable`, a retry hint, and
    // no tokens.
    Llm__Envelope *rep = next(id, 0);
    ck_assert_uint_eq(rep->request_id, id);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_ERROR);
    ck_assert_uint_gt(rep->error->retry_after_ms, 0);
    expect_error(rep, LLM_EUNAVAIL, "no worker");
    // It stays readable (the same answer) until its TTL.
    expect_error(next(id, 0), LLM_EUNAVAIL, NULL);
    // A worker that registered but is not connected changes nothing.
    char err[256] = "";
    reg_load l = {.model = "synthetic", .fingerprint = 5, .hashes = no_hashes};
    ck_assert_int_eq(reg_register(reg, "w1", "inproc://never", &l, llm_now_ms(), err, sizeof(err)),
                     LLM_OK);
    uint64_t id2 = generate_accepted(32);
    expect_error(next(id2, 0), LLM_EUNAVAIL, NULL);
    // Now the model's fingerprint is known, a prompt of full blocks gets block hashes
    // for prefix routing; still no worker.
    gen_req q;
    gen_init(&q, 33, "a prompt long enough for two blocks of ids");
    Llm__Envelope *acc = handle(&q.env);
    ck_assert_int_eq(acc->body_case, LLM__ENVELOPE__BODY_ACCEPTED);
    wire_free(acc);
    expect_error(next(33, 0), LLM_EUNAVAIL, NULL);
    char *text = stats_text();
    ck_assert_ptr_nonnull(strstr(text, "llm_coord_requests_total{outcome=\"unavailable\"} 3"));
    free(text);
}
END_TEST

/* Regression (fixed; was relay.c reply_stream): `r->ids + after_seq` with r->ids still
 * NULL (every Accepted of a fresh stream) is NULL + 0, undefined in C; clang's UBSan (the
 * scripts/fuzz.sh build) aborted on it. */
START_TEST(test_an_accepted_reply_without_tokens_is_well_defined)
{
    uint64_t id = generate_accepted(35);
    expect_error(next(id, 0), LLM_EUNAVAIL, NULL);
}
END_TEST

START_TEST(test_the_coordinator_assigns_an_id_when_the_client_sends_none)
{
    uint64_t a = generate_accepted(0), b = generate_accepted(0);
    ck_assert_uint_ne(a, b);
    expect_error(next(a, 0), LLM_EUNAVAIL, NULL);
    expect_error(next(b, 0), LLM_EUNAVAIL, NULL);
}
END_TEST

START_TEST(test_an_id_in_use_is_einval)
{
    generate_accepted(41);
    gen_req q;
    gen_init(&q, 41, "again");
    expect_error(handle(&q.env), LLM_EINVAL, "in use");
    ck_assert_int_eq(relay_active(rl), 1);
}
END_TEST

START_TEST(test_next_and_cancel_of_an_unknown_id_are_enoent)
{
    expect_error(next(999, 0), LLM_ENOENT, "999");
    expect_error(cancel(999), LLM_ENOENT, "999");
    // Next takes the envelope's id when its own is 0.
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__NextRequest nr = LLM__NEXT_REQUEST__INIT;
    env.request_id = 998;
    env.body_case = LLM__ENVELOPE__BODY_NEXT;
    env.next = &nr;
    expect_error(handle(&env), LLM_ENOENT, "998");
}
END_TEST

START_TEST(test_a_cursor_past_the_stream_is_einval)
{
    uint64_t id = generate_accepted(51);
    expect_error(next(id, 1), LLM_EINVAL, "after_seq");
    expect_error(next(id, UINT32_MAX), LLM_EINVAL, "after_seq");
}
END_TEST

START_TEST(test_cancel_of_a_known_request_is_accepted)
{
    uint64_t id = generate_accepted(61);
    Llm__Envelope *rep = cancel(id);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_ACCEPTED);
    ck_assert_uint_eq(rep->accepted->request_id, id);
    wire_free(rep);
    // It had already ended: its outcome stands.
    expect_error(next(id, 0), LLM_EUNAVAIL, NULL);
}
END_TEST

START_TEST(test_finished_streams_leave_after_their_ttl)
{
    uint64_t id = generate_accepted(71);
    relay_tick(rl, llm_now_ms());
    ck_assert_int_eq(relay_active(rl), 1);
    expect_error(next(id, 0), LLM_EUNAVAIL, NULL);
    relay_tick(rl, llm_now_ms() + TTL_MS + 1);
    ck_assert_int_eq(relay_active(rl), 0);
    expect_error(next(id, 0), LLM_ENOENT, NULL);
    // Its id may be used again.
    generate_accepted(71);
}
END_TEST

START_TEST(test_the_table_limit_is_ebusy_until_streams_leave)
{
    teardown();
    setup_with(2);
    generate_accepted(81);
    generate_accepted(82);
    gen_req q;
    gen_init(&q, 83, "hi");
    Llm__Envelope *rep = handle(&q.env);
    ck_assert_uint_gt(rep->error->retry_after_ms, 0);
    expect_error(rep, LLM_EBUSY, "retry");
    ck_assert_int_eq(relay_active(rl), 2);
    relay_tick(rl, llm_now_ms() + TTL_MS + 1);
    ck_assert_int_eq(relay_active(rl), 0);
    generate_accepted(83);
    char *text = stats_text();
    ck_assert_ptr_nonnull(strstr(text, "llm_coord_requests_total{outcome=\"busy\"} 1"));
    free(text);
}
END_TEST

/* ---- cluster answers ------------------------------------------------------------------------- */

START_TEST(test_health_without_workers_is_not_ready)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__HealthRequest h = LLM__HEALTH_REQUEST__INIT;
    env.request_id = 5;
    env.body_case = LLM__ENVELOPE__BODY_HEALTH;
    env.health = &h;
    Llm__Envelope *rep = handle(&env);
    ck_assert_uint_eq(rep->request_id, 5);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_HEALTH_REPLY);
    ck_assert(!rep->health_reply->ready);
    ck_assert_str_eq(rep->health_reply->state, "no_workers");
    wire_free(rep);
}
END_TEST

START_TEST(test_list_models_names_the_model_and_its_policy)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__ListModelsRequest lm = LLM__LIST_MODELS_REQUEST__INIT;
    env.body_case = LLM__ENVELOPE__BODY_LIST_MODELS;
    env.list_models = &lm;
    Llm__Envelope *rep = handle(&env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_LIST_MODELS_REPLY);
    ck_assert_uint_eq(rep->list_models_reply->n_models, 1);
    const Llm__ModelInfo *mi = rep->list_models_reply->models[0];
    ck_assert_str_eq(mi->name, "synthetic");
    ck_assert_str_eq(mi->policy, "prefix");
    ck_assert_uint_eq(mi->workers_ready, 0);
    ck_assert_uint_eq(mi->workers_total, 0);
    wire_free(rep);
}
END_TEST

START_TEST(test_cluster_status_with_no_workers)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__ClusterStatusRequest cs = LLM__CLUSTER_STATUS_REQUEST__INIT;
    env.body_case = LLM__ENVELOPE__BODY_CLUSTER_STATUS;
    env.cluster_status = &cs;
    Llm__Envelope *rep = handle(&env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_CLUSTER_STATUS_REPLY);
    const Llm__ClusterStatusReply *r = rep->cluster_status_reply;
    ck_assert_uint_eq(r->n_workers, 0);
    ck_assert_uint_eq(r->n_models, 1);
    ck_assert_str_eq(r->models[0]->name, "synthetic");
    ck_assert_str_eq(r->models[0]->policy, "prefix");
    ck_assert_uint_eq(r->requests_active, 0);
    wire_free(rep);

    // A registered worker shows up with its state and breaker; a stream is counted.
    char err[256] = "";
    reg_load l = {
        .model = "synthetic", .fingerprint = 5, .running = 2, .tp_size = 1, .hashes = no_hashes};
    ck_assert_int_eq(reg_register(reg, "w1", "inproc://w1", &l, llm_now_ms(), err, sizeof(err)),
                     LLM_OK);
    generate_accepted(91);
    rep = handle(&env);
    r = rep->cluster_status_reply;
    ck_assert_uint_eq(r->n_workers, 1);
    ck_assert_str_eq(r->workers[0]->worker_id, "w1");
    ck_assert_str_eq(r->workers[0]->state, "starting");
    ck_assert_str_eq(r->workers[0]->breaker, "closed");
    ck_assert_str_eq(r->workers[0]->model, "synthetic");
    ck_assert(!r->workers[0]->is_static);
    ck_assert_uint_eq(r->workers[0]->load->running, 2);
    ck_assert_uint_eq(r->workers[0]->load->model_fingerprint, 5);
    ck_assert_uint_eq(r->models[0]->workers_total, 1);
    ck_assert_uint_eq(r->requests_active, 1);
    wire_free(rep);
}
END_TEST

START_TEST(test_drain_of_an_unknown_worker_is_enoent)
{
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__DrainRequest dr = LLM__DRAIN_REQUEST__INIT;
    dr.worker_id = "ghost";
    env.request_id = 7;
    env.body_case = LLM__ENVELOPE__BODY_DRAIN;
    env.drain = &dr;
    Llm__Envelope *rep = handle(&env);
    ck_assert_uint_eq(rep->request_id, 7);
    expect_error(rep, LLM_ENOENT, "ghost");
}
END_TEST

START_TEST(test_drain_of_an_unreachable_worker_still_stops_routing_to_it)
{
    char err[256] = "";
    reg_load l = {.model = "synthetic", .fingerprint = 5, .hashes = no_hashes};
    ck_assert_int_eq(
        reg_register(reg, "w1", "inproc://no-one-here", &l, llm_now_ms(), err, sizeof(err)),
        LLM_OK);
    Llm__Envelope env = LLM__ENVELOPE__INIT;
    Llm__DrainRequest dr = LLM__DRAIN_REQUEST__INIT;
    dr.worker_id = "w1";
    env.body_case = LLM__ENVELOPE__BODY_DRAIN;
    env.drain = &dr;
    Llm__Envelope *rep = handle(&env);
    ck_assert_int_eq(rep->body_case, LLM__ENVELOPE__BODY_WORKER_STATUS);
    ck_assert_str_eq(rep->worker_status->worker_id, "w1");
    ck_assert_str_eq(rep->worker_status->state, "draining");
    ck_assert(rep->worker_status->load->draining);
    wire_free(rep);
}
END_TEST

START_TEST(test_stats_are_the_prometheus_text_with_the_request_counters)
{
    char *text = stats_text();
    ck_assert_ptr_nonnull(strstr(text, "llm_coord_requests_total"));
    ck_assert_ptr_nonnull(strstr(text, "llm_coord_rpc_total"));
    ck_assert_ptr_nonnull(strstr(text, "llm_coord_failovers_total"));
    free(text);
    // Refusals and answers are counted by kind.
    gen_req q;
    gen_init(&q, 101, "hi");
    q.g.sampling = NULL;
    expect_error(handle(&q.env), LLM_EINVAL, NULL);
    text = stats_text();
    ck_assert_ptr_nonnull(strstr(text, "llm_coord_requests_total{outcome=\"refused\"} 1"));
    ck_assert_ptr_nonnull(
        strstr(text, "llm_coord_rpc_total{kind=\"generate\",outcome=\"error\"} 1"));
    ck_assert_ptr_nonnull(strstr(text, "llm_coord_rpc_total{kind=\"stats\",outcome=\"ok\"} 1"));
    free(text);
}
END_TEST

START_TEST(test_relay_new_checks_its_options)
{
    char err[256] = "";
    relay *bad = NULL;
    relay_opts o = {.contexts = 0,
                    .max_requests = 1,
                    .max_attempts = 1,
                    .call_timeout_ms = 1,
                    .poll_wait_ms = 1,
                    .finished_ttl_ms = 0,
                    .max_prompt_bytes = 1};
    ck_assert_int_eq(relay_new(reg, &tok, met, &o, &bad, err, sizeof(err)), LLM_EINVAL);
    ck_assert_str_ne(err, "");
    o.contexts = 1;
    o.max_prompt_bytes = 0;
    ck_assert_int_eq(relay_new(reg, &tok, met, &o, &bad, err, sizeof(err)), LLM_EINVAL);
    ck_assert_ptr_null(bad);
    relay_free(NULL);
    relay_close(NULL);
}
END_TEST

Suite *relay_suite(void);

Suite *
relay_suite(void)
{
    Suite *s = suite_create("relay");
    TCase *tc = tcase_create("envelopes");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_malformed_bytes_get_an_eproto_error);
    tcase_add_test(tc, test_a_wrong_version_gets_an_eproto_error);
    tcase_add_test(tc, test_an_empty_envelope_gets_an_eproto_error);
    tcase_add_test(tc, test_a_worker_message_on_the_client_port_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("generate");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_generate_for_an_unknown_model_is_enoent);
    tcase_add_test(tc, test_generate_without_sampling_is_einval);
    tcase_add_test(tc, test_generate_with_too_many_stop_strings_is_einval);
    tcase_add_test(tc, test_generate_with_invalid_utf8_is_einval);
    tcase_add_test(tc, test_chat_messages_need_a_known_role_and_at_least_one_message);
    tcase_add_test(tc, test_an_oversized_prompt_is_erange_and_the_limit_itself_is_fine);
    tcase_add_test(tc, test_prompt_ids_must_be_present_and_bounded);
    tcase_add_test(tc, test_a_client_set_resume_ids_is_einval);
    suite_add_tcase(s, tc);

    tc = tcase_create("streams");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_a_valid_generate_without_workers_is_accepted_then_unavailable);
    tcase_add_test(tc, test_an_accepted_reply_without_tokens_is_well_defined);
    tcase_add_test(tc, test_the_coordinator_assigns_an_id_when_the_client_sends_none);
    tcase_add_test(tc, test_an_id_in_use_is_einval);
    tcase_add_test(tc, test_next_and_cancel_of_an_unknown_id_are_enoent);
    tcase_add_test(tc, test_a_cursor_past_the_stream_is_einval);
    tcase_add_test(tc, test_cancel_of_a_known_request_is_accepted);
    tcase_add_test(tc, test_finished_streams_leave_after_their_ttl);
    tcase_add_test(tc, test_the_table_limit_is_ebusy_until_streams_leave);
    suite_add_tcase(s, tc);

    tc = tcase_create("cluster");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_health_without_workers_is_not_ready);
    tcase_add_test(tc, test_list_models_names_the_model_and_its_policy);
    tcase_add_test(tc, test_cluster_status_with_no_workers);
    tcase_add_test(tc, test_drain_of_an_unknown_worker_is_enoent);
    tcase_add_test(tc, test_drain_of_an_unreachable_worker_still_stops_routing_to_it);
    tcase_add_test(tc, test_stats_are_the_prometheus_text_with_the_request_counters);
    tcase_add_test(tc, test_relay_new_checks_its_options);
    suite_add_tcase(s, tc);
    return s;
}
