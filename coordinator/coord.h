/*
 * coord.h - the llm-coordinator process: its settings table and lifecycle.
 */
#ifndef LLM_COORD_COORD_H
#define LLM_COORD_COORD_H

/* coord_main runs the coordinator until SIGTERM or SIGINT. Exit code: 0 after a clean
 * stop or --help, 2 for bad settings, 1 for a failure to start. */
int coord_main(int argc, char **argv);

#endif
