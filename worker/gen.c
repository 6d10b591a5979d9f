/*
 * gen.c - generation loop and streaming detokenizer.
 */
#include "gen.h"

#include "llm_err.h"
#include "llm_time.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

const char *
gen_finish_name(gen_finish f)
{
    return f == GEN_FINISH_STOP ? "stop" : f == GEN_FINISH_LENGTH ? "length" : "none";
}

int
gen_text_init(gen_text *t, const char *const *stop, int n_stop)
{
    memset(t, 0, sizeof(*t));
    if (n_stop < 0 || n_stop > GEN_MAX_STOP)
        return LLM_EINVAL;
    for (int i = 0; i < n_stop; i++) {
        size_t n = strlen(stop[i]);
        if (n == 0 || n > GEN_MAX_STOP_LEN)
            return LLM_EINVAL;
        t->stop[i] = stop[i];
        t->stop_len[i] = n;
    }
    t->n_stop = n_stop;
    return LLM_OK;
}

/* Bytes at the end of s[0..n) that begin a UTF-8 character not yet complete. */
static size_t
utf8_incomplete_tail(const char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xc0) == 0x80)
            continue; // continuation byte: keep looking for the lead
        size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return need > back && c >= 0xc0 && c < 0xf8 ? back : 0;
    }
    return 0;
}

/* Longest suffix of s[0..n) that is a proper prefix of some stop string. */
static size_t
stop_prefix_tail(const gen_text *t, const char *s, size_t n)
{
    size_t best = 0;
    for (int i = 0; i < t->n_stop; i++) {
        size_t max = t->stop_len[i] - 1 < n ? t->stop_len[i] - 1 : n;
        for (size_t k = max; k > best; k--) {
            if (memcmp(s + n - k, t->stop[i], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

/* sanitize copies s[0..n) to out, replacing each byte that does not start a complete,
 * valid UTF-8 sequence with U+FFFD: a model can emit any bytes, but what leaves the
 * engine is text. out must hold 3 * n bytes. Returns the bytes written. */
static size_t
sanitize(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        if (len <= n - i && utf8_valid(s + i, len, NULL)) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    return o;
}

static int
release(gen_text *t, size_t n, gen_text_fn cb, void *ctx)
{
    int rc = LLM_OK;
    char out[3 * sizeof(t->pending)];
    if (n > 0 && cb && cb(ctx, out, sanitize(t->pending, n, out)) != 0)
        rc = LLM_ECANCELED;
    memmove(t->pending, t->pending + n, t->n_pending - n);
    t->n_pending -= n;
    return rc;
}

int
gen_text_push(gen_text *t, const char *bytes, size_t len, gen_text_fn cb, void *ctx, bool *stopped)
{
    *stopped = false;
    while (len > 0) {
        // Feed in pieces that fit; a token is normally a few bytes, but never trust it.
        size_t room = sizeof(t->pending) - t->n_pending;
        size_t n = len < room ? len : room;
        memcpy(t->pending + t->n_pending, bytes, n);
        t->n_pending += n;
        bytes += n;
        len -= n;

        size_t cut = t->n_pending;
        for (int i = 0; i < t->n_stop; i++) {
            for (size_t at = 0; at + t->stop_len[i] <= t->n_pending; at++) {
                if (at < cut && memcmp(t->pending + at, t->stop[i], t->stop_len[i]) == 0) {
                    cut = at;
                    break;
                }
            }
        }
        if (cut < t->n_pending) {
            *stopped = true;
            int rc = release(t, cut, cb, ctx);
            t->n_pending = 0;
            return rc;
        }
        size_t hold = stop_prefix_tail(t, t->pending, t->n_pending);
        size_t hold_utf8 = utf8_incomplete_tail(t->pending, t->n_pending);
        if (hold_utf8 > hold)
            hold = hold_utf8;
        int rc = release(t, t->n_pending - hold, cb, ctx);
        if (rc != LLM_OK)
            return rc;
    }
    return LLM_OK;
}

int
gen_text_flush(gen_text *t, gen_text_fn cb, void *ctx)
{
    return release(t, t->n_pending, cb, ctx);
}

void
gen_result_fini(gen_result *r)
{
    if (!r)
        return;
    free(r->ids);
    r->ids = NULL;
    r->n_ids = 0;
}

int
gen_run(const model *m, model_state *s, model_kv *kv, pool *p, samp_ctx *sc, const int32_t *prompt,
        int n_prompt, int max_step_tokens, const gen_params *gp, gen_text_fn cb, void *cb_ctx,
        float *prompt_logits, gen_result *out)
{
    const model_config *c = model_get_config(m);
    const tok_vocab *v = model_get_vocab(m);
    memset(out, 0, sizeof(*out));
    if (n_prompt < 1 || gp->max_tokens < 0 || max_step_tokens < 1)
        return LLM_EINVAL;
    int cap = model_kv_capacity(kv) < c->ctx_len ? model_kv_capacity(kv) : c->ctx_len;
    if (n_prompt > cap)
        return LLM_ERANGE;
    gen_text text;
    int rc = gen_text_init(&text, gp->stop, gp->n_stop);
    if (rc != LLM_OK)
        return rc;
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    out->ids = malloc(sizeof(int32_t) * (size_t)(gp->max_tokens > 0 ? gp->max_tokens : 1));
    if (!logits || !out->ids) {
        free(logits);
        gen_result_fini(out);
        return LLM_ENOMEM;
    }

    uint64_t t0 = llm_now_ns();
    for (int pos = 0; pos < n_prompt && rc == LLM_OK; pos += max_step_tokens) {
        int n = n_prompt - pos < max_step_tokens ? n_prompt - pos : max_step_tokens;
        rc = model_forward(m, s, kv, prompt + pos, n, pos, p, NULL, NULL,
                           pos + n == n_prompt ? logits : NULL);
    }
    out->prefill_ns = llm_now_ns() - t0;
    if (rc == LLM_OK && prompt_logits)
        memcpy(prompt_logits, logits, sizeof(float) * (size_t)c->vocab_size);

    t0 = llm_now_ns();
    int pos = n_prompt;
    char piece[256];
    while (rc == LLM_OK && out->finish == GEN_FINISH_NONE) {
        if (out->n_ids == gp->max_tokens || pos >= cap) {
            out->finish = GEN_FINISH_LENGTH;
            break;
        }
        int32_t id = samp_sample(sc, &gp->samp, logits, pos);
        out->ids[out->n_ids++] = id;
        if (tok_is_eog(v, id)) {
            out->finish = GEN_FINISH_STOP;
            break;
        }
        size_t len = 0;
        bool stopped = false;
        rc = tok_token_bytes(v, id, false, piece, sizeof(piece), &len);
        if (rc == LLM_ERANGE) {
            // A token longer than the stack buffer: rare, so pay for it only then.
            char *big = malloc(len);
            rc = big ? tok_token_bytes(v, id, false, big, len, &len) : LLM_ENOMEM;
            if (rc == LLM_OK)
                rc = gen_text_push(&text, big, len, cb, cb_ctx, &stopped);
            free(big);
        } else if (rc == LLM_OK) {
            rc = gen_text_push(&text, piece, len, cb, cb_ctx, &stopped);
        }
        if (rc != LLM_OK)
            break;
        if (stopped) {
            out->finish = GEN_FINISH_STOP;
            break;
        }
        if (out->n_ids < gp->max_tokens && pos + 1 < cap)
            rc = model_forward(m, s, kv, &id, 1, pos, p, NULL, NULL, logits);
        pos++;
    }
    if (rc == LLM_OK)
        rc = gen_text_flush(&text, cb, cb_ctx);
    out->decode_ns = llm_now_ns() - t0;
    free(logits);
    if (rc != LLM_OK)
        gen_result_fini(out);
    return rc;
}
