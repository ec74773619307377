/* paging.h — bodies of deep queues live only in the log.
 *
 * A queue copy is paged out by pointing it at a record of its message that is written and
 * synced: the PUBLISH record of a persistent message, or a PAGE record (the same layout, no
 * queues; recovery ignores it) written for any other message. Each paged copy holds one live
 * count on its record's segment, so the segment is not reclaimed under it; reading the copy
 * back (or dropping it) gives the count back. The loop thread knows where a record is only
 * once the writer has written its batch (paging_synced): until then a message is not paged,
 * and a record in a batch that failed is never pointed at. */
#ifndef FERRY_PAGING_H
#define FERRY_PAGING_H

#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "storeio.h"
#include "writer.h"

typedef struct pager {
    sio_file *rfile; /* the segment last read back (loop thread) */
    uint32_t rseg;
    uint64_t rsalt;
} pager;

/* Remembers that m's record starts at `at` in the last piece of the pending batch, so that
 * m learns where it is once the batch is written. */
void paging_note(mlog *l, message *m, size_t at);
/* A batch came back: its message records are now on disk at known offsets (or, if it failed,
 * not at all: such a message is never paged from that record). */
void paging_synced(wbatch *w);
/* 1 if m has a synced record a queue copy can point to (*loc, *len; the copy then holds the
 * segment until paging_release); 0 if not yet (a PAGE record is written for a message
 * without one, unless the disk is nearly full; try again once it is synced). */
int paging_out(mlog *l, int disk_alarm, message *m, uint64_t *loc, uint32_t *len);
/* A paged copy is gone (read back or dropped): its segment's count is given back. */
static inline void paging_release(mlog *l, uint64_t loc) { mlog_release(l, (uint32_t)(loc >> 32)); }

/* One paged copy to read back: where (loc) and an upper bound of its record's size. */
typedef struct page_req {
    uint64_t loc;
    uint32_t size;
    message *m; /* out: the message, or NULL if its record could not be read (logged; its
                 * segment stays held, for recovery) */
    void *tag;  /* the caller's */
} page_req;

/* Reads n paged copies back (one pread per run of neighbouring records); each one read is
 * released. Reorders reqs (by location). */
void paging_read(pager *pg, mlog *l, page_req *reqs, size_t n);
void paging_close(pager *pg);

/* The same read on the helper thread h, for the loop thread never to wait on the disk: the
 * opens, preads and checksums run there; then, on the loop thread, the messages are built
 * and done(ctx, reqs, n) is called with reqs sorted by location, each m set or NULL (logged),
 * and frees reqs afterwards. Unlike paging_read it releases nothing: the caller gives a
 * copy's count back when it takes the message (a copy dropped meanwhile gave it back
 * already). Takes reqs (malloc'd). Returns -1 (reqs untouched) once h is stopped. */
int paging_read_async(helpers *h, const mlog *l, page_req *reqs, size_t n,
                      void (*done)(void *ctx, page_req *reqs, size_t n), void *ctx);

#endif
