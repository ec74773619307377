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
    uint64_t salt;   /* seeds its records' checksums */
    uint64_t live;   /* live things in it: queue copies, delayed messages, paged copies' holds */
    uint64_t bytes;  /* as appended (for rollover) */
    uint64_t copies; /* queue copies and delayed messages ever written to it (compaction's
                      * estimate of its live data: bytes x live / copies) */
    uint32_t pins;   /* deduplication ids still in their window, messages of unknown queues:
                      * kept on disk, never compacted */
    uint64_t hold;   /* compaction: its live records were moved by the batch of this
                      * generation; kept until that batch is synced (SEG_HOLD_FAILED: it
                      * failed, kept until the next start) */
} seg;
#define SEG_HOLD_FAILED UINT64_MAX

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
/* Removes the oldest segments while nothing in them is live, pinned or held (never the
 * active one); their ids are appended to *ids (grown as needed; *n, *cap). Returns how many
 * were removed. */
size_t segset_reclaim(segset *ss, uint32_t **ids, size_t *n, size_t *cap);

/* Compaction (driven by the broker's compact.c): the log is compacted when its non-active
 * segments hold more than COMPACT_FACTOR x their live data + COMPACT_FEW segments; each step
 * moves at most COMPACT_STEP bytes of records out of the oldest segment. */
#define COMPACT_FACTOR 2
#define COMPACT_FEW 2
#define COMPACT_STEP (8u << 20)
/* The oldest segment if it should be compacted now (not active, not pinned, not held, with
 * something live, and the log over the bound above), or NULL. */
seg *segset_compact_pick(segset *ss, uint64_t segment_size);
/* A segment's live data, estimated: bytes x live copies / copies written (at most bytes). */
uint64_t seg_live_bytes(const seg *sg);
void segset_free(segset *ss);

/* segments/<id>.seg under segdir. */
void seg_path(const char *segdir, uint32_t id, char *out, size_t n);
/* The segment ids found in segdir, sorted (malloc'ed; NULL and *n = 0 if none). */
uint32_t *seg_list(const char *segdir, size_t *n);

#endif
