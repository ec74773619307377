/* segment.h — the set of message-log segments the loop thread knows about.
 *
 * Segments are files segments/<16 hex id>.seg; ids only grow, but the set may have gaps (a
 * segment unreadable at recovery, or deleted by hand, is simply absent), so lookup is by id,
 * never by position. Each segment counts what is live in it (queue copies published there and
 * not yet settled, delayed messages, pins); the oldest segments are reclaimed, oldest first,
 * once nothing in them is live, and never the active one (the last, being appended to). */
#ifndef FERRY_SEGMENT_H
#define FERRY_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct seg {
    uint32_t id;
    uint64_t salt;  /* seeds its records' checksums */
    uint64_t live;  /* live things in it: queue copies, delayed messages, pins */
    uint64_t bytes; /* as appended (for rollover) */
} seg;

typedef struct segset {
    seg *a; /* in increasing id order; the last one is the active one */
    size_t n, cap;
    uint32_t next_id; /* the id the next new segment gets */
} segset;

/* The segment with this id, or NULL (reclaimed, or never there). */
seg *segset_find(segset *ss, uint32_t id);
/* Adds a segment with an id above every other's; returns it. */
seg *segset_add(segset *ss, uint32_t id, uint64_t salt, uint64_t bytes);
/* The active segment (the set is never empty once the store is open). */
seg *segset_active(segset *ss);
/* Takes one live count from segment id (if it is still there); returns 1 if that may make
 * the oldest segments reclaimable (call segset_reclaim). */
int segset_release(segset *ss, uint32_t id);
/* Removes the oldest segments while nothing in them is live (never the active one); their
 * ids are appended to *ids (grown as needed; *n, *cap). Returns how many were removed. */
size_t segset_reclaim(segset *ss, uint32_t **ids, size_t *n, size_t *cap);
void segset_free(segset *ss);

/* segments/<id>.seg under segdir. */
void seg_path(const char *segdir, uint32_t id, char *out, size_t n);
/* The segment ids found in segdir, sorted (malloc'ed; NULL and *n = 0 if none). */
uint32_t *seg_list(const char *segdir, size_t *n);

#endif
