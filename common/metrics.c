/*
 * metrics.c - the registry behind metrics.h and its Prometheus text renderer.
 *
 * Families live in an array kept sorted by name (registration is rare; rendering walks
 * them in order). Each series is its own allocation, so the pointers handed out stay
 * valid while the arrays grow. Values are C11 atomics updated with relaxed ordering:
 * a metric needs no ordering with other memory, only no lost updates. Doubles (gauges,
 * histogram sums) are stored as their bit patterns in a uint64 and added with a CAS loop,
 * because C11 has no atomic floating-point add that every compiler lowers lock-free.
 *
 * A histogram keeps per-bucket (not cumulative) counts and no separate total: render
 * derives _count from the buckets it read, so +Inf == _count holds in every exposition
 * even while other threads observe. Only _sum may lag or lead by in-flight observations.
 */
#include "metrics.h"

#include "log.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MET_MAX_LABELS 32 // label pairs in one set; Prometheus advises a handful

const double metrics_latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1,      2.5,   5,    10,    25,   60};
const int metrics_latency_n = (int)(sizeof(metrics_latency_bounds) / sizeof(double));

typedef enum { MET_COUNTER, MET_GAUGE, MET_HISTOGRAM } met_type;

static const char *const met_type_names[] = {
    [MET_COUNTER] = "counter", [MET_GAUGE] = "gauge", [MET_HISTOGRAM] = "histogram"};

// The head every series starts with, so a family can hold them in one array.
typedef struct {
    char *labels; // canonical label body: pairs sorted by name, values escaped; "" for none
} met_series;

struct metric_counter {
    met_series s;
    _Atomic uint64_t value;
};

struct metric_gauge {
    met_series s;
    _Atomic uint64_t bits; // the double's bit pattern
};

struct metric_histogram {
    met_series s;
    const double *bounds;       // [n] borrowed from the family
    int n;                      // finite bounds; buckets has n + 1 entries
    _Atomic uint64_t sum_bits;  // the double sum's bit pattern
    _Atomic uint64_t buckets[]; // [n + 1] per-bucket counts, the last is +Inf
};

typedef struct {
    char *name;
    char *help; // "" for none
    met_type type;
    double *bounds; // [n_bounds] histograms only
    int n_bounds;
    met_series **series; // [n_series] registration order
    int n_series, cap_series;
} met_family;

struct metrics {
    pthread_mutex_t mu; // guards fams and every family's series array, not the values
    met_family **fams;  // [n_fams] sorted by name
    int n_fams, cap_fams;
};

// ---- doubles in atomics ----------------------------------------------------------------

static uint64_t
dbl_bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

static double
bits_dbl(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof(v));
    return v;
}

static void
atomic_dbl_add(_Atomic uint64_t *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, dbl_bits(bits_dbl(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

// ---- names and labels ------------------------------------------------------------------

static bool
valid_metric_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (p != s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static bool
is_label_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool
is_label_char(char c)
{
    return is_label_start(c) || (c >= '0' && c <= '9');
}

size_t
metrics_label_escape(char *dst, size_t n, const char *value)
{
    size_t k = 0;
    for (const char *p = value ? value : ""; *p; p++) {
        const char *rep = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
        char one[2] = {*p, '\0'};
        for (const char *q = rep ? rep : one; *q; q++, k++)
            if (k + 1 < n)
                dst[k] = *q;
    }
    if (n)
        dst[k < n ? k : n - 1] = '\0';
    return k;
}

typedef struct {
    const char *name; // into the caller's string
    size_t name_len;
    char *value; // decoded, malloc'ed
} met_label;

static int
label_cmp(const void *a, const void *b)
{
    const met_label *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static void
skip_space(const char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
}

/* canon_labels parses a label set body into its canonical form (pairs sorted by name,
 * values re-escaped) in *out (malloc'ed). On a bad set it returns false with *why set;
 * out of memory is false with *why "out of memory". */
static bool
canon_labels(const char *in, bool histogram, char **out, const char **why)
{
    met_label pairs[MET_MAX_LABELS];
    int n = 0;
    bool ok = false;
    char *buf = NULL;
    const char *p = in ? in : "";
    *why = "malformed label set";
    skip_space(&p);
    while (*p) {
        if (n == MET_MAX_LABELS) {
            *why = "too many labels";
            goto out;
        }
        if (!is_label_start(*p))
            goto out;
        met_label *l = &pairs[n];
        l->name = p;
        while (is_label_char(*p))
            p++;
        l->name_len = (size_t)(p - l->name);
        skip_space(&p);
        if (*p++ != '=')
            goto out;
        skip_space(&p);
        if (*p++ != '"')
            goto out;
        // Decoding never grows the text, so the rest of the input bounds the value.
        if (!(l->value = malloc(strlen(p) + 1))) {
            *why = "out of memory";
            goto out;
        }
        n++;
        size_t k = 0;
        for (; *p && *p != '"'; p++) {
            if (*p == '\\' && (p[1] == '\\' || p[1] == '"' || p[1] == 'n')) {
                p++;
                l->value[k++] = *p == 'n' ? '\n' : *p;
            } else {
                l->value[k++] = *p; // a lone backslash stays itself
            }
        }
        l->value[k] = '\0';
        if (*p++ != '"')
            goto out;
        if (l->name_len >= 2 && l->name[0] == '_' && l->name[1] == '_') {
            *why = "label names starting with __ are reserved";
            goto out;
        }
        if (histogram && l->name_len == 2 && memcmp(l->name, "le", 2) == 0) {
            *why = "label le is reserved for histogram buckets";
            goto out;
        }
        skip_space(&p);
        if (*p == ',') {
            p++;
            skip_space(&p);
        } else if (*p) {
            goto out;
        }
    }
    qsort(pairs, (size_t)n, sizeof(pairs[0]), label_cmp);
    size_t need = 1;
    for (int i = 0; i < n; i++) {
        if (i > 0 && label_cmp(&pairs[i - 1], &pairs[i]) == 0) {
            *why = "duplicate label name";
            goto out;
        }
        need += pairs[i].name_len + 4 + metrics_label_escape(NULL, 0, pairs[i].value);
    }
    if (!(buf = malloc(need))) {
        *why = "out of memory";
        goto out;
    }
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(buf + k, need - k, "%s%.*s=\"", i ? "," : "", (int)pairs[i].name_len,
                              pairs[i].name);
        k += metrics_label_escape(buf + k, need - k, pairs[i].value);
        buf[k++] = '"';
    }
    buf[k] = '\0';
    *out = buf;
    buf = NULL;
    ok = true;
out:
    for (int i = 0; i < n; i++)
        free(pairs[i].value);
    free(buf);
    return ok;
}

// ---- registry --------------------------------------------------------------------------

metrics *
metrics_new(void)
{
    metrics *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

static void
family_free(met_family *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n_series; i++) {
        free(f->series[i]->labels);
        free(f->series[i]);
    }
    free(f->series);
    free(f->bounds);
    free(f->help);
    free(f->name);
    free(f);
}

void
metrics_free(metrics *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_fams; i++)
        family_free(r->fams[i]);
    free(r->fams);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

// family_find returns the index of name, or -(insertion point) - 1. Caller holds mu.
static int
family_find(const metrics *r, const char *name)
{
    int lo = 0, hi = r->n_fams;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(r->fams[mid]->name, name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -lo - 1;
}

// is_histogram_series_of: is name base_bucket, base_sum or base_count?
static bool
is_histogram_series_of(const char *name, const char *base)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t bl = strlen(base);
    if (strncmp(name, base, bl) != 0)
        return false;
    for (int i = 0; i < 3; i++)
        if (strcmp(name + bl, suffixes[i]) == 0)
            return true;
    return false;
}

// clashes: would a new family (name, type) render a line another family also renders?
// Caller holds mu.
static bool
clashes(const metrics *r, const char *name, met_type type)
{
    for (int i = 0; i < r->n_fams; i++) {
        const met_family *f = r->fams[i];
        if (f->type == MET_HISTOGRAM && is_histogram_series_of(name, f->name))
            return true;
        if (type == MET_HISTOGRAM && is_histogram_series_of(f->name, name))
            return true;
    }
    return false;
}

static bool
same_bounds(const met_family *f, const double *bounds, int n)
{
    return f->n_bounds == n &&
           (n == 0 || memcmp(f->bounds, bounds, (size_t)n * sizeof(double)) == 0);
}

static met_series *
series_new(met_type type, int n_bounds)
{
    switch (type) {
    case MET_COUNTER: return calloc(1, sizeof(metric_counter));
    case MET_GAUGE: return calloc(1, sizeof(metric_gauge));
    case MET_HISTOGRAM:
        return calloc(1, sizeof(metric_histogram) + (size_t)(n_bounds + 1) * sizeof(uint64_t));
    }
    return NULL;
}

static met_series *
register_series(metrics *r, const char *name, const char *help, const char *labels, met_type type,
                const double *bounds, int n)
{
    const char *why = NULL;
    char *canon = NULL;
    met_series *s = NULL;
    met_family *fam = NULL;
    bool locked = false;
    if (!r)
        return NULL;
    help = help ? help : "";
    if (!valid_metric_name(name)) {
        why = "bad metric name";
        goto fail;
    }
    if (!canon_labels(labels, type == MET_HISTOGRAM, &canon, &why))
        goto fail;
    if (type == MET_HISTOGRAM) {
        if (n < 0 || (n > 0 && !bounds)) {
            why = "bad bucket count";
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
                why = "bucket bounds must be finite and strictly ascending";
                goto fail;
            }
        }
    }
    pthread_mutex_lock(&r->mu);
    locked = true;
    int at = family_find(r, name);
    if (at >= 0) {
        met_family *f = r->fams[at];
        if (f->type != type) {
            why = "name already registered with another type";
            goto fail;
        }
        if (strcmp(f->help, help) != 0) {
            why = "name already registered with another help text";
            goto fail;
        }
        if (type == MET_HISTOGRAM && !same_bounds(f, bounds, n)) {
            why = "histogram already registered with other bounds";
            goto fail;
        }
        for (int i = 0; i < f->n_series; i++) {
            if (strcmp(f->series[i]->labels, canon) == 0) {
                s = f->series[i];
                pthread_mutex_unlock(&r->mu);
                free(canon);
                return s;
            }
        }
        fam = f;
    } else if (clashes(r, name, type)) {
        why = "name clashes with a histogram's _bucket, _sum or _count series";
        goto fail;
    }

    why = "out of memory";
    if (!(s = series_new(type, n)))
        goto fail;
    if (!fam) {
        if (r->n_fams == r->cap_fams) {
            int cap = r->cap_fams ? 2 * r->cap_fams : 16;
            met_family **grown = realloc(r->fams, (size_t)cap * sizeof(*grown));
            if (!grown)
                goto fail;
            r->fams = grown;
            r->cap_fams = cap;
        }
        if (!(fam = calloc(1, sizeof(*fam))))
            goto fail;
        fam->type = type;
        fam->name = strdup(name);
        fam->help = strdup(help);
        fam->n_bounds = type == MET_HISTOGRAM ? n : 0;
        if (fam->n_bounds > 0 && (fam->bounds = malloc((size_t)n * sizeof(double))))
            memcpy(fam->bounds, bounds, (size_t)n * sizeof(double));
        if (!fam->name || !fam->help || (fam->n_bounds > 0 && !fam->bounds)) {
            family_free(fam);
            fam = NULL;
            goto fail;
        }
        int ins = -at - 1;
        memmove(&r->fams[ins + 1], &r->fams[ins], (size_t)(r->n_fams - ins) * sizeof(*r->fams));
        r->fams[ins] = fam;
        r->n_fams++;
    }
    // An empty family left behind by a failure here still renders valid text (no samples).
    if (fam->n_series == fam->cap_series) {
        int cap = fam->cap_series ? 2 * fam->cap_series : 4;
        met_series **grown = realloc(fam->series, (size_t)cap * sizeof(*grown));
        if (!grown)
            goto fail;
        fam->series = grown;
        fam->cap_series = cap;
    }
    if (type == MET_HISTOGRAM) {
        metric_histogram *h = (metric_histogram *)s;
        h->bounds = fam->bounds;
        h->n = fam->n_bounds;
    }
    s->labels = canon;
    fam->series[fam->n_series++] = s;
    pthread_mutex_unlock(&r->mu);
    return s;
fail:
    if (locked)
        pthread_mutex_unlock(&r->mu);
    LOG_WARN("event=metric_register_failed name=%s type=%s reason=\"%s\"", name ? name : "(null)",
             met_type_names[type], why);
    free(s);
    free(canon);
    return NULL;
}

metric_counter *
metrics_counter(metrics *r, const char *name, const char *help, const char *labels)
{
    return (metric_counter *)register_series(r, name, help, labels, MET_COUNTER, NULL, 0);
}

metric_gauge *
metrics_gauge(metrics *r, const char *name, const char *help, const char *labels)
{
    return (metric_gauge *)register_series(r, name, help, labels, MET_GAUGE, NULL, 0);
}

metric_histogram *
metrics_histogram(metrics *r, const char *name, const char *help, const char *labels,
                  const double *bounds, int n)
{
    return (metric_histogram *)register_series(r, name, help, labels, MET_HISTOGRAM, bounds, n);
}

// ---- updates ---------------------------------------------------------------------------

void
metric_counter_add(metric_counter *c, uint64_t v)
{
    if (c)
        atomic_fetch_add_explicit(&c->value, v, memory_order_relaxed);
}

void
metric_gauge_set(metric_gauge *g, double v)
{
    if (g)
        atomic_store_explicit(&g->bits, dbl_bits(v), memory_order_relaxed);
}

void
metric_gauge_add(metric_gauge *g, double v)
{
    if (g)
        atomic_dbl_add(&g->bits, v);
}

void
metric_histogram_observe(metric_histogram *h, double v)
{
    if (!h || isnan(v))
        return;
    int lo = 0, hi = h->n; // first bound >= v; n (the +Inf bucket) when none
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    atomic_dbl_add(&h->sum_bits, v);
}

uint64_t
metric_counter_value(const metric_counter *c)
{
    return c ? atomic_load_explicit(&((metric_counter *)c)->value, memory_order_relaxed) : 0;
}

double
metric_gauge_value(const metric_gauge *g)
{
    return g ? bits_dbl(atomic_load_explicit(&((metric_gauge *)g)->bits, memory_order_relaxed)) : 0;
}

uint64_t
metric_histogram_count(const metric_histogram *h)
{
    uint64_t total = 0;
    for (int i = 0; h && i <= h->n; i++)
        total += atomic_load_explicit(&((metric_histogram *)h)->buckets[i], memory_order_relaxed);
    return total;
}

double
metric_histogram_sum(const metric_histogram *h)
{
    return h ? bits_dbl(
                   atomic_load_explicit(&((metric_histogram *)h)->sum_bits, memory_order_relaxed))
             : 0;
}

// ---- rendering -------------------------------------------------------------------------

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} met_buf;

static void met_printf(met_buf *b, const char *fmt, ...) LLM_PRINTF_LIKE(2, 3);

static void
met_printf(met_buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 > b->len + (size_t)n + 1 ? b->cap * 2 : b->len + (size_t)n + 1;
        char *grown = realloc(b->p, cap);
        if (!grown) {
            b->oom = true;
            return;
        }
        b->p = grown;
        b->cap = cap;
    }
}

// fmt_value writes v as Prometheus does: shortest round-trip, +Inf, -Inf, NaN.
static void
fmt_value(char *buf, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(buf, n, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, n, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void
render_help(met_buf *b, const met_family *f)
{
    met_printf(b, "# HELP %s ", f->name);
    for (const char *p = f->help; *p; p++) {
        if (*p == '\\')
            met_printf(b, "\\\\");
        else if (*p == '\n')
            met_printf(b, "\\n");
        else
            met_printf(b, "%c", *p);
    }
    met_printf(b, "\n");
}

static void
render_histogram(met_buf *b, const met_family *f, const metric_histogram *h)
{
    const char *labels = h->s.labels, *comma = *labels ? "," : "";
    uint64_t cum = 0;
    char num[40];
    for (int i = 0; i <= h->n; i++) {
        cum += atomic_load_explicit(&((metric_histogram *)h)->buckets[i], memory_order_relaxed);
        if (i < h->n)
            fmt_value(num, sizeof(num), h->bounds[i]);
        else
            snprintf(num, sizeof(num), "+Inf");
        met_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, labels, comma, num,
                   (unsigned long long)cum);
    }
    fmt_value(num, sizeof(num), metric_histogram_sum(h));
    const char *open = *labels ? "{" : "", *close = *labels ? "}" : "";
    met_printf(b, "%s_sum%s%s%s %s\n", f->name, open, labels, close, num);
    met_printf(b, "%s_count%s%s%s %llu\n", f->name, open, labels, close, (unsigned long long)cum);
}

char *
metrics_render(metrics *r)
{
    if (!r)
        return NULL;
    met_buf b = {.cap = 4096};
    if (!(b.p = malloc(b.cap)))
        return NULL;
    b.p[0] = '\0';
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n_fams; i++) {
        const met_family *f = r->fams[i];
        if (*f->help)
            render_help(&b, f);
        met_printf(&b, "# TYPE %s %s\n", f->name, met_type_names[f->type]);
        for (int j = 0; j < f->n_series; j++) {
            const met_series *s = f->series[j];
            const char *open = *s->labels ? "{" : "", *close = *s->labels ? "}" : "";
            char num[40];
            switch (f->type) {
            case MET_COUNTER:
                met_printf(&b, "%s%s%s%s %llu\n", f->name, open, s->labels, close,
                           (unsigned long long)metric_counter_value((const metric_counter *)s));
                break;
            case MET_GAUGE:
                fmt_value(num, sizeof(num), metric_gauge_value((const metric_gauge *)s));
                met_printf(&b, "%s%s%s%s %s\n", f->name, open, s->labels, close, num);
                break;
            case MET_HISTOGRAM: render_histogram(&b, f, (const metric_histogram *)s); break;
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
