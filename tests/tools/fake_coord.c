/*
 * fake_coord.c - a stand-in coordinator for worker tests: listens on a URL, answers
 * Register / Heartbeat / Deregister with Accepted, and prints one line per message:
 *   register|heartbeat|deregister WORKER_ID ADDRESS running=N waiting=N kv_total=N
 *     kv_used=N fingerprint=HEX hashes=N draining=N
 * to OUT_FILE (flushed per line), after printing "listening URL" on stdout.
 * Usage: fake_coord URL SECONDS OUT_FILE. Runs until SECONDS pass or a signal.
 */
#include "llm_err.h"
#include "wire.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *log_out;

static void
print_load(const char *kind, const char *id, const char *addr, const Llm__WorkerLoad *l)
{
    if (!l) {
        fprintf(log_out, "%s %s %s\n", kind, id, addr);
        return;
    }
    fprintf(log_out,
            "%s %s %s running=%u waiting=%u kv_total=%u kv_used=%u fingerprint=%016llx "
            "hashes=%zu draining=%u\n",
            kind, id, addr, l->running, l->waiting, l->kv_blocks_total, l->kv_blocks_used,
            (unsigned long long)l->model_fingerprint, l->n_prefix_hashes, l->draining);
}

int
main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: fake_coord URL SECONDS OUT_FILE\n");
        return 2;
    }
    int seconds = atoi(argv[2]);
    if (!(log_out = fopen(argv[3], "w"))) {
        fprintf(stderr, "fake_coord: cannot open %s\n", argv[3]);
        return 1;
    }
    nng_socket s;
    int rv;
    if ((rv = nng_rep0_open(&s)) != 0 || (rv = nng_listen(s, argv[1], NULL, 0)) != 0) {
        fprintf(stderr, "fake_coord: %s\n", nng_strerror(rv));
        return 1;
    }
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 100);
    printf("listening %s\n", argv[1]);
    fflush(stdout);
    for (int ticks = 0; ticks < seconds * 10;) {
        void *buf = NULL;
        size_t len = 0;
        if ((rv = nng_recv(s, &buf, &len, NNG_FLAG_ALLOC)) == NNG_ETIMEDOUT) {
            ticks++;
            continue;
        }
        if (rv != 0)
            break;
        Llm__Envelope *e = NULL;
        char err[128];
        int rc = wire_decode(buf, len, &e, err, sizeof(err));
        nng_free(buf, len);
        Llm__Envelope r = LLM__ENVELOPE__INIT;
        Llm__Accepted acc = LLM__ACCEPTED__INIT;
        r.body_case = LLM__ENVELOPE__BODY_ACCEPTED;
        r.accepted = &acc;
        if (rc != LLM_OK) {
            fprintf(log_out, "bad %s\n", err);
        } else if (e->body_case == LLM__ENVELOPE__BODY_REGISTER) {
            print_load("register", e->register_->worker_id, e->register_->address,
                       e->register_->load);
        } else if (e->body_case == LLM__ENVELOPE__BODY_HEARTBEAT) {
            print_load("heartbeat", e->heartbeat->worker_id, "-", e->heartbeat->load);
        } else if (e->body_case == LLM__ENVELOPE__BODY_DEREGISTER) {
            print_load("deregister", e->deregister->worker_id, "-", NULL);
        } else {
            fprintf(log_out, "other %s\n", wire_body_name(e->body_case));
        }
        fflush(log_out);
        wire_free(e);
        uint8_t *out;
        size_t out_len;
        if (wire_pack(&r, &out, &out_len) == LLM_OK) {
            nng_send(s, out, out_len, 0);
            free(out);
        }
    }
    nng_close(s);
    fclose(log_out);
    return 0;
}
