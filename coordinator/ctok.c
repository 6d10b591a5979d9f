/*
 * ctok.c - the coordinator's tokenizer: a GGUF vocabulary or the synthetic engine's.
 */
#include "ctok.h"

#include "engine.h"
#include "gguf.h"
#include "llm_err.h"

#include <stdlib.h>
#include <string.h>

struct ctok {
    tok_vocab *vocab; // GGUF tokenizer, or NULL
    engine *synth;    // the synthetic engine (its encode), or NULL
};

int
ctok_new(const char *spec, ctok **out, char *err, size_t err_len)
{
    ctok *t = calloc(1, sizeof(*t));
    if (!t)
        return LLM_ENOMEM;
    int rc;
    if (strcmp(spec, "synthetic") == 0) {
        // Only encode is used; the sizes just have to be valid.
        engine_synth_opts so = {.ctx_len = 16, .n_blocks = 1, .max_step_tokens = 1};
        rc = engine_synthetic_new(&so, &t->synth, err, err_len);
    } else {
        gguf_file *f = NULL;
        gguf_open_opts go = {0};
        rc = gguf_open(spec, &go, &f, err, err_len);
        if (rc == LLM_OK)
            rc = tok_vocab_load(f, &t->vocab, err, err_len);
        gguf_close(f); // the vocabulary keeps copies
    }
    if (rc != LLM_OK) {
        ctok_free(t);
        return rc;
    }
    *out = t;
    return LLM_OK;
}

void
ctok_free(ctok *t)
{
    if (!t)
        return;
    tok_vocab_free(t->vocab);
    engine_free(t->synth);
    free(t);
}

int
ctok_encode(const ctok *t, const char *text, const tok_chat_msg *msgs, size_t n_msgs, int32_t **ids,
            size_t *n_ids, char *err, size_t err_len)
{
    if (t->synth)
        return t->synth->encode(t->synth, text, msgs, n_msgs, ids, n_ids, err, err_len);
    int rc = tok_prompt(t->vocab, text, msgs, n_msgs, ids, n_ids);
    if (rc == LLM_ENOTSUP)
        llm_errf(err, err_len, "the model's chat template is not supported");
    return rc;
}
