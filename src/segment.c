/* segment.c — the segment set: lookup by id (tolerating gaps), live counts, reclamation,
 * and listing the segment files (see segment.h). Loop thread only. */
#include "segment.h"

#include <assert.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Binary search by id: the set is sorted but need not be contiguous (a segment missing or
 * unreadable at recovery leaves a gap, and every later segment must still be found). */
seg *segset_find(segset *ss, uint32_t id) {
    size_t lo = 0, hi = ss->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ss->a[mid].id == id)
            return &ss->a[mid];
        if (ss->a[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

seg *segset_add(segset *ss, uint32_t id, uint64_t salt, uint64_t bytes) {
    assert(ss->n == 0 || id > ss->a[ss->n - 1].id);
    if (ss->n == ss->cap) {
        ss->cap = ss->cap ? ss->cap * 2 : 16;
        ss->a = xrealloc(ss->a, ss->cap * sizeof *ss->a);
    }
    ss->a[ss->n] = (seg){.id = id, .salt = salt, .bytes = bytes};
    if (id >= ss->next_id)
        ss->next_id = id + 1;
    return &ss->a[ss->n++];
}

seg *segset_active(segset *ss) {
    assert(ss->n > 0);
    return &ss->a[ss->n - 1];
}

int segset_release(segset *ss, uint32_t id) {
    seg *sg = segset_find(ss, id);
    if (sg && sg->live)
        sg->live--;
    return sg == &ss->a[0];
}

size_t segset_reclaim(segset *ss, uint32_t **ids, size_t *n, size_t *cap) {
    size_t k = 0;
    while (k + 1 < ss->n && ss->a[k].live == 0 && ss->a[k].pins == 0 && ss->a[k].hold == 0)
        k++;
    if (!k)
        return 0;
    for (size_t i = 0; i < k; i++) {
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 8;
            *ids = xrealloc(*ids, *cap * sizeof **ids);
        }
        (*ids)[(*n)++] = ss->a[i].id;
    }
    memmove(ss->a, ss->a + k, (ss->n - k) * sizeof *ss->a);
    ss->n -= k;
    return k;
}

uint64_t seg_live_bytes(const seg *sg) {
    if (!sg->live)
        return 0;
    if (sg->live >= sg->copies) /* paged copies' holds count too: never more than the segment */
        return sg->bytes;
    return (uint64_t)((double)sg->bytes * (double)sg->live / (double)sg->copies);
}

seg *segset_compact_pick(segset *ss, uint64_t segment_size) {
    if (ss->n < 2)
        return NULL;
    seg *old = &ss->a[0];
    if (old->pins || old->hold || !old->live)
        return NULL;
    uint64_t total = 0, live = 0;
    for (size_t i = 0; i + 1 < ss->n; i++) {
        total += ss->a[i].bytes;
        live += seg_live_bytes(&ss->a[i]);
    }
    return total > COMPACT_FACTOR * live + COMPACT_FEW * segment_size ? old : NULL;
}

void segset_free(segset *ss) {
    free(ss->a);
    *ss = (segset){0};
}

void seg_path(const char *segdir, uint32_t id, char *out, size_t n) { snprintf(out, n, "%s/%016x.seg", segdir, id); }

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Lists segment ids in the segments directory (names of exactly 16 hex digits + .seg). */
uint32_t *seg_list(const char *segdir, size_t *n) {
    DIR *d = opendir(segdir);
    uint32_t *ids = NULL;
    size_t cap = 0;
    *n = 0;
    if (!d)
        return NULL;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        if (strlen(de->d_name) != 20 || strcmp(de->d_name + 16, ".seg") != 0)
            continue;
        unsigned long long id = strtoull(de->d_name, &end, 16);
        if (end != de->d_name + 16 || id > UINT32_MAX)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            ids = xrealloc(ids, cap * sizeof *ids);
        }
        ids[(*n)++] = (uint32_t)id;
    }
    closedir(d);
    if (*n)
        qsort(ids, *n, sizeof *ids, cmp_u32);
    return ids;
}
