/* histogram.c — log-bucket latency histogram (see histogram.h). */
#include "histogram.h"

#include <math.h>
#include <string.h>

void hist_init(histogram *h) {
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

void hist_merge(histogram *into, const histogram *from) {
    if (from->count == 0)
        return;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
}

/* The highest value that falls into bucket i (HDR's "highest equivalent value"). */
static uint64_t bucket_high(unsigned i) {
    if (i < HIST_SUB)
        return i;
    unsigned k = i >> HIST_SUB_BITS;
    uint64_t sub = (i & (HIST_SUB - 1)) + HIST_SUB;
    unsigned shift = k - 1;
    return (sub << shift) + ((uint64_t)1 << shift) - 1;
}

uint64_t hist_percentile(const histogram *h, double p) {
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = bucket_high(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}
