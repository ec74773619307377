/* Unit tests of a stream's log (src/streamlog.c) without a broker: appends written by the
 * writer's code path (swrite_run) and committed (swrite_done), reads on the reader thread
 * (polled by hand: no event loop), seeking by offset and by time through the index, segment
 * roll-over and retention, named offsets, recovery (torn tail, a lost index), and a failed
 * write closing its segment. Files go through the real I/O layer in a temporary directory. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storeio.h"
#include "streamlog.h"
#include "unit.h"
#include "util.h"
#include "writer.h"

static char tmpdir[256];

static void fresh_dir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ferry-unit-streamlog-XXXXXX");
    if (!mkdtemp(tmpdir))
        abort();
}

static void rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_dir(p);
        else
            unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

static size_t count_files(const char *ext) {
    char p[400];
    snprintf(p, sizeof p, "%s/streams/00000007", tmpdir);
    DIR *d = opendir(p);
    size_t n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strstr(de->d_name, ext))
            n++;
    if (d)
        closedir(d);
    return n;
}

/* Writes and commits what is pending, as the writer thread and the loop would. */
static int flush(slogs *ss, struct swrite **pending) {
    struct swrite *w = *pending;
    *pending = NULL;
    int err = w ? swrite_run(w) : 0;
    swrite_done(ss, w, err);
    swrite_free(w);
    return err;
}

static void append_n(slog *l, struct swrite **pw, int from, int n, const char *filter) {
    for (int i = from; i < from + n; i++) {
        char body[64];
        int len = snprintf(body, sizeof body, "event-%06d", i);
        slog_append(l, pw, slice_str("ex"), slice_str("rk"), (slice){(const uint8_t *)"\x00\x00", 2},
                    (const uint8_t *)body, (uint64_t)len, slice_str(filter));
    }
}

typedef struct got {
    slog_batch *b;
    int calls;
} got;
static void on_read(void *ctx, slog_batch *b) {
    got *g = ctx;
    g->b = b;
    g->calls++;
}

/* Reads from `from` until the stream's end, checking each event's body by its offset;
 * returns how many events, the first offset in *first. */
static size_t read_all(slogs *ss, slog *l, uint64_t from, size_t max, uint64_t *first) {
    size_t n = 0;
    *first = UINT64_MAX;
    for (;;) {
        got g = {0};
        if (!slog_read(ss, l, from, max, on_read, &g))
            break;
        /* no event loop: wait for the job, then run its done on this thread */
        for (int k = 0; k < 2000 && !g.calls; k++) {
            usleep(1000);
            slogs_poll(ss);
        }
        CHECK(g.calls == 1);
        if (!g.b)
            break;
        CHECK(g.b->err == 0);
        for (size_t i = 0; i < g.b->nrecs; i++) {
            slog_rec *r = &g.b->recs[i];
            char want[64];
            int len = snprintf(want, sizeof want, "event-%06llu", (unsigned long long)r->offset);
            CHECK(r->body.n == (size_t)len && memcmp(r->body.p, want, (size_t)len) == 0);
            CHECK(r->offset >= from);
            CHECK(slice_eqs(r->exchange, "ex") && slice_eqs(r->rkey, "rk") && r->props.n == 2);
            if (*first == UINT64_MAX)
                *first = r->offset;
            n++;
        }
        CHECK(g.b->next > from);
        from = g.b->next;
        slog_batch_free(g.b);
    }
    return n;
}

static void test_appends_are_readable_only_once_committed_and_in_order(void) {
    fresh_dir();
    slogs *ss = slogs_new(tmpdir, NULL);
    slog_limits lim = {-1, -1, 1u << 20};
    slog *l = slog_open(ss, 7, &lim, 1);
    struct swrite *pw = NULL;
    append_n(l, &pw, 0, 1000, "");
    CHECK(slog_end(l) == 1000 && slog_committed(l) == 0);
    uint64_t first;
    CHECK(read_all(ss, l, 0, 4096, &first) == 0); /* nothing committed yet */
    CHECK(flush(ss, &pw) == 0);
    CHECK(slog_committed(l) == 1000 && slog_first(l) == 0 && slog_last(l) == 999);
    CHECK(read_all(ss, l, 0, 4096, &first) == 1000 && first == 0); /* small reads: many batches */
    CHECK(read_all(ss, l, 567, 1u << 20, &first) == 433 && first == 567);
    slogs_free(ss);
    rm_dir(tmpdir);
}

static void test_segments_roll_retention_drops_whole_oldest_ones_and_seeking_still_works(void) {
    fresh_dir();
    slogs *ss = slogs_new(tmpdir, NULL);
    slog_limits lim = {20000, -1, 5000}; /* segments of 5 kB, keep about 20 kB */
    slog *l = slog_open(ss, 7, &lim, 1);
    struct swrite *pw = NULL;
    for (int k = 0; k < 10; k++) { /* several batches: retention only drops committed segments */
        append_n(l, &pw, k * 200, 200, "");
        CHECK(flush(ss, &pw) == 0);
    }
    CHECK(slog_first(l) > 0 && slog_end(l) == 2000);
    CHECK(slog_bytes(l) <= 20000 + 5000 + 100);
    CHECK(count_files(".seg") == slog_segments(l) && count_files(".idx") == slog_segments(l));
    uint64_t first;
    size_t n = read_all(ss, l, 0, 1u << 20, &first);
    CHECK(first == slog_first(l) && n == 2000 - first);
    slogs_free(ss);
    rm_dir(tmpdir);
}

static void test_recovery_cuts_a_torn_tail_and_rebuilds_a_lost_index(void) {
    fresh_dir();
    slogs *ss = slogs_new(tmpdir, NULL);
    slog_limits lim = {-1, -1, 1u << 20};
    slog *l = slog_open(ss, 7, &lim, 1);
    struct swrite *pw = NULL;
    append_n(l, &pw, 0, 5000, "");
    CHECK(flush(ss, &pw) == 0);
    slog_put_name(l, &pw, slice_str("billing"), 1234);
    slog_put_name(l, &pw, slice_str("billing"), 2345);
    slog_put_name(l, &pw, slice_str("audit"), 7);
    CHECK(flush(ss, &pw) == 0);
    slogs_free(ss);
    char seg[600], idx[600];
    snprintf(seg, sizeof seg, "%s/streams/00000007/0000000000000000.seg", tmpdir);
    snprintf(idx, sizeof idx, "%s/streams/00000007/0000000000000000.idx", tmpdir);
    struct stat st;
    stat(seg, &st);
    CHECK(truncate(seg, st.st_size - 10) == 0); /* the last record torn */
    unlink(idx);                                /* and the index lost */
    ss = slogs_new(tmpdir, NULL);
    l = slog_open(ss, 7, &lim, 0);
    CHECK(slog_end(l) == 4999 && slog_committed(l) == 4999);
    uint64_t first;
    CHECK(read_all(ss, l, 4000, 1u << 20, &first) == 999 && first == 4000); /* the rebuilt index seeks */
    slogs_free(ss);
    rm_dir(tmpdir);
}

typedef struct names {
    int n;
    uint64_t billing, audit;
} names;
static void on_name(void *ctx, slice name, uint64_t off) {
    names *x = ctx;
    x->n++;
    if (slice_eqs(name, "billing"))
        x->billing = off;
    if (slice_eqs(name, "audit"))
        x->audit = off;
}

static void test_named_offsets_last_record_wins_across_a_reopen(void) {
    fresh_dir();
    slogs *ss = slogs_new(tmpdir, NULL);
    slog_limits lim = {-1, -1, 1u << 20};
    slog *l = slog_open(ss, 7, &lim, 1);
    struct swrite *pw = NULL;
    append_n(l, &pw, 0, 10, "");
    for (int i = 0; i < 100; i++)
        slog_put_name(l, &pw, slice_str("billing"), (uint64_t)i);
    slog_put_name(l, &pw, slice_str("audit"), 7);
    CHECK(flush(ss, &pw) == 0);
    slogs_free(ss);
    ss = slogs_new(tmpdir, NULL);
    l = slog_open(ss, 7, &lim, 0);
    names x = {0};
    slog_each_name(l, on_name, &x);
    CHECK(x.n == 2 && x.billing == 99 && x.audit == 7);
    slogs_free(ss);
    rm_dir(tmpdir);
}

static void test_seek_by_time_finds_the_first_event_at_or_after_it(void) {
    fresh_dir();
    slogs *ss = slogs_new(tmpdir, NULL);
    slog_limits lim = {-1, -1, 1u << 20};
    slog *l = slog_open(ss, 7, &lim, 1);
    struct swrite *pw = NULL;
    fake_clock_ms = 1000000;
    append_n(l, &pw, 0, 3000, "");
    fake_clock_ms = 2000000;
    append_n(l, &pw, 3000, 3000, "");
    fake_clock_ms = 0;
    CHECK(flush(ss, &pw) == 0);
    uint64_t at = slog_seek_time(l, 2000000);
    CHECK(at <= 3000 && at + 1000 > 3000); /* an index entry at or before the first one at that time */
    CHECK(slog_seek_time(l, 1) == 0);
    CHECK(slog_seek_time(l, 3000000) == slog_committed(l)); /* the future: the end */
    slogs_free(ss);
    rm_dir(tmpdir);
}

static void test_a_failed_write_closes_its_segment_and_fails_what_is_batched_for_it(void) {
    fresh_dir();
    slogs *ss = slogs_new(tmpdir, NULL);
    slog_limits lim = {-1, -1, 1u << 20};
    slog *l = slog_open(ss, 7, &lim, 1);
    struct swrite *pw = NULL;
    append_n(l, &pw, 0, 10, "");
    CHECK(flush(ss, &pw) == 0);
    append_n(l, &pw, 10, 10, ""); /* this batch "fails" */
    struct swrite *failed = pw;
    pw = NULL;
    append_n(l, &pw, 20, 5, ""); /* batched meanwhile, for the same segment */
    swrite_done(ss, failed, -5);
    swrite_free(failed);
    swrite_doom(ss, pw);
    CHECK(flush(ss, &pw) != 0); /* doomed */
    CHECK(slog_committed(l) == 10);
    append_n(l, &pw, 25, 5, ""); /* a new segment, after the gap */
    CHECK(flush(ss, &pw) == 0);
    CHECK(slog_segments(l) == 2 && slog_committed(l) == 30);
    uint64_t first;
    CHECK(read_all(ss, l, 0, 1u << 20, &first) == 15); /* 0-9 and 25-29: the gap is skipped */
    slogs_free(ss);
    rm_dir(tmpdir);
}

int main(void) {
    log_level = LOG_ERROR + 1;
    sio_init();
    static const unit_test tests[] = {
        {"appends_are_readable_only_once_committed_and_in_order",
         test_appends_are_readable_only_once_committed_and_in_order},
        {"segments_roll_retention_drops_whole_oldest_ones_and_seeking_still_works",
         test_segments_roll_retention_drops_whole_oldest_ones_and_seeking_still_works},
        {"recovery_cuts_a_torn_tail_and_rebuilds_a_lost_index",
         test_recovery_cuts_a_torn_tail_and_rebuilds_a_lost_index},
        {"named_offsets_last_record_wins_across_a_reopen",
         test_named_offsets_last_record_wins_across_a_reopen},
        {"seek_by_time_finds_the_first_event_at_or_after_it",
         test_seek_by_time_finds_the_first_event_at_or_after_it},
        {"a_failed_write_closes_its_segment_and_fails_what_is_batched_for_it",
         test_a_failed_write_closes_its_segment_and_fails_what_is_batched_for_it},
    };
    return unit_run(tests, sizeof tests / sizeof tests[0]);
}
