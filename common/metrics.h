/*
 * metrics.h - a registry of counters, gauges and histograms, rendered as Prometheus text.
 *
 * Registration happens at start-up (or on first use) and takes the registry's mutex;
 * updates are single atomic operations with no lock, safe from any thread, so hot paths
 * (the scheduler step, the router) can count freely. metrics_render produces the text
 * exposition format 0.0.4 that GET /metrics serves.
 *
 * It deliberately does not: remove metrics (a registry lives as long as its process),
 * compute quantiles (summaries), add timestamps, or serve HTTP. Every update function
 * accepts a NULL metric and does nothing, so a failed registration degrades to a
 * missing series instead of a crash.
 */
#ifndef LLM_COMMON_METRICS_H
#define LLM_COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct metrics metrics;
typedef struct metric_counter metric_counter;
typedef struct metric_gauge metric_gauge;
typedef struct metric_histogram metric_histogram;

/* Standard latency bounds in seconds, 1 ms .. 60 s in 1-2.5-5 steps, for TTFT, inter-token
 * and end-to-end histograms (defined in metrics.c). */
extern const double metrics_latency_bounds[];
extern const int metrics_latency_n;

/* metrics_new returns an empty registry, or NULL when out of memory. Free it with
 * metrics_free(). */
metrics *metrics_new(void);

/* metrics_free releases the registry and every metric in it. Accepts NULL. No other
 * thread may use the registry or any of its metrics during or after the call. */
void metrics_free(metrics *r);

/* metrics_counter registers (or finds) the counter name{labels} and returns it; the
 * pointer is borrowed from r and valid until metrics_free(r).
 *
 * name must match [a-zA-Z_:][a-zA-Z0-9_:]*. labels is NULL, "" or a Prometheus label set
 * body such as `tier="high",worker="w1"`: names [a-zA-Z_][a-zA-Z0-9_]* (not starting with
 * "__", no duplicates, not "le" for histograms), values in double quotes where \\, \" and
 * \n are escapes (a raw newline is accepted too). Label order does not matter: pairs are
 * kept sorted by name. help is one line of text (NULL = none).
 *
 * Registering the same name and labels again returns the same metric. All label sets of
 * one name form one family, which shares the type, the help text and, for histograms,
 * the bounds. Returns NULL (and logs why) for a bad name or label set, a name already
 * used with another type, help or bounds, a name that clashes with a histogram's
 * _bucket/_sum/_count series, or out of memory. Any thread. */
metric_counter *metrics_counter(metrics *r, const char *name, const char *help, const char *labels);

/* metrics_gauge is metrics_counter for a gauge. */
metric_gauge *metrics_gauge(metrics *r, const char *name, const char *help, const char *labels);

/* metrics_histogram is metrics_counter for a histogram with n >= 0 finite, strictly
 * ascending upper bounds (copied; the +Inf bucket is implicit). Every label set of one
 * name must use the same bounds. */
metric_histogram *metrics_histogram(metrics *r, const char *name, const char *help,
                                    const char *labels, const double *bounds, int n);

/* metric_counter_add adds v. Lock-free; any thread; NULL is a no-op. */
void metric_counter_add(metric_counter *c, uint64_t v);

/* metric_gauge_set / metric_gauge_add set or add to the value (add is a CAS loop, so
 * concurrent adds are never lost). Lock-free; any thread; NULL is a no-op. */
void metric_gauge_set(metric_gauge *g, double v);
void metric_gauge_add(metric_gauge *g, double v);

/* metric_histogram_observe counts v in the first bucket whose bound is >= v (the +Inf
 * bucket if none) and adds it to the sum. NaN is ignored so that it cannot poison the
 * sum. Lock-free; any thread; NULL is a no-op. */
void metric_histogram_observe(metric_histogram *h, double v);

/* metrics_render returns the whole exposition (families sorted by name, label sets in
 * registration order, histograms as cumulative _bucket{le=...}, _sum, _count) as a
 * NUL-terminated string to free() with free(), or NULL when out of memory or r is NULL.
 * Any thread; updates made while it runs may or may not be included, but within one
 * histogram series the +Inf bucket always equals _count. */
char *metrics_render(metrics *r);

/* metrics_label_escape writes value escaped for a label set body (\\, \", \n) into
 * dst[0..n) and returns the length it needed, like snprintf, so callers can build
 * labels from untrusted text (model names, worker ids). */
size_t metrics_label_escape(char *dst, size_t n, const char *value);

/* Accessors, mostly for tests: the current values; 0 for NULL. */
uint64_t metric_counter_value(const metric_counter *c);
double metric_gauge_value(const metric_gauge *g);
uint64_t metric_histogram_count(const metric_histogram *h);
double metric_histogram_sum(const metric_histogram *h);

#endif
