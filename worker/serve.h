/*
 * serve.h - `llm-worker` as a server (`--config FILE` and/or flags; no --prompt):
 * load the engine once, schedule, answer on NNG, announce to the coordinator, and
 * drain on SIGTERM (refuse new work, finish what runs, deregister, exit 0).
 */
#ifndef LLM_WORKER_SERVE_H
#define LLM_WORKER_SERVE_H

/* serve_main returns the process exit code: 0 after a drain, 1 runtime error, 2 usage. */
int serve_main(int argc, char **argv);

#endif
