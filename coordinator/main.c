/*
 * main.c - llm-coordinator: see coord.h and docs/config.md.
 */
#include "coord.h"

int
main(int argc, char **argv)
{
    return coord_main(argc, argv);
}
