/* histogram.h — a fixed-size log-bucket latency histogram (HDR style).
 *
 * The load generator records one latency per message, millions per second, so recording
 * must be a few instructions with no allocation: values (nanoseconds) fall into buckets
 * whose width doubles every power of two, each power split into 2^HIST_SUB_BITS linear
 * sub-buckets. With 7 sub-bucket bits a reported value is within 1/128 (< 0.8 %) of the
 * true one, over the whole range 1 ns .. 2^42 ns (73 minutes). Each thread owns its own
 * histogram; the totals are merged once at the end. */
#ifndef FERRY_HISTOGRAM_H
#define FERRY_HISTOGRAM_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_BITS 42
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS + 1) * HIST_SUB)

typedef struct histogram {
    uint64_t count;
    uint64_t sum;      /* for the mean */
    uint64_t min, max; /* exact */
    uint64_t b[HIST_BUCKETS];
} histogram;

void hist_init(histogram *h);
void hist_merge(histogram *into, const histogram *from);
/* The value at percentile p (0..100]: the highest value of the bucket holding the
 * ceil(p% * count)-th smallest sample, capped at the exact maximum. 0 if empty. */
uint64_t hist_percentile(const histogram *h, double p);

static inline unsigned hist_index(uint64_t v) {
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* e >= HIST_SUB_BITS */
    if (e >= HIST_MAX_BITS)
        return HIST_BUCKETS - 1;
    return ((e - HIST_SUB_BITS + 1) << HIST_SUB_BITS) + (unsigned)((v >> (e - HIST_SUB_BITS)) - HIST_SUB);
}

static inline void hist_record(histogram *h, uint64_t v) {
    h->b[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

#endif
