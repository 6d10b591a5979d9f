/*
 * config.c - the generic loader behind every binary's settings table.
 *
 * Three passes, in precedence order: defaults (parsed from the table's text, exactly
 * like flag values), the libconfig file, then the flags recorded by one scan of argv.
 * The file is walked setting by setting rather than looked up key by key, because
 * config_lookup_* silently ignores keys nobody asks for: walking finds typos.
 *
 * libconfig 1.5 reads an integer literal without an `L` suffix with atoi(), so
 * `kv_bytes = 5000000000;` silently becomes 705032704 and a 20-digit number becomes -1.
 * The file text therefore goes through a small lexer first (fix_int_literals) that
 * rejects literals beyond 64 bits and appends the `L` libconfig needs for the ones
 * beyond 32 bits. Because that lexer only sees the named file, `@include` is refused.
 */
#include "config.h"

#include "llm_err.h"

#include <libconfig.h>

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CFG_NAME_MAX 128                 // longest setting name, dotted path included
#define CFG_FILE_MAX (16u * 1024 * 1024) // a settings file is small; refuse anything huge

typedef struct {
    int opt;           // index into the table
    const char *value; // borrowed from argv; NULL for a bare boolean flag
    bool negated;      // --no-name
} cfg_flag;

typedef struct {
    const cfg_opt *opts;
    int n_opts;
    bool *list_from_flag; // [n_opts] a STRLIST flag already replaced the earlier items
    char *err;
    size_t err_len;
} cfg_loader;

// ---- small helpers ---------------------------------------------------------------------

static void
flag_form(const char *name, char *buf, size_t n)
{
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++)
        buf[i] = name[i] == '_' ? '-' : name[i];
    buf[i] = '\0';
}

// opt_find returns the option whose name is key[0..len), or -1. With as_flag, key is in
// flag form (dashes where the name has underscores).
static int
opt_find(const cfg_opt *opts, int n_opts, const char *key, size_t len, bool as_flag)
{
    for (int i = 0; i < n_opts; i++) {
        const char *name = opts[i].name;
        size_t j = 0;
        for (; j < len && name[j]; j++) {
            char c = as_flag && name[j] == '_' ? '-' : name[j];
            if (c != key[j])
                break;
        }
        if (j == len && name[j] == '\0')
            return i;
    }
    return -1;
}

// edit_distance is the Levenshtein distance, capped at the lengths it can handle.
static size_t
edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t row[CFG_NAME_MAX + 1];
    if (la > CFG_NAME_MAX || lb > CFG_NAME_MAX)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

// suggest writes " (did you mean X?)" into buf for the closest option name, or "".
static void
suggest(const cfg_opt *opts, int n_opts, const char *key, size_t len, bool as_flag, char *buf,
        size_t n)
{
    size_t best = SIZE_MAX;
    int best_i = -1;
    for (int i = 0; i < n_opts; i++) {
        char cand[CFG_NAME_MAX + 1];
        if (as_flag)
            flag_form(opts[i].name, cand, sizeof(cand));
        else
            snprintf(cand, sizeof(cand), "%s", opts[i].name);
        size_t d = edit_distance(key, len, cand, strlen(cand));
        if (d < best) {
            best = d;
            best_i = i;
        }
    }
    buf[0] = '\0';
    // Two edits catch a swapped pair or a dash for an underscore, not a different word.
    if (best_i >= 0 && best <= 2 && best < len) {
        char cand[CFG_NAME_MAX + 1];
        if (as_flag)
            flag_form(opts[best_i].name, cand, sizeof(cand));
        snprintf(buf, n, as_flag ? " (did you mean --%s?)" : " (did you mean '%s'?)",
                 as_flag ? cand : opts[best_i].name);
    }
}

// fmt_double writes the shortest text that strtod reads back as exactly v.
static void
fmt_double(char *buf, size_t n, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void
fmt_bound(char *buf, size_t n, const cfg_opt *o, double v)
{
    if (o->type == CFG_INT && fabs(v) < 1e18)
        snprintf(buf, n, "%.0f", v);
    else
        fmt_double(buf, n, v);
}

static bool
has_range(const cfg_opt *o)
{
    return o->min < o->max;
}

static int
check_range(cfg_loader *L, const cfg_opt *o, double v, const char *shown, const char *src)
{
    if (!has_range(o) || (v >= o->min && v <= o->max))
        return LLM_OK;
    char lo[40], hi[40];
    fmt_bound(lo, sizeof(lo), o, o->min);
    fmt_bound(hi, sizeof(hi), o, o->max);
    llm_errf(L->err, L->err_len, "%s: %s is out of range [%s, %s]", src, shown, lo, hi);
    return LLM_EINVAL;
}

// parse_int: strict base-10 int64. 0 ok, 1 not a number, 2 overflow.
static int
parse_int(const char *s, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return 1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end)
        return 1;
    if (errno == ERANGE)
        return 2;
    *out = v;
    return 0;
}

// parse_double: strict finite double. 0 ok, 1 not a number, 2 not finite / overflow.
static int
parse_double(const char *s, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return 1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end)
        return 1;
    // ERANGE on underflow returns a tiny or zero value, which is fine; on overflow HUGE_VAL.
    if (!isfinite(v) || (errno == ERANGE && fabs(v) == HUGE_VAL))
        return 2;
    *out = v;
    return 0;
}

static int
parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return 1;
}

static int
set_str(char **dst, const char *s)
{
    char *copy = strdup(s ? s : "");
    if (!copy)
        return LLM_ENOMEM;
    free(*dst);
    *dst = copy;
    return LLM_OK;
}

static void
list_clear(cfg_strlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static int
list_push(cfg_strlist *l, const char *s)
{
    char *copy = strdup(s);
    if (!copy)
        return LLM_ENOMEM;
    char **items = realloc(l->items, (size_t)(l->n + 1) * sizeof(*items));
    if (!items) {
        free(copy);
        return LLM_ENOMEM;
    }
    items[l->n++] = copy;
    l->items = items;
    return LLM_OK;
}

// ---- values from text (defaults and flags) ---------------------------------------------

// set_text parses text as the value of o (src names where it came from in errors). A
// STRLIST gets text appended as one item.
static int
set_text(cfg_loader *L, const cfg_opt *o, const char *text, const char *src)
{
    switch (o->type) {
    case CFG_STR: return set_str(o->dst, text);
    case CFG_INT: {
        int64_t v = 0;
        int bad = parse_int(text, &v);
        if (bad == 1) {
            llm_errf(L->err, L->err_len, "%s: '%s' is not an integer", src, text);
            return LLM_EINVAL;
        }
        if (bad == 2) {
            llm_errf(L->err, L->err_len, "%s: %s does not fit in a 64-bit integer", src, text);
            return LLM_EINVAL;
        }
        int rc = check_range(L, o, (double)v, text, src);
        if (rc == LLM_OK)
            *(int64_t *)o->dst = v;
        return rc;
    }
    case CFG_DOUBLE: {
        double v = 0;
        int bad = parse_double(text, &v);
        if (bad) {
            llm_errf(L->err, L->err_len, "%s: '%s' is not a %snumber", src, text,
                     bad == 2 ? "finite " : "");
            return LLM_EINVAL;
        }
        int rc = check_range(L, o, v, text, src);
        if (rc == LLM_OK)
            *(double *)o->dst = v;
        return rc;
    }
    case CFG_BOOL:
        if (parse_bool(text, o->dst)) {
            llm_errf(L->err, L->err_len, "%s: '%s' is not a boolean (true or false)", src, text);
            return LLM_EINVAL;
        }
        return LLM_OK;
    case CFG_STRLIST: return list_push(o->dst, text);
    }
    assert(!"bad cfg_type");
    return LLM_EINVAL;
}

static int
apply_defaults(cfg_loader *L)
{
    for (int i = 0; i < L->n_opts; i++) {
        const cfg_opt *o = &L->opts[i];
        char src[CFG_NAME_MAX + 32];
        snprintf(src, sizeof(src), "default of %s", o->name);
        int rc = LLM_OK;
        if (o->def && *o->def)
            rc = set_text(L, o, o->def, src);
        else if (o->type == CFG_STR)
            rc = set_str(o->dst, "");
        if (rc != LLM_OK)
            return rc;
    }
    return LLM_OK;
}

// ---- the file --------------------------------------------------------------------------

static const char *
libconfig_type_name(int type)
{
    switch (type) {
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    default: return "nothing";
    }
}

static const char *
cfg_type_want(cfg_type t)
{
    switch (t) {
    case CFG_STR: return "a string";
    case CFG_INT: return "an integer";
    case CFG_DOUBLE: return "a number";
    case CFG_BOOL: return "true or false";
    case CFG_STRLIST: return "a string or a list of strings";
    }
    return "?";
}

static int
set_setting(cfg_loader *L, const cfg_opt *o, const config_setting_t *s, const char *src)
{
    int type = config_setting_type(s);
    switch (o->type) {
    case CFG_STR:
        if (type != CONFIG_TYPE_STRING)
            break;
        return set_str(o->dst, config_setting_get_string(s));
    case CFG_INT: {
        if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
            break;
        int64_t v = config_setting_get_int64(s);
        char shown[32];
        snprintf(shown, sizeof(shown), "%lld", (long long)v);
        int rc = check_range(L, o, (double)v, shown, src);
        if (rc == LLM_OK)
            *(int64_t *)o->dst = v;
        return rc;
    }
    case CFG_DOUBLE: {
        double v;
        if (type == CONFIG_TYPE_FLOAT)
            v = config_setting_get_float(s);
        else if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)
            v = (double)config_setting_get_int64(s);
        else
            break;
        if (!isfinite(v)) {
            llm_errf(L->err, L->err_len, "%s: not a finite number", src);
            return LLM_EINVAL;
        }
        char shown[40];
        fmt_double(shown, sizeof(shown), v);
        int rc = check_range(L, o, v, shown, src);
        if (rc == LLM_OK)
            *(double *)o->dst = v;
        return rc;
    }
    case CFG_BOOL:
        if (type != CONFIG_TYPE_BOOL)
            break;
        *(bool *)o->dst = config_setting_get_bool(s) != 0;
        return LLM_OK;
    case CFG_STRLIST: {
        cfg_strlist *l = o->dst;
        if (type == CONFIG_TYPE_STRING) {
            list_clear(l);
            return list_push(l, config_setting_get_string(s));
        }
        if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST)
            break;
        int n = config_setting_length(s);
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
            if (!e || config_setting_type(e) != CONFIG_TYPE_STRING) {
                llm_errf(L->err, L->err_len, "%s: item %d is %s, expected a string", src, i,
                         e ? libconfig_type_name(config_setting_type(e)) : "missing");
                return LLM_EINVAL;
            }
        }
        list_clear(l);
        for (int i = 0; i < n; i++) {
            int rc =
                list_push(l, config_setting_get_string(config_setting_get_elem(s, (unsigned)i)));
            if (rc != LLM_OK)
                return rc;
        }
        return LLM_OK;
    }
    }
    llm_errf(L->err, L->err_len, "%s: expected %s, got %s", src, cfg_type_want(o->type),
             libconfig_type_name(type));
    return LLM_EINVAL;
}

// is_group_prefix: does some option name start with path followed by '.'?
static bool
is_group_prefix(const cfg_opt *opts, int n_opts, const char *path)
{
    size_t len = strlen(path);
    for (int i = 0; i < n_opts; i++)
        if (strncmp(opts[i].name, path, len) == 0 && opts[i].name[len] == '.')
            return true;
    return false;
}

static int
walk_group(cfg_loader *L, const config_setting_t *group, const char *prefix, const char *file)
{
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(s);
        char path[CFG_NAME_MAX + 1];
        int len =
            snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", name ? name : "");
        unsigned line = config_setting_source_line(s);
        char src[CFG_NAME_MAX + 512];
        snprintf(src, sizeof(src), "%s:%u: %s", file, line, path);
        if (len < 0 || (size_t)len >= sizeof(path)) {
            llm_errf(L->err, L->err_len, "%s: name too long", src);
            return LLM_EINVAL;
        }
        int idx = opt_find(L->opts, L->n_opts, path, (size_t)len, false);
        int rc;
        if (idx < 0 && config_setting_is_group(s) && is_group_prefix(L->opts, L->n_opts, path)) {
            rc = walk_group(L, s, path, file);
        } else if (idx < 0) {
            char hint[CFG_NAME_MAX + 32];
            suggest(L->opts, L->n_opts, path, (size_t)len, false, hint, sizeof(hint));
            llm_errf(L->err, L->err_len, "%s:%u: unknown setting '%s'%s", file, line, path, hint);
            rc = LLM_EINVAL;
        } else {
            rc = set_setting(L, &L->opts[idx], s, src);
        }
        if (rc != LLM_OK)
            return rc;
    }
    return LLM_OK;
}

// starts_number: does a numeric literal start at p ("5", "-5", "+.5", ".5", "0x1F")?
static bool
starts_number(const char *p)
{
    if (*p == '-' || *p == '+')
        p++;
    if (*p == '.')
        p++;
    return isdigit((unsigned char)*p);
}

/* fix_int_literals copies text to *out, appending `L` to integer literals outside the
 * int32 range so that libconfig 1.5 reads them as int64 instead of truncating them, and
 * rejecting literals that overflow int64. Strings and comments are copied untouched. */
static int
fix_int_literals(cfg_loader *L, const char *file, const char *text, char **out)
{
    size_t len = strlen(text);
    char *buf = malloc(2 * len + 1); // at most one 'L' per literal of at least one char
    if (!buf)
        return LLM_ENOMEM;
    size_t i = 0, o = 0;
    unsigned line = 1;
    while (text[i]) {
        char c = text[i];
        if (c == '#' || (c == '/' && text[i + 1] == '/')) {
            while (text[i] && text[i] != '\n')
                buf[o++] = text[i++];
        } else if (c == '/' && text[i + 1] == '*') {
            buf[o++] = text[i++];
            buf[o++] = text[i++];
            while (text[i] && !(text[i] == '*' && text[i + 1] == '/')) {
                line += text[i] == '\n';
                buf[o++] = text[i++];
            }
        } else if (c == '"') {
            buf[o++] = text[i++];
            while (text[i] && text[i] != '"') {
                if (text[i] == '\\' && text[i + 1])
                    buf[o++] = text[i++];
                line += text[i] == '\n';
                buf[o++] = text[i++];
            }
            if (text[i])
                buf[o++] = text[i++];
        } else if (c == '@') {
            free(buf);
            llm_errf(L->err, L->err_len, "%s:%u: @include is not supported", file, line);
            return LLM_EINVAL;
        } else if (isalpha((unsigned char)c) || c == '*') {
            while (isalnum((unsigned char)text[i]) || (text[i] && strchr("-_*", text[i])))
                buf[o++] = text[i++];
        } else if (starts_number(text + i)) {
            size_t start = i, j = i + (c == '-' || c == '+');
            bool hex = c == '0' && (text[i + 1] == 'x' || text[i + 1] == 'X');
            if (hex) {
                j += 2;
                while (isxdigit((unsigned char)text[j]))
                    j++;
            } else {
                while (isdigit((unsigned char)text[j]))
                    j++;
            }
            if (!hex && (text[j] == '.' || text[j] == 'e' || text[j] == 'E')) {
                // A float: libconfig reads it with strtod, which handles any size.
                while (isdigit((unsigned char)text[j]) || (text[j] && strchr(".eE", text[j])) ||
                       ((text[j] == '-' || text[j] == '+') &&
                        (text[j - 1] == 'e' || text[j - 1] == 'E')))
                    j++;
                memcpy(buf + o, text + start, j - start);
                o += j - start;
                i = j;
                continue;
            }
            char digits[64];
            size_t nd = j - start;
            bool fits = nd < sizeof(digits);
            long long v = 0;
            if (fits) {
                memcpy(digits, text + start, nd);
                digits[nd] = '\0';
                errno = 0;
                if (hex) {
                    unsigned long long u = strtoull(digits, NULL, 16);
                    fits = errno == 0 && u <= (unsigned long long)LLONG_MAX;
                    v = (long long)u;
                } else {
                    v = strtoll(digits, NULL, 10);
                    fits = errno == 0;
                }
            }
            if (!fits) {
                free(buf);
                llm_errf(L->err, L->err_len, "%s:%u: integer %.*s does not fit in 64 bits", file,
                         line, (int)(nd > 40 ? 40 : nd), text + start);
                return LLM_EINVAL;
            }
            memcpy(buf + o, text + start, nd);
            o += nd;
            i = j;
            bool has_suffix = text[i] == 'L';
            bool wide = hex ? v > INT32_MAX : (v < INT32_MIN || v > INT32_MAX);
            if (wide && !has_suffix)
                buf[o++] = 'L';
        } else {
            line += c == '\n';
            buf[o++] = text[i++];
        }
    }
    buf[o] = '\0';
    *out = buf;
    return LLM_OK;
}

static int
read_text(cfg_loader *L, const char *path, char **out)
{
    int rc = LLM_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        llm_errf(L->err, L->err_len, "config file %s: cannot open: %s", path, strerror(errno));
        return LLM_EIO;
    }
    size_t cap = 4096, len = 0;
    if (!(buf = malloc(cap))) {
        rc = LLM_ENOMEM;
        goto out;
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap > CFG_FILE_MAX) {
                llm_errf(L->err, L->err_len, "config file %s: larger than %u bytes", path,
                         CFG_FILE_MAX);
                rc = LLM_EINVAL;
                goto out;
            }
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                rc = LLM_ENOMEM;
                goto out;
            }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        llm_errf(L->err, L->err_len, "config file %s: read error", path);
        rc = LLM_EIO;
        goto out;
    }
    buf[len] = '\0';
    if (strlen(buf) != len) {
        llm_errf(L->err, L->err_len, "config file %s: contains a NUL byte", path);
        rc = LLM_EINVAL;
        goto out;
    }
out:
    fclose(f);
    if (rc != LLM_OK)
        free(buf);
    else
        *out = buf;
    return rc;
}

static int
apply_file(cfg_loader *L, const char *path)
{
    char *text = NULL, *fixed = NULL;
    config_t cfg;
    config_init(&cfg);
    int rc = read_text(L, path, &text);
    if (rc != LLM_OK)
        goto out;
    if ((rc = fix_int_literals(L, path, text, &fixed)) != LLM_OK)
        goto out;
    if (config_read_string(&cfg, fixed) != CONFIG_TRUE) {
        llm_errf(L->err, L->err_len, "%s:%d: %s", path, config_error_line(&cfg),
                 config_error_text(&cfg));
        rc = LLM_EINVAL;
        goto out;
    }
    rc = walk_group(L, config_root_setting(&cfg), "", path);
out:
    config_destroy(&cfg);
    free(fixed);
    free(text);
    return rc;
}

// ---- argv ------------------------------------------------------------------------------

static bool
is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

// help_from: is --help or -h among argv[i..argc) before a `--`?
static bool
help_from(int i, int argc, char **argv)
{
    for (; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (is_help(argv[i]))
            return true;
    return false;
}

/* parse_argv records every flag in flags[] (n_flags), the --config path, and where the
 * positional arguments start. On an error it still reports whether help was asked for
 * anywhere, so that `prog --typo --help` prints the help. */
static int
parse_argv(cfg_loader *L, int argc, char **argv, int *first_pos, cfg_flag *flags, int *n_flags,
           const char **config_path, bool *help)
{
    int pos = -1; // index of the first positional argument
    bool dashdash = false;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (pos >= 0) {
            if (!dashdash && a[0] == '-' && a[1]) {
                llm_errf(L->err, L->err_len,
                         "flag %s after argument '%s' (flags go first; use -- before arguments "
                         "that start with -)",
                         a, argv[pos]);
                goto fail;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) {
            dashdash = true;
            pos = i + 1;
            if (!first_pos && pos < argc) {
                llm_errf(L->err, L->err_len, "unexpected argument '%s'", argv[pos]);
                goto fail;
            }
            continue;
        }
        if (a[0] != '-' || a[1] == '\0') { // "-" alone is an argument (stdin, by convention)
            if (!first_pos) {
                llm_errf(L->err, L->err_len, "unexpected argument '%s'", a);
                goto fail;
            }
            pos = i;
            continue;
        }
        if (is_help(a)) {
            *help = true;
            continue;
        }
        if (a[1] != '-') {
            llm_errf(L->err, L->err_len, "unknown flag %s (flags are --name)", a);
            goto fail;
        }
        const char *body = a + 2, *eq = strchr(body, '=');
        size_t len = eq ? (size_t)(eq - body) : strlen(body);
        if (len == 6 && strncmp(body, "config", 6) == 0) {
            const char *path = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!path || !*path) {
                llm_errf(L->err, L->err_len, "flag --config: missing file name");
                goto fail;
            }
            if (*config_path) {
                llm_errf(L->err, L->err_len, "flag --config given twice");
                goto fail;
            }
            *config_path = path;
            continue;
        }
        int idx = opt_find(L->opts, L->n_opts, body, len, true);
        bool negated = false;
        if (idx < 0 && len > 3 && strncmp(body, "no-", 3) == 0) {
            int b = opt_find(L->opts, L->n_opts, body + 3, len - 3, true);
            if (b >= 0 && L->opts[b].type == CFG_BOOL) {
                if (eq) {
                    llm_errf(L->err, L->err_len, "flag --%.*s takes no value", (int)len, body);
                    goto fail;
                }
                idx = b;
                negated = true;
            }
        }
        if (idx < 0) {
            char hint[CFG_NAME_MAX + 32];
            suggest(L->opts, L->n_opts, body, len, true, hint, sizeof(hint));
            llm_errf(L->err, L->err_len, "unknown flag --%.*s%s", (int)len, body, hint);
            goto fail;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!eq && L->opts[idx].type != CFG_BOOL) {
            if (i + 1 >= argc) {
                llm_errf(L->err, L->err_len, "flag --%.*s: missing value", (int)len, body);
                goto fail;
            }
            value = argv[++i];
        }
        flags[(*n_flags)++] = (cfg_flag){.opt = idx, .value = value, .negated = negated};
    }
    if (first_pos && pos >= 0)
        *first_pos = pos;
    return LLM_OK;
fail:
    *help = *help || help_from(i + 1, argc, argv);
    return LLM_EINVAL;
}

static int
apply_flags(cfg_loader *L, const cfg_flag *flags, int n_flags)
{
    for (int k = 0; k < n_flags; k++) {
        const cfg_opt *o = &L->opts[flags[k].opt];
        char flag[CFG_NAME_MAX + 1], src[CFG_NAME_MAX + 16];
        flag_form(o->name, flag, sizeof(flag));
        snprintf(src, sizeof(src), "flag --%s%s", flags[k].negated ? "no-" : "", flag);
        int rc = LLM_OK;
        if (o->type == CFG_BOOL && !flags[k].value)
            *(bool *)o->dst = !flags[k].negated;
        else if (o->type == CFG_STRLIST && !L->list_from_flag[flags[k].opt]) {
            list_clear(o->dst); // flags replace the default's and the file's items
            L->list_from_flag[flags[k].opt] = true;
            rc = set_text(L, o, flags[k].value, src);
        } else
            rc = set_text(L, o, flags[k].value, src);
        if (rc != LLM_OK)
            return rc;
    }
    return LLM_OK;
}

// ---- public ----------------------------------------------------------------------------

#ifndef NDEBUG
static void
check_table(const cfg_opt *opts, int n_opts)
{
    for (int i = 0; i < n_opts; i++) {
        const char *name = opts[i].name;
        assert(name && *name && strlen(name) < CFG_NAME_MAX && opts[i].dst);
        assert(opts[i].type >= CFG_STR && opts[i].type <= CFG_STRLIST);
        assert(strcmp(name, "config") != 0 && strcmp(name, "help") != 0);
        assert(name[0] != '.' && name[strlen(name) - 1] != '.' && !strstr(name, ".."));
        for (const char *p = name; *p; p++)
            assert((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.');
        for (int j = 0; j < i; j++) {
            size_t lj = strlen(opts[j].name), li = strlen(name);
            assert(strcmp(name, opts[j].name) != 0); // duplicate
            // "kv" and "kv.x" cannot both exist: kv would be a value and a group.
            assert(!(strncmp(name, opts[j].name, lj) == 0 && name[lj] == '.'));
            assert(!(strncmp(opts[j].name, name, li) == 0 && opts[j].name[li] == '.'));
        }
    }
}
#endif

int
cfg_load_positional(const cfg_opt *opts, int n_opts, int argc, char **argv, int *first_pos,
                    char *err, size_t err_len)
{
    assert(n_opts >= 0 && (opts || n_opts == 0) && argc >= 0 && (argv || argc == 0));
#ifndef NDEBUG
    check_table(opts, n_opts);
#endif
    int rc = LLM_OK;
    cfg_flag *flags = NULL;
    int n_flags = 0;
    const char *config_path = NULL;
    bool help = false;
    cfg_loader L = {.opts = opts, .n_opts = n_opts, .err = err, .err_len = err_len};

    llm_errf(err, err_len, "%s", "");
    if (first_pos)
        *first_pos = argc;
    // Callers promise the fields own nothing yet; zero them so cfg_free is safe on failure.
    for (int i = 0; i < n_opts; i++) {
        switch (opts[i].type) {
        case CFG_STR: *(char **)opts[i].dst = NULL; break;
        case CFG_INT: *(int64_t *)opts[i].dst = 0; break;
        case CFG_DOUBLE: *(double *)opts[i].dst = 0; break;
        case CFG_BOOL: *(bool *)opts[i].dst = false; break;
        case CFG_STRLIST: *(cfg_strlist *)opts[i].dst = (cfg_strlist){0}; break;
        }
    }
    flags = malloc((size_t)(argc > 0 ? argc : 1) * sizeof(*flags));
    L.list_from_flag = calloc((size_t)(n_opts > 0 ? n_opts : 1), sizeof(bool));
    if (!flags || !L.list_from_flag) {
        rc = LLM_ENOMEM;
        goto out;
    }
    rc = parse_argv(&L, argc, argv, first_pos, flags, &n_flags, &config_path, &help);
    if (help) {
        llm_errf(err, err_len, "help requested");
        rc = LLM_ECANCELED;
        goto out;
    }
    if (rc != LLM_OK)
        goto out;
    if ((rc = apply_defaults(&L)) != LLM_OK)
        goto out;
    if (config_path && (rc = apply_file(&L, config_path)) != LLM_OK)
        goto out;
    rc = apply_flags(&L, flags, n_flags);
out:
    if (rc == LLM_ENOMEM)
        llm_errf(err, err_len, "out of memory while loading the configuration");
    if (rc != LLM_OK) {
        cfg_free(opts, n_opts);
        if (first_pos)
            *first_pos = argc;
    }
    free(flags);
    free(L.list_from_flag);
    return rc;
}

int
cfg_load(const cfg_opt *opts, int n_opts, int argc, char **argv, char *err, size_t err_len)
{
    return cfg_load_positional(opts, n_opts, argc, argv, NULL, err, err_len);
}

void
cfg_free(const cfg_opt *opts, int n_opts)
{
    for (int i = 0; i < n_opts && opts; i++) {
        void *dst = opts[i].dst;
        switch (opts[i].type) {
        case CFG_STR:
            free(*(char **)dst);
            *(char **)dst = NULL;
            break;
        case CFG_INT: *(int64_t *)dst = 0; break;
        case CFG_DOUBLE: *(double *)dst = 0; break;
        case CFG_BOOL: *(bool *)dst = false; break;
        case CFG_STRLIST: list_clear(dst); break;
        }
    }
}

void
cfg_usage(FILE *out, const char *prog, const char *summary, const cfg_opt *opts, int n_opts)
{
    fprintf(out, "usage: %s [options]\n", prog ? prog : "prog");
    if (summary && *summary)
        fprintf(out, "%s\n", summary);
    fprintf(out, "\noptions (flags override the --config file, which overrides the defaults):\n");
    fprintf(out, "  %-30s %s\n", "--config FILE", "read settings from a libconfig file");
    for (int i = 0; i < n_opts; i++) {
        const cfg_opt *o = &opts[i];
        char flag[CFG_NAME_MAX + 1], left[CFG_NAME_MAX + 32], extra[160] = "";
        flag_form(o->name, flag, sizeof(flag));
        static const char *const metavar[] = {
            [CFG_STR] = "TEXT", [CFG_INT] = "N", [CFG_DOUBLE] = "X", [CFG_STRLIST] = "TEXT"};
        if (o->type == CFG_BOOL)
            snprintf(left, sizeof(left), "--[no-]%s", flag);
        else
            snprintf(left, sizeof(left), "--%s %s", flag, metavar[o->type]);
        const char *def = o->def && *o->def ? o->def : NULL;
        size_t k = 0;
        if (o->type == CFG_STRLIST)
            k += (size_t)snprintf(extra + k, sizeof(extra) - k, "; repeatable");
        if (o->type == CFG_BOOL)
            k +=
                (size_t)snprintf(extra + k, sizeof(extra) - k, "; default %s", def ? def : "false");
        else if (o->type == CFG_STR || o->type == CFG_STRLIST)
            k += (size_t)snprintf(extra + k, sizeof(extra) - k, "; default %s%s%s", def ? "\"" : "",
                                  def ? def : "none", def ? "\"" : "");
        else
            k += (size_t)snprintf(extra + k, sizeof(extra) - k, "; default %s", def ? def : "0");
        if (has_range(o) && k < sizeof(extra)) {
            char lo[40], hi[40];
            fmt_bound(lo, sizeof(lo), o, o->min);
            fmt_bound(hi, sizeof(hi), o, o->max);
            snprintf(extra + k, sizeof(extra) - k, ", %s..%s", lo, hi);
        }
        if (strlen(left) > 30)
            fprintf(out, "  %s\n  %-30s %s (%s)\n", left, "", o->help ? o->help : "", extra + 2);
        else
            fprintf(out, "  %-30s %s (%s)\n", left, o->help ? o->help : "", extra + 2);
    }
    fprintf(out, "  %-30s %s\n", "-h, --help", "print this help and exit");
}

static void
dump_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        case '\f': fputs("\\f", out); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(out, "\\x%02X", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void
dump_value(FILE *out, const cfg_opt *o)
{
    switch (o->type) {
    case CFG_STR: dump_string(out, *(char **)o->dst); break;
    case CFG_INT: {
        int64_t v = *(int64_t *)o->dst;
        // libconfig 1.5 truncates an unsuffixed literal to 32 bits.
        fprintf(out, "%lld%s", (long long)v, v < INT32_MIN || v > INT32_MAX ? "L" : "");
        break;
    }
    case CFG_DOUBLE: {
        char buf[48];
        fmt_double(buf, sizeof(buf), *(double *)o->dst);
        // Keep it a float literal, so the file says what the setting is.
        fprintf(out, "%s%s", buf, strpbrk(buf, ".eEn") ? "" : ".0");
        break;
    }
    case CFG_BOOL: fputs(*(bool *)o->dst ? "true" : "false", out); break;
    case CFG_STRLIST: {
        const cfg_strlist *l = o->dst;
        fputc('[', out);
        for (int i = 0; i < l->n; i++) {
            fputs(i ? ", " : " ", out);
            dump_string(out, l->items[i]);
        }
        fputs(l->n ? " ]" : "]", out);
        break;
    }
    }
}

// dump_group writes the options under prefix (which ends in '.' or is empty), opening
// one nested group per distinct next path component, in table order.
static void
dump_group(FILE *out, const cfg_opt *opts, int n_opts, const char *prefix, int depth)
{
    size_t plen = strlen(prefix);
    for (int i = 0; i < n_opts; i++) {
        const char *name = opts[i].name;
        if (strncmp(name, prefix, plen) != 0)
            continue;
        const char *rest = name + plen, *dot = strchr(rest, '.');
        if (!dot) {
            fprintf(out, "%*s%s = ", depth * 4, "", rest);
            dump_value(out, &opts[i]);
            fputs(";\n", out);
            continue;
        }
        size_t clen = (size_t)(dot - rest);
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = strncmp(opts[j].name, prefix, plen) == 0 &&
                   strncmp(opts[j].name + plen, rest, clen + 1) == 0;
        if (seen)
            continue;
        char sub[CFG_NAME_MAX + 1];
        snprintf(sub, sizeof(sub), "%.*s", (int)(plen + clen + 1), name);
        fprintf(out, "%*s%.*s = {\n", depth * 4, "", (int)clen, rest);
        dump_group(out, opts, n_opts, sub, depth + 1);
        fprintf(out, "%*s};\n", depth * 4, "");
    }
}

int
cfg_dump(FILE *out, const cfg_opt *opts, int n_opts)
{
    assert(out && (opts || n_opts == 0));
    fputs("# effective configuration (libconfig); load with --config FILE\n", out);
    dump_group(out, opts, n_opts, "", 0);
    return ferror(out) || fflush(out) != 0 ? LLM_EIO : LLM_OK;
}
