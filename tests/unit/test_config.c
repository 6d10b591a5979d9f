/*
 * test_config.c - cfg_load precedence, every type from file and flags, every error path,
 * cfg_dump round trips, positional arguments. Leaks are caught by the ASan build.
 */
#include "config.h"
#include "llm_err.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// The settings of an imaginary binary, one per type plus ranges and a group.
typedef struct {
    char *model;
    int64_t threads;
    int64_t kv_bytes;
    double temperature;
    bool mlock;
    bool warm;
    cfg_strlist stop;
    int64_t block_tokens; // kv.block_tokens
    char *redis;          // kv.redis_addr
} t_config;

static t_config tc;

static const cfg_opt t_opts[] = {
    {"model", CFG_STR, &tc.model, "models/smol.gguf", 0, 0, "GGUF file"},
    {"threads", CFG_INT, &tc.threads, "4", 1, 256, "compute threads"},
    {"kv_bytes", CFG_INT, &tc.kv_bytes, "0", 0, 0, "KV memory in bytes (no range)"},
    {"temperature", CFG_DOUBLE, &tc.temperature, "0.7", 0, 2, "sampling temperature"},
    {"mlock", CFG_BOOL, &tc.mlock, NULL, 0, 0, "lock weights in RAM"},
    {"warm", CFG_BOOL, &tc.warm, "true", 0, 0, "warm the page cache"},
    {"stop", CFG_STRLIST, &tc.stop, "</s>", 0, 0, "stop string"},
    {"kv.block_tokens", CFG_INT, &tc.block_tokens, "16", 1, 1024, "tokens per KV block"},
    {"kv.redis_addr", CFG_STR, &tc.redis, NULL, 0, 0, "Redis address"},
};
static const int t_n = (int)(sizeof(t_opts) / sizeof(t_opts[0]));

static char t_err[512];
static char t_path[256];

static void
t_teardown(void)
{
    cfg_free(t_opts, t_n);
    if (t_path[0])
        unlink(t_path);
    t_path[0] = '\0';
}

// t_file writes text to a fresh temporary file and returns its path.
static const char *
t_file(const char *text)
{
    const char *dir = getenv("TMPDIR");
    snprintf(t_path, sizeof(t_path), "%s/llm-cfg-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(t_path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return t_path;
}

// t_load runs cfg_load on a NULL-terminated list of arguments after "prog".
#define T_LOAD(...) t_load((const char *[]){"prog", __VA_ARGS__, NULL})
static int
t_load(const char **args)
{
    int argc = 0;
    cfg_free(t_opts, t_n); // a previous load in the same test owns memory
    while (args[argc])
        argc++;
    t_err[0] = '\0';
    return cfg_load(t_opts, t_n, argc, (char **)args, t_err, sizeof(t_err));
}

static int
t_load_file(const char *text)
{
    return T_LOAD("--config", t_file(text));
}

static void
t_assert_err_has(const char *needle)
{
    if (!strstr(t_err, needle))
        ck_abort_msg("error '%s' does not mention '%s'", t_err, needle);
}

// ---- values ----------------------------------------------------------------------------

START_TEST(test_defaults_fill_every_type)
{
    ck_assert_int_eq(t_load((const char *[]){"prog", NULL}), LLM_OK);
    ck_assert_str_eq(tc.model, "models/smol.gguf");
    ck_assert_int_eq(tc.threads, 4);
    ck_assert_int_eq(tc.kv_bytes, 0);
    ck_assert(fabs(tc.temperature - 0.7) < 1e-12);
    ck_assert(!tc.mlock);
    ck_assert(tc.warm);
    ck_assert_int_eq(tc.stop.n, 1);
    ck_assert_str_eq(tc.stop.items[0], "</s>");
    ck_assert_int_eq(tc.block_tokens, 16);
    ck_assert_ptr_nonnull(tc.redis); // a NULL default is "", never NULL
    ck_assert_str_eq(tc.redis, "");
}
END_TEST

START_TEST(test_file_sets_every_type_and_flags_win)
{
    const char *path = t_file("# comment\n"
                              "model = \"a.gguf\";\n"
                              "threads = 8;\n"
                              "kv_bytes = 5000000000;  // beyond 32 bits, no L suffix\n"
                              "temperature = 1;        /* an int where a double goes */\n"
                              "mlock = true;\n"
                              "warm = false;\n"
                              "stop = [\"a\", \"b\"];\n"
                              "kv = { block_tokens = 32; redis_addr = \"127.0.0.1:6379\"; };\n");
    ck_assert_int_eq(T_LOAD("--config", path), LLM_OK);
    ck_assert_str_eq(tc.model, "a.gguf");
    ck_assert_int_eq(tc.threads, 8);
    ck_assert_int_eq(tc.kv_bytes, 5000000000LL);
    ck_assert(tc.temperature == 1.0);
    ck_assert(tc.mlock && !tc.warm);
    ck_assert_int_eq(tc.stop.n, 2);
    ck_assert_str_eq(tc.stop.items[1], "b");
    ck_assert_int_eq(tc.block_tokens, 32);
    ck_assert_str_eq(tc.redis, "127.0.0.1:6379");
    cfg_free(t_opts, t_n);

    // Flags override the file whatever their position relative to --config.
    ck_assert_int_eq(T_LOAD("--threads", "2", "--config", path, "--model=b.gguf", "--no-mlock",
                            "--kv.block-tokens", "64", "--stop", "x"),
                     LLM_OK);
    ck_assert_int_eq(tc.threads, 2);
    ck_assert_str_eq(tc.model, "b.gguf");
    ck_assert(!tc.mlock);
    ck_assert_int_eq(tc.block_tokens, 64);
    ck_assert_int_eq(tc.stop.n, 1); // flags replace the file's items
    ck_assert_str_eq(tc.stop.items[0], "x");
    ck_assert_int_eq(tc.kv_bytes, 5000000000LL); // untouched by flags: the file's value
}
END_TEST

START_TEST(test_strlist_from_repeated_flags_list_array_and_string)
{
    ck_assert_int_eq(T_LOAD("--stop", "a", "--stop=b", "--stop", ""), LLM_OK);
    ck_assert_int_eq(tc.stop.n, 3);
    ck_assert_str_eq(tc.stop.items[0], "a");
    ck_assert_str_eq(tc.stop.items[1], "b");
    ck_assert_str_eq(tc.stop.items[2], "");
    cfg_free(t_opts, t_n);
    ck_assert_ptr_null(tc.stop.items);

    ck_assert_int_eq(t_load_file("stop = (\"x\", \"y\", \"z\");"), LLM_OK); // a list
    ck_assert_int_eq(tc.stop.n, 3);
    ck_assert_str_eq(tc.stop.items[2], "z");
    t_teardown();
    ck_assert_int_eq(t_load_file("stop = [];"), LLM_OK);
    ck_assert_int_eq(tc.stop.n, 0);
    t_teardown();
    ck_assert_int_eq(t_load_file("stop = \"only\";"), LLM_OK);
    ck_assert_int_eq(tc.stop.n, 1);
    ck_assert_str_eq(tc.stop.items[0], "only");
    t_teardown();
    ck_assert_int_eq(t_load_file("stop = (\"x\", 3);"), LLM_EINVAL);
    t_assert_err_has("stop: item 1 is an integer");
}
END_TEST

START_TEST(test_equals_form_and_negative_values)
{
    ck_assert_int_eq(T_LOAD("--threads=16", "--model=x=y", "--kv-bytes", "-5", "--temperature=0"),
                     LLM_OK);
    ck_assert_int_eq(tc.threads, 16);
    ck_assert_str_eq(tc.model, "x=y"); // only the first '=' splits
    ck_assert_int_eq(tc.kv_bytes, -5); // a value may start with '-'
    ck_assert(tc.temperature == 0.0);
    cfg_free(t_opts, t_n);
    ck_assert_int_eq(T_LOAD("--model="), LLM_OK);
    ck_assert_str_eq(tc.model, "");
}
END_TEST

START_TEST(test_bool_forms)
{
    ck_assert_int_eq(T_LOAD("--mlock", "--no-warm"), LLM_OK);
    ck_assert(tc.mlock && !tc.warm);
    const char *truths[] = {"true", "1", "yes", "on"}, *lies[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        char a[32], b[32];
        snprintf(a, sizeof(a), "--mlock=%s", truths[i]);
        snprintf(b, sizeof(b), "--warm=%s", lies[i]);
        ck_assert_int_eq(T_LOAD(a, b), LLM_OK);
        ck_assert(tc.mlock && !tc.warm);
    }
    ck_assert_int_eq(T_LOAD("--no-mlock", "--mlock"), LLM_OK); // the last one wins
    ck_assert(tc.mlock);
    ck_assert_int_eq(T_LOAD("--mlock=maybe"), LLM_EINVAL);
    t_assert_err_has("--mlock");
    t_assert_err_has("maybe");
    ck_assert_int_eq(T_LOAD("--no-mlock=true"), LLM_EINVAL);
    t_assert_err_has("--no-mlock");
    ck_assert_int_eq(T_LOAD("--no-threads"), LLM_EINVAL); // --no- only for booleans
    t_assert_err_has("--no-threads");
}
END_TEST

START_TEST(test_bool_flag_never_takes_the_next_argument)
{
    // `--mlock false` is the flag and then a stray argument, not mlock=false.
    ck_assert_int_eq(T_LOAD("--mlock", "false"), LLM_EINVAL);
    t_assert_err_has("unexpected argument 'false'");
}
END_TEST

// ---- errors ----------------------------------------------------------------------------

START_TEST(test_unknown_key_in_file_names_key_line_and_suggestion)
{
    ck_assert_int_eq(t_load_file("threads = 2;\n\nthraeds = 3;\n"), LLM_EINVAL);
    t_assert_err_has(":3: unknown setting 'thraeds'");
    t_assert_err_has("did you mean 'threads'?");
    t_assert_err_has(t_path);
    ck_assert_ptr_null(tc.model); // fields are reset on failure
    t_teardown();
    ck_assert_int_eq(t_load_file("kv = { block_tokens = 8; colour = 1; };"), LLM_EINVAL);
    t_assert_err_has("unknown setting 'kv.colour'");
    t_teardown();
    ck_assert_int_eq(t_load_file("nothing = { a = 1; };"), LLM_EINVAL);
    t_assert_err_has("unknown setting 'nothing'");
}
END_TEST

START_TEST(test_unknown_flag_names_flag)
{
    ck_assert_int_eq(T_LOAD("--threads", "2", "--thread", "3"), LLM_EINVAL);
    t_assert_err_has("unknown flag --thread");
    t_assert_err_has("did you mean --threads?");
    ck_assert_int_eq(T_LOAD("--kv_bytes=1"), LLM_EINVAL); // flags use dashes
    t_assert_err_has("did you mean --kv-bytes?");
    ck_assert_int_eq(T_LOAD("-t"), LLM_EINVAL);
    t_assert_err_has("unknown flag -t");
    ck_assert_int_eq(T_LOAD("--zzzzzzzz"), LLM_EINVAL);
    t_assert_err_has("unknown flag --zzzzzzzz");
    ck_assert(!strstr(t_err, "did you mean"));
}
END_TEST

START_TEST(test_wrong_types_in_file)
{
    struct {
        const char *text, *want;
    } cases[] = {
        {"threads = 2.0;", "threads: expected an integer, got a float"},
        {"threads = \"2\";", "threads: expected an integer, got a string"},
        {"model = 3;", "model: expected a string, got an integer"},
        {"mlock = 1;", "mlock: expected true or false, got an integer"},
        {"temperature = \"hot\";", "temperature: expected a number, got a string"},
        {"stop = 5;", "stop: expected a string or a list of strings, got an integer"},
        {"kv = 5;", "unknown setting 'kv'"},
        {"kv = { block_tokens = { x = 1; }; };",
         "kv.block_tokens: expected an integer, got a group"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(t_load_file(cases[i].text), LLM_EINVAL);
        t_assert_err_has(cases[i].want);
        t_assert_err_has(":1:");
        t_teardown();
    }
}
END_TEST

START_TEST(test_out_of_range_from_flag_and_file)
{
    ck_assert_int_eq(T_LOAD("--threads", "0"), LLM_EINVAL);
    t_assert_err_has("flag --threads: 0 is out of range [1, 256]");
    ck_assert_int_eq(T_LOAD("--threads", "257"), LLM_EINVAL);
    ck_assert_int_eq(T_LOAD("--threads", "1", "--threads", "256"), LLM_OK); // both edges
    ck_assert_int_eq(tc.threads, 256);
    ck_assert_int_eq(T_LOAD("--temperature", "2.0000001"), LLM_EINVAL);
    t_assert_err_has("--temperature");
    ck_assert_int_eq(T_LOAD("--kv-bytes", "-9223372036854775808"), LLM_OK); // no range: all
    ck_assert_int_eq(tc.kv_bytes, INT64_MIN);
    cfg_free(t_opts, t_n);
    ck_assert_int_eq(t_load_file("\nkv = {\n  block_tokens = 2000;\n};"), LLM_EINVAL);
    t_assert_err_has(":3: kv.block_tokens: 2000 is out of range [1, 1024]");
}
END_TEST

START_TEST(test_numbers_are_parsed_strictly)
{
    const char *bad_ints[] = {"12x", "", " 3", "3 ", "0x10", "1.0", "1e3"};
    for (size_t i = 0; i < sizeof(bad_ints) / sizeof(bad_ints[0]); i++) {
        ck_assert_int_eq(T_LOAD("--threads", bad_ints[i]), LLM_EINVAL);
        t_assert_err_has("flag --threads");
        t_assert_err_has("is not an integer");
    }
    const char *bad_doubles[] = {"0.5x", "", "nan", "inf", "1e999", "--1"};
    for (size_t i = 0; i < sizeof(bad_doubles) / sizeof(bad_doubles[0]); i++) {
        ck_assert_int_eq(T_LOAD("--temperature", bad_doubles[i]), LLM_EINVAL);
        t_assert_err_has("flag --temperature");
    }
    ck_assert_int_eq(T_LOAD("--kv-bytes", "99999999999999999999"), LLM_EINVAL);
    t_assert_err_has("flag --kv-bytes: 99999999999999999999 does not fit in a 64-bit integer");
    ck_assert_int_eq(T_LOAD("--kv-bytes", "9223372036854775807"), LLM_OK);
    ck_assert_int_eq(tc.kv_bytes, INT64_MAX);
}
END_TEST

START_TEST(test_file_integer_overflow_is_an_error_not_a_truncation)
{
    ck_assert_int_eq(t_load_file("model = \"99999999999999999999\";\n"
                                 "kv_bytes = 99999999999999999999;"),
                     LLM_EINVAL);
    t_assert_err_has(":2: integer 99999999999999999999 does not fit in 64 bits");
    t_teardown();
    // Literals inside strings and comments are left alone; negatives and hex work.
    ck_assert_int_eq(t_load_file("# 99999999999999999999\n"
                                 "model = \"5000000000 // not a comment\";\n"
                                 "kv_bytes = -5000000000;\n"
                                 "threads = 0x10;"),
                     LLM_OK);
    ck_assert_str_eq(tc.model, "5000000000 // not a comment");
    ck_assert_int_eq(tc.kv_bytes, -5000000000LL);
    ck_assert_int_eq(tc.threads, 16);
    t_teardown();
    ck_assert_int_eq(t_load_file("kv_bytes = 0xFFFFFFFF; temperature = .5;"), LLM_OK);
    ck_assert_int_eq(tc.kv_bytes, 0xFFFFFFFFLL);
    ck_assert(tc.temperature == 0.5);
}
END_TEST

START_TEST(test_missing_flag_value_at_end)
{
    ck_assert_int_eq(T_LOAD("--mlock", "--threads"), LLM_EINVAL);
    t_assert_err_has("flag --threads: missing value");
    ck_assert_int_eq(T_LOAD("--config"), LLM_EINVAL);
    t_assert_err_has("--config: missing file name");
}
END_TEST

START_TEST(test_syntax_error_reports_file_and_line)
{
    ck_assert_int_eq(t_load_file("threads = 2;\nmodel = \"x\"\nmlock = ;\n"), LLM_EINVAL);
    char want[300];
    snprintf(want, sizeof(want), "%s:3:", t_path);
    t_assert_err_has(want);
    t_assert_err_has("syntax error");
    t_teardown();
    ck_assert_int_eq(t_load_file("@include \"other.cfg\"\n"), LLM_EINVAL);
    t_assert_err_has("@include is not supported");
}
END_TEST

START_TEST(test_missing_file_is_an_io_error)
{
    ck_assert_int_eq(T_LOAD("--config", "/nonexistent/llm.cfg"), LLM_EIO);
    t_assert_err_has("/nonexistent/llm.cfg");
    ck_assert_int_eq(T_LOAD("--config=a.cfg", "--config=b.cfg"), LLM_EINVAL);
    t_assert_err_has("--config given twice");
}
END_TEST

START_TEST(test_help_returns_canceled_even_after_a_bad_flag)
{
    ck_assert_int_eq(T_LOAD("--help"), LLM_ECANCELED);
    ck_assert_int_eq(T_LOAD("--threads", "2", "-h"), LLM_ECANCELED);
    ck_assert_int_eq(T_LOAD("--bogus", "--help"), LLM_ECANCELED);
    ck_assert_int_eq(T_LOAD("--config", "/nonexistent", "--help"), LLM_ECANCELED);
    ck_assert_ptr_null(tc.model); // nothing loaded

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_usage(f, "llm-test", "Runs tests.", t_opts, t_n);
    fclose(f);
    ck_assert(strstr(buf, "usage: llm-test [options]\nRuns tests.\n"));
    ck_assert(strstr(buf, "--threads N"));
    ck_assert(strstr(buf, "compute threads (default 4, 1..256)"));
    ck_assert(strstr(buf, "--[no-]mlock"));
    ck_assert(strstr(buf, "--kv.block-tokens N"));
    ck_assert(strstr(buf, "--stop TEXT"));
    ck_assert(strstr(buf, "repeatable"));
    ck_assert(strstr(buf, "--config FILE"));
    ck_assert(strstr(buf, "-h, --help"));
    free(buf);
}
END_TEST

START_TEST(test_bad_default_is_reported)
{
    int64_t v;
    cfg_opt bad[] = {{"n", CFG_INT, &v, "ten", 0, 0, "n"}};
    ck_assert_int_eq(cfg_load(bad, 1, 1, (char *[]){"prog", NULL}, t_err, sizeof(t_err)),
                     LLM_EINVAL);
    t_assert_err_has("default of n: 'ten' is not an integer");
}
END_TEST

// ---- positional arguments --------------------------------------------------------------

START_TEST(test_positionals_refused_or_returned)
{
    ck_assert_int_eq(T_LOAD("--threads", "2", "file.txt"), LLM_EINVAL);
    t_assert_err_has("unexpected argument 'file.txt'");

    const char *args[] = {"prog", "--threads", "2", "a", "-", "b", NULL};
    int first = -1;
    ck_assert_int_eq(
        cfg_load_positional(t_opts, t_n, 6, (char **)args, &first, t_err, sizeof(t_err)), LLM_OK);
    ck_assert_int_eq(first, 3);
    ck_assert_int_eq(tc.threads, 2);
    cfg_free(t_opts, t_n);

    const char *late[] = {"prog", "a", "--threads", "2", NULL};
    ck_assert_int_eq(
        cfg_load_positional(t_opts, t_n, 4, (char **)late, &first, t_err, sizeof(t_err)),
        LLM_EINVAL);
    t_assert_err_has("flag --threads after argument 'a'");

    const char *dd[] = {"prog", "--mlock", "--", "--threads", NULL};
    ck_assert_int_eq(cfg_load_positional(t_opts, t_n, 4, (char **)dd, &first, t_err, sizeof(t_err)),
                     LLM_OK);
    ck_assert_int_eq(first, 3);
    ck_assert(tc.mlock);
    ck_assert_int_eq(tc.threads, 4);
    cfg_free(t_opts, t_n);

    const char *none[] = {"prog", "--mlock", NULL};
    ck_assert_int_eq(
        cfg_load_positional(t_opts, t_n, 2, (char **)none, &first, t_err, sizeof(t_err)), LLM_OK);
    ck_assert_int_eq(first, 2);
}
END_TEST

// ---- dump and free ---------------------------------------------------------------------

START_TEST(test_dump_reloads_to_the_same_values)
{
    ck_assert_int_eq(T_LOAD("--model", "q\"uo\\te\nnew\tline\x01 ", "--threads", "7", "--kv-bytes",
                            "-9223372036854775807", "--temperature", "0.1", "--mlock", "--no-warm",
                            "--stop", "a\"b", "--stop", "", "--kv.block-tokens", "1024",
                            "--kv.redis-addr", "h:1"),
                     LLM_OK);
    t_config before = tc;
    memset(&tc, 0, sizeof(tc)); // the loader below fills tc afresh; `before` keeps the memory

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    // Dump from `before` by pointing a copy of the table at it.
    cfg_opt opts[sizeof(t_opts) / sizeof(t_opts[0])];
    memcpy(opts, t_opts, sizeof(opts));
    opts[0].dst = &before.model;
    opts[1].dst = &before.threads;
    opts[2].dst = &before.kv_bytes;
    opts[3].dst = &before.temperature;
    opts[4].dst = &before.mlock;
    opts[5].dst = &before.warm;
    opts[6].dst = &before.stop;
    opts[7].dst = &before.block_tokens;
    opts[8].dst = &before.redis;
    ck_assert_int_eq(cfg_dump(f, opts, t_n), LLM_OK);
    fclose(f);
    ck_assert(strstr(buf, "kv = {\n    block_tokens = 1024;\n    redis_addr = \"h:1\";\n};\n"));
    ck_assert(strstr(buf, "temperature = 0.1;\n"));
    ck_assert(strstr(buf, "kv_bytes = -9223372036854775807L;\n"));

    ck_assert_int_eq(t_load_file(buf), LLM_OK);
    ck_assert_str_eq(tc.model, before.model);
    ck_assert_int_eq(tc.threads, before.threads);
    ck_assert_int_eq(tc.kv_bytes, before.kv_bytes);
    ck_assert(tc.temperature == before.temperature);
    ck_assert(tc.mlock == before.mlock && tc.warm == before.warm);
    ck_assert_int_eq(tc.stop.n, 2);
    ck_assert_str_eq(tc.stop.items[0], "a\"b");
    ck_assert_str_eq(tc.stop.items[1], "");
    ck_assert_int_eq(tc.block_tokens, 1024);
    ck_assert_str_eq(tc.redis, "h:1");
    cfg_free(opts, t_n);
    free(buf);
}
END_TEST

START_TEST(test_dump_round_trips_awkward_doubles_and_empty_lists)
{
    double vals[] = {0, -0.0, 1, 1e-300, 1.7976931348623157e308, 0.30000000000000004, 2};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        double d = vals[i], back = -1;
        cfg_strlist l = {0};
        cfg_opt o[] = {{"d", CFG_DOUBLE, &d, NULL, 0, 0, "d"},
                       {"l", CFG_STRLIST, &l, NULL, 0, 0, "l"}};
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        ck_assert_int_eq(cfg_dump(f, o, 2), LLM_OK);
        fclose(f);
        o[0].dst = &back;
        const char *path = t_file(buf);
        ck_assert_int_eq(cfg_load(o, 2, 3, (char *[]){"prog", "--config", (char *)path, NULL},
                                  t_err, sizeof(t_err)),
                         LLM_OK);
        ck_assert_msg(back == d && signbit(back) == signbit(d), "%.17g -> %s", d, buf);
        ck_assert_int_eq(l.n, 0);
        cfg_free(o, 2);
        unlink(path);
        free(buf);
    }
}
END_TEST

START_TEST(test_free_releases_and_resets_and_is_idempotent)
{
    ck_assert_int_eq(T_LOAD("--stop", "a", "--stop", "b", "--model", "m"), LLM_OK);
    cfg_free(t_opts, t_n);
    ck_assert_ptr_null(tc.model);
    ck_assert_ptr_null(tc.stop.items);
    ck_assert_int_eq(tc.stop.n, 0);
    ck_assert_int_eq(tc.threads, 0);
    ck_assert(!tc.warm);
    cfg_free(t_opts, t_n);
    cfg_free(NULL, 0);
}
END_TEST

Suite *config_suite(void);

Suite *
config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc_ = tcase_create("values");
    tcase_add_checked_fixture(tc_, NULL, t_teardown);
    tcase_add_test(tc_, test_defaults_fill_every_type);
    tcase_add_test(tc_, test_file_sets_every_type_and_flags_win);
    tcase_add_test(tc_, test_strlist_from_repeated_flags_list_array_and_string);
    tcase_add_test(tc_, test_equals_form_and_negative_values);
    tcase_add_test(tc_, test_bool_forms);
    tcase_add_test(tc_, test_bool_flag_never_takes_the_next_argument);
    suite_add_tcase(s, tc_);

    tc_ = tcase_create("errors");
    tcase_add_checked_fixture(tc_, NULL, t_teardown);
    tcase_add_test(tc_, test_unknown_key_in_file_names_key_line_and_suggestion);
    tcase_add_test(tc_, test_unknown_flag_names_flag);
    tcase_add_test(tc_, test_wrong_types_in_file);
    tcase_add_test(tc_, test_out_of_range_from_flag_and_file);
    tcase_add_test(tc_, test_numbers_are_parsed_strictly);
    tcase_add_test(tc_, test_file_integer_overflow_is_an_error_not_a_truncation);
    tcase_add_test(tc_, test_missing_flag_value_at_end);
    tcase_add_test(tc_, test_syntax_error_reports_file_and_line);
    tcase_add_test(tc_, test_missing_file_is_an_io_error);
    tcase_add_test(tc_, test_help_returns_canceled_even_after_a_bad_flag);
    tcase_add_test(tc_, test_bad_default_is_reported);
    suite_add_tcase(s, tc_);

    tc_ = tcase_create("positional");
    tcase_add_checked_fixture(tc_, NULL, t_teardown);
    tcase_add_test(tc_, test_positionals_refused_or_returned);
    suite_add_tcase(s, tc_);

    tc_ = tcase_create("dump");
    tcase_add_checked_fixture(tc_, NULL, t_teardown);
    tcase_add_test(tc_, test_dump_reloads_to_the_same_values);
    tcase_add_test(tc_, test_dump_round_trips_awkward_doubles_and_empty_lists);
    tcase_add_test(tc_, test_free_releases_and_resets_and_is_idempotent);
    suite_add_tcase(s, tc_);
    return s;
}
