/* memacct.c — per-kind counters of client-caused memory (see memacct.h). */
#include "memacct.h"

#include <assert.h>

static uint64_t counts[MEM_NKINDS]; /* loop thread only */
static uint64_t total;              /* always the sum of counts[] */

void memacct_add(enum memkind k, uint64_t n) {
    assert((unsigned)k < MEM_NKINDS);
    counts[k] += n;
    total += n;
}

void memacct_sub(enum memkind k, uint64_t n) {
    assert((unsigned)k < MEM_NKINDS);
    assert(counts[k] >= n && total >= n);
    counts[k] -= n;
    total -= n;
}

void memacct_set(enum memkind k, uint64_t n) {
    assert((unsigned)k < MEM_NKINDS);
    total = total - counts[k] + n;
    counts[k] = n;
}

uint64_t memacct_get(enum memkind k) {
    assert((unsigned)k < MEM_NKINDS);
    return counts[k];
}

uint64_t memacct_total(void) { return total; }

const char *memacct_name(enum memkind k) {
    static const char *names[MEM_NKINDS] = {"messages",    "connection_buffers", "chash_rings",
                                            "queue_index", "store_batch", "tls", "stream_reads",
                                            "cron_schedules"};
    assert((unsigned)k < MEM_NKINDS);
    return names[k];
}
