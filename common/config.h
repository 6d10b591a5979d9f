/*
 * config.h - one settings layer for every binary: a table, a libconfig file, flags.
 *
 * A binary declares each setting once, in a static cfg_opt table that points at the
 * fields of its own config struct. cfg_load fills those fields from three sources, each
 * overriding the one before: the table's defaults, the libconfig file named by
 * `--config FILE`, then the other command-line flags. Everything that does not fit the
 * table is an error with one line naming the setting and where it came from: unknown
 * keys (typos) in the file, unknown flags, wrong types, out-of-range numbers, trailing
 * junk, overflow. docs/config.md describes the format for operators.
 *
 * It deliberately does not: reload at run time, read environment variables, support
 * short options other than -h, or validate relations between settings (the binary
 * checks "min <= max" style rules after cfg_load returns).
 */
#ifndef LLM_COMMON_CONFIG_H
#define LLM_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    CFG_STR,     // dst: char **, a malloc'ed NUL-terminated copy (never NULL after cfg_load)
    CFG_INT,     // dst: int64_t *
    CFG_DOUBLE,  // dst: double *, always finite
    CFG_BOOL,    // dst: bool *
    CFG_STRLIST, // dst: cfg_strlist *
} cfg_type;

/* One setting. `name` is the key in the file and, with underscores turned into dashes,
 * the flag: "kv_memory_mb" <-> `kv_memory_mb = 512;` <-> `--kv-memory-mb 512`. A dotted
 * name ("kv.block_tokens") is a key inside a libconfig group (`kv = { block_tokens = 16; };`)
 * and the flag `--kv.block-tokens`. Names are [a-z0-9_.]; "config" and "help" are taken.
 *
 * Range: INT and DOUBLE values must lie in [min, max] when min < max. With min >= max
 * (including the 0, 0 that designated initializers leave) there is no range check, so a
 * table entry only spells out a range when it wants one. Bounds are compared as doubles,
 * which is exact for integers up to 2^53. */
typedef struct {
    const char *name;
    cfg_type type;
    void *dst;        // char ** | int64_t * | double * | bool * | cfg_strlist *, per type
    const char *def;  // default, parsed like a flag value; NULL or "": "", 0, false, no items
    double min, max;  // inclusive range for INT/DOUBLE when min < max
    const char *help; // one line for --help
} cfg_opt;

/* A list of strings: `--stop a --stop b` or `stop = ["a", "b"];` in the file. items[i]
 * are malloc'ed; the array has n entries (items is NULL when n is 0). */
typedef struct {
    char **items;
    int n;
} cfg_strlist;

/* cfg_load fills every opts[i].dst: defaults, then `--config FILE` (when given), then
 * every other flag, later sources winning. It accepts `--name value`, `--name=value`;
 * for booleans `--name` (true), `--no-name` (false) and `--name=true|false|1|0|yes|no|on|off`
 * (a boolean flag never takes the next argument as its value). A repeated STRLIST flag
 * appends; the first STRLIST flag replaces the items the default or file gave. Any other
 * repeated flag: the last one wins. Positional arguments are refused; see
 * cfg_load_positional.
 *
 * Returns LLM_OK; LLM_ECANCELED when --help or -h was given (the caller prints
 * cfg_usage() and exits 0; nothing was loaded); LLM_EINVAL for an unknown flag or key,
 * wrong type, value out of range, unparsable number, missing flag value, a bad default
 * in the table or a file syntax error; LLM_EIO when the file cannot be read; LLM_ENOMEM.
 * On any error one line goes to err[0..err_len) (err may be NULL), naming the setting and
 * its source ("FILE:LINE" or "flag --name"), and every dst is reset as by cfg_free.
 *
 * The dst fields must not own memory when it is called (cfg_free first to load again).
 * Strings are owned by the fields afterwards: release them with cfg_free(). Not
 * thread-safe with respect to the dst fields; otherwise reentrant. */
int cfg_load(const cfg_opt *opts, int n_opts, int argc, char **argv, char *err, size_t err_len);

/* cfg_load_positional is cfg_load for a binary that takes positional arguments. Flags
 * end at the first argument that is not a flag, or after a `--` argument (which is
 * skipped); *first_pos receives the index of the first positional argument in argv
 * (argc when there is none), so they are argv[*first_pos .. argc). A flag after a
 * positional argument is an error (it would be silently taken as an argument), unless
 * `--` came before the positionals. first_pos NULL makes any positional an error, which
 * is exactly cfg_load. */
int cfg_load_positional(const cfg_opt *opts, int n_opts, int argc, char **argv, int *first_pos,
                        char *err, size_t err_len);

/* cfg_free releases the strings cfg_load stored and resets every dst to zero (NULL
 * strings, empty lists, 0, false). Safe on fields that were never loaded if they are
 * zeroed, and safe to call twice. */
void cfg_free(const cfg_opt *opts, int n_opts);

/* cfg_usage prints "usage: PROG [options]", the summary line (may be NULL) and one line
 * per option with its help, default and range, plus --config and --help. */
void cfg_usage(FILE *out, const char *prog, const char *summary, const cfg_opt *opts, int n_opts);

/* cfg_dump writes the current values of the dst fields as a libconfig file that cfg_load
 * reads back to the same values (doubles in shortest round-trip form, strings escaped,
 * dotted names as groups). Returns LLM_OK or LLM_EIO when writing fails. */
int cfg_dump(FILE *out, const cfg_opt *opts, int n_opts);

#endif
