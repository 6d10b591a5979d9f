/*
 * fake_worker.c - a stand-in worker for coordinator tests: sends one membership message
 * (Register, Heartbeat or Deregister) with the given fields to a coordinator's registration
 * URL and prints the reply as one line, the way `llmctl raw` does:
 *   accepted | <body name> | error CODE MESSAGE
 * Usage: fake_worker URL register|heartbeat|deregister WORKER_ID [ADDRESS [MODEL [FP]]]
 * ADDRESS (Register only) and MODEL (the load's model name) default to empty, FP (the
 * load's model fingerprint, hex) to 0. It lets a test play a worker that lies: registers
 * twice, names a model nobody serves or the wrong weights, heartbeats without registering.
 * Exit status: 0 a reply came (whatever it said), 1 none did, 2 usage.
 */
#include "llm_err.h"
#include "wire.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
main(int argc, char **argv)
{
    if (argc < 4 || argc > 7) {
        fprintf(stderr, "usage: fake_worker URL register|heartbeat|deregister WORKER_ID "
                        "[ADDRESS [MODEL [FINGERPRINT]]]\n");
        return 2;
    }
    const char *url = argv[1], *kind = argv[2], *id = argv[3];
    Llm__Envelope env = LLM__ENVELOPE__INIT, *rep = NULL;
    Llm__WorkerLoad ld = LLM__WORKER_LOAD__INIT;
    Llm__Register reg = LLM__REGISTER__INIT;
    Llm__Heartbeat hb = LLM__HEARTBEAT__INIT;
    Llm__Deregister dr = LLM__DEREGISTER__INIT;
    ld.model = (char *)(argc > 5 ? argv[5] : "");
    if (argc > 6) {
        char *end;
        ld.model_fingerprint = strtoull(argv[6], &end, 16);
        if (!argv[6][0] || *end) {
            fprintf(stderr, "fake_worker: fingerprint '%s' is not hex\n", argv[6]);
            return 2;
        }
    }
    ld.kv_blocks_total = 64;
    ld.block_tokens = 16;
    ld.tp_size = 1;
    if (strcmp(kind, "register") == 0) {
        reg.worker_id = (char *)id;
        reg.address = (char *)(argc > 4 ? argv[4] : "");
        reg.load = &ld;
        env.body_case = LLM__ENVELOPE__BODY_REGISTER;
        env.register_ = &reg;
    } else if (strcmp(kind, "heartbeat") == 0) {
        hb.worker_id = (char *)id;
        hb.load = &ld;
        env.body_case = LLM__ENVELOPE__BODY_HEARTBEAT;
        env.heartbeat = &hb;
    } else if (strcmp(kind, "deregister") == 0) {
        dr.worker_id = (char *)id;
        env.body_case = LLM__ENVELOPE__BODY_DEREGISTER;
        env.deregister = &dr;
    } else {
        fprintf(stderr, "fake_worker: unknown kind '%s'\n", kind);
        return 2;
    }
    nng_socket s;
    int rv;
    if ((rv = nng_req0_open(&s)) != 0 || (rv = nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
        fprintf(stderr, "fake_worker: %s: %s\n", url, nng_strerror(rv));
        return 1;
    }
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 5000);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
    char err[256] = "";
    int rc = wire_call(s, &env, &rep, err, sizeof(err));
    nng_close(s);
    if (rc != LLM_OK) {
        fprintf(stderr, "fake_worker: %s: %s\n", url, err[0] ? err : llm_strerror(rc));
        return 1;
    }
    if (rep->body_case == LLM__ENVELOPE__BODY_ERROR)
        printf("error %u %s\n", rep->error->code, rep->error->message);
    else
        printf("%s\n", wire_body_name(rep->body_case));
    wire_free(rep);
    return 0;
}
