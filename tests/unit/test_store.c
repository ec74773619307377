/* Unit tests for the store's layers, without a broker: record framing and every way a record
 * can be damaged, the segment set and its reclamation, the writer and the helper-job queue,
 * meta.log, and recovery of hand-written logs into a recording sink. Files go through the
 * real I/O layer (storeio.c) in a fresh temporary directory. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "meta.h"
#include "paging.h"
#include "record.h"
#include "recover.h"
#include "segment.h"
#include "store.h"
#include "storeio.h"
#include "unit.h"
#include "util.h"
#include "writer.h"

static slice S(const char *s) { return slice_str(s); }

/* A fresh data directory (with segments/) for one test. */
static char tmpdir[256], segdir[300];
static void fresh_dir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ferry-unit-store-XXXXXX");
    if (!mkdtemp(tmpdir))
        abort();
    snprintf(segdir, sizeof segdir, "%s/segments", tmpdir);
    mkdir(segdir, 0750);
}

static void rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[600];
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

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (n && fwrite(p, 1, n, f) != n)
        abort();
    fclose(f);
}

/* Builds a segment file in b: headers under salt, then records appended by the caller. */
static void seg_file(uint32_t id, const buf *b) {
    char path[700];
    seg_path(segdir, id, path, sizeof path);
    write_file(path, buf_head(b), b->len);
}

static const uint8_t persistent_props[] = {0x10, 0x00, 0x02}; /* flags: delivery-mode; 2 */
#define PERSISTENT ((slice){persistent_props, sizeof persistent_props})

static void put_pub(buf *b, uint64_t salt, uint32_t n, const uint32_t *qids, const uint64_t *seqs, const char *body) {
    rec_put_publish(b, R_PUBLISH, salt, wall_ms(), -1, qids, seqs, n, S("ex"), S("key"), PERSISTENT, S(body));
}

/* ---- records ---- */

typedef struct seen {
    int n;
    uint8_t types[64];
    size_t lens[64];
} seen;

static void collect(void *ctx, const uint8_t *rec, size_t len) {
    seen *s = ctx;
    if (s->n < 64) {
        s->types[s->n] = rec_type(rec);
        s->lens[s->n] = len;
    }
    s->n++;
}

static buf no_spare; /* stays empty: batches in these tests start without a spare buffer */

/* A written batch's largest record buffer (up to SPARE_MAX) is kept, emptied, and the next
 * batch's first piece starts with its room; a spare already held is not replaced. */
static void test_a_written_batch_leaves_its_largest_buffer_for_the_next_one(void) {
    segset ss = {0};
    segset_add(&ss, 1, 7, 0);
    wbatch *w = wbatch_new();
    buf spare;
    buf_init(&spare);
    for (int i = 0; i < 100; i++)
        rec_put_copy(wbatch_append(w, &ss, 1 << 20, REC_COPY_SIZE, &spare), R_SETTLE, 1, 1, (uint64_t)i);
    size_t cap = w->pieces[0].data.cap;
    CHECK(w->npieces == 1 && cap >= 100 * REC_COPY_SIZE);
    wbatch_keep_spare(w, &spare);
    CHECK(spare.cap == cap && spare.len == 0 && spare.off == 0 && w->pieces[0].data.cap == 0);
    wbatch_free(w);
    w = wbatch_new();
    buf *b = wbatch_append(w, &ss, 1 << 20, REC_COPY_SIZE, &spare);
    CHECK(b->cap == cap && b->len == 0 && spare.cap == 0);
    rec_put_copy(b, R_SETTLE, 1, 1, 1);
    buf other;
    buf_init(&other);
    buf_grow(&other, 16);
    buf keep = other;
    wbatch_keep_spare(w, &other); /* already holding one: unchanged */
    CHECK(other.data == keep.data && w->pieces[0].data.cap == cap);
    buf_free(&other);
    wbatch_free(w);
    buf_free(&spare);
    segset_free(&ss);
}

/* The record checksum: the known CRC-32C of "123456789", and the instruction path (three
 * interleaved streams joined by shift tables past 768 bytes) equal to the table-driven one
 * for every length up to 2 blocks of 8 KiB x 3 and more, at every alignment, from any seed. */
static void test_crc32c_matches_the_table_driven_crc_at_every_length_and_alignment(void) {
    CHECK(crc32c(0, "123456789", 9) == 0xE3069283u);
    CHECK(crc32c_portable(0, "123456789", 9) == 0xE3069283u);
    CHECK(crc32c(crc32c(0, "12345", 5), "6789", 4) == 0xE3069283u);
    size_t n = 3 * 8192 * 2 + 777;
    uint8_t *b = malloc(n + 8);
    uint32_t x = 12345;
    for (size_t i = 0; i < n + 8; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (uint8_t)(x >> 16);
    }
    int bad = 0;
    for (size_t len = 0; len <= 3 * 256 * 2 + 9; len++)
        for (size_t off = 0; off < 8; off++)
            bad += crc32c(len * 7919u, b + off, len) != crc32c_portable(len * 7919u, b + off, len);
    for (size_t len = 3 * 8192 - 9; len <= n; len += 4093)
        for (size_t off = 0; off < 8; off += 3)
            bad += crc32c(0xdeadbeefu, b + off, len) != crc32c_portable(0xdeadbeefu, b + off, len);
    CHECK(bad == 0);
    free(b);
}

static void test_a_record_round_trips_and_checks_under_its_salt(void) {
    buf b;
    buf_init(&b);
    uint32_t qids[2] = {7, 9};
    uint64_t seqs[2] = {1, UINT64_MAX};
    put_pub(&b, 1234, 2, qids, seqs, "hello");
    CHECK(b.len == rec_publish_size(2, 2, 3, 3, 5));
    CHECK(rec_check(buf_head(&b), b.len, 1234) == b.len);
    CHECK(rec_check(buf_head(&b), b.len, 1235) == 0); /* another file's salt */
    rec_publish p;
    CHECK(rec_publish_read(buf_head(&b), b.len, &p) == 0);
    CHECK(p.nq == 2 && p.ttl == -1 && slice_eqs(p.exchange, "ex") && slice_eqs(p.rkey, "key"));
    CHECK(slice_eqs(p.body, "hello") && p.props.n == 3);
    uint32_t q;
    uint64_t sq;
    rec_publish_queue(&p, 1, &q, &sq);
    CHECK(q == 9 && sq == UINT64_MAX);
    buf_free(&b);

    buf_init(&b);
    rec_put_copy(&b, R_SETTLE, 5, 42, 99);
    CHECK(b.len == REC_COPY_SIZE && rec_check(buf_head(&b), b.len, 5) == b.len && rec_type(buf_head(&b)) == R_SETTLE);
    CHECK(rec_copy_read(buf_head(&b), b.len, &q, &sq) == 0 && q == 42 && sq == 99);
    buf_free(&b);

    buf_init(&b);
    rec_delayed d = {.sid = 3, .due = 1000, .to_queue = 0, .target = S("dx"), .exchange = S("e"), .rkey = S("k"),
                     .props = S(""), .body = S("B")};
    rec_put_delayed(&b, 6, &d);
    rec_delayed r;
    CHECK(rec_check(buf_head(&b), b.len, 6) == b.len && rec_delayed_read(buf_head(&b), b.len, &r) == 0);
    CHECK(r.sid == 3 && r.due == 1000 && !r.to_queue && slice_eqs(r.target, "dx") && slice_eqs(r.body, "B"));
    CHECK(b.len <= rec_delayed_size(1, 1, 0, 1));
    CHECK(r.vhost.n == 0); /* "/": the record keeps the bytes it had before vhosts */
    size_t slash_len = b.len;
    buf_free(&b);

    /* An exchange of another vhost names its vhost; "/" written explicitly is the old form. */
    buf_init(&b);
    d.vhost = S("/");
    rec_put_delayed(&b, 6, &d);
    CHECK(b.len == slash_len);
    buf_free(&b);
    buf_init(&b);
    d.vhost = S("tenant-a");
    rec_put_delayed(&b, 6, &d);
    CHECK(rec_check(buf_head(&b), b.len, 6) == b.len && rec_delayed_read(buf_head(&b), b.len, &r) == 0);
    CHECK(!r.to_queue && slice_eqs(r.vhost, "tenant-a") && slice_eqs(r.target, "dx") && slice_eqs(r.body, "B"));
    CHECK(b.len <= rec_delayed_size(1, 1, 0, 1));
    buf_free(&b);
}

/* A message fanned out to more durable queues than 16 bits count (defect: the count was
 * written as a u16, so 65,536 queues wrote a record that read back as 0 queues). */
static void test_a_publish_to_more_than_65535_queues_round_trips(void) {
    uint32_t n = 70000;
    uint32_t *qids = xmalloc(n * sizeof *qids);
    uint64_t *seqs = xmalloc(n * sizeof *seqs);
    for (uint32_t i = 0; i < n; i++)
        qids[i] = i + 1, seqs[i] = 1000 + i;
    buf b;
    buf_init(&b);
    rec_put_publish(&b, R_PUBLISH, 9, 1, -1, qids, seqs, n, S("fan"), S(""), PERSISTENT, S("wide"));
    CHECK(b.len == rec_publish_size(n, 3, 0, 3, 4));
    CHECK(rec_check(buf_head(&b), b.len, 9) == b.len);
    rec_publish p;
    CHECK(rec_publish_read(buf_head(&b), b.len, &p) == 0);
    CHECK(p.nq == n && slice_eqs(p.body, "wide") && slice_eqs(p.exchange, "fan"));
    uint32_t q = 0;
    uint64_t sq = 0;
    if (p.nq == n) {
        rec_publish_queue(&p, n - 1, &q, &sq);
        CHECK(q == n && sq == 1000 + n - 1);
        rec_publish_queue(&p, 65536, &q, &sq);
        CHECK(q == 65537 && sq == 1000 + 65536);
    }
    buf_free(&b);
    /* Up to 65,535 queues the record keeps the original layout (type 1, 16-bit count). */
    buf_init(&b);
    rec_put_publish(&b, R_PUBLISH, 9, 1, -1, qids, seqs, 65535, S(""), S(""), PERSISTENT, S("x"));
    CHECK(rec_type(buf_head(&b)) == R_PUBLISH && b.len == rec_publish_size(65535, 0, 0, 3, 1));
    CHECK(rec_publish_read(buf_head(&b), b.len, &p) == 0 && p.nq == 65535);
    buf_free(&b);
    free(qids);
    free(seqs);
}

static void test_every_damaged_record_is_refused(void) {
    buf b;
    buf_init(&b);
    rec_put_copy(&b, R_SETTLE, 77, 1, 2);
    uint8_t *p = (uint8_t *)buf_head(&b);
    size_t n = b.len;
    CHECK(rec_check(p, n, 77) == n);
    for (size_t i = 0; i < n; i++) { /* any flipped byte: magic, checksum, length, type, payload */
        for (int bit = 0; bit < 8; bit++) {
            p[i] ^= (uint8_t)(1u << bit);
            CHECK(rec_check(p, n, 77) == 0);
            p[i] ^= (uint8_t)(1u << bit);
        }
    }
    for (size_t k = 0; k < n; k++) /* cut anywhere: not a record */
        CHECK(rec_check(p, k, 77) == 0);
    CHECK(rec_check(p, n, 0) == 0); /* no salt is another salt */
    /* A length field claiming more than is there. */
    p[8] = 0xff;
    CHECK(rec_check(p, n, 77) == 0);
    buf_free(&b);
}

static void test_a_file_salt_survives_one_damaged_header_copy(void) {
    buf b;
    buf_init(&b);
    rec_put_headers(&b, 0xABCDEF);
    CHECK(b.len == 2 * REC_FILE_HEADER);
    uint8_t *p = (uint8_t *)buf_head(&b);
    CHECK(rec_read_salt(p, b.len) == 0xABCDEF);
    p[REC_HEADER + 2] ^= 1; /* first copy */
    CHECK(rec_read_salt(p, b.len) == 0xABCDEF);
    p[REC_FILE_HEADER + REC_HEADER + 2] ^= 1; /* both */
    CHECK(rec_read_salt(p, b.len) == 0);
    p[REC_HEADER + 2] ^= 1; /* only the second */
    CHECK(rec_read_salt(p, b.len) == 0xABCDEF);
    CHECK(rec_read_salt(p, 5) == 0);
    buf_free(&b);
}

static void test_scan_skips_a_corrupt_record_in_the_middle_and_stops_at_a_torn_tail(void) {
    buf b;
    buf_init(&b);
    rec_put_headers(&b, 99);
    size_t first = b.len;
    for (uint32_t i = 0; i < 5; i++)
        rec_put_copy(&b, R_DELIVERED, 99, 1, i);
    size_t whole = b.len;
    uint8_t *p = (uint8_t *)buf_head(&b);
    p[first + 2 * REC_COPY_SIZE + 20] ^= 0x40; /* the third record's payload */
    seen s = {0};
    uint64_t corrupt = 0;
    size_t end = rec_scan("t", p, whole, 1, collect, &s, &corrupt);
    CHECK(s.n == 4 && corrupt == 1 && end == whole);
    /* A torn tail: the last record cut short is not applied, and the good data ends before it. */
    s = (seen){0};
    corrupt = 0;
    end = rec_scan("t", p, whole - 3, 1, collect, &s, &corrupt);
    CHECK(s.n == 3 && corrupt == 1 && end == whole - REC_COPY_SIZE);
    /* Both headers unreadable: nothing in the file can be trusted. */
    p[3] ^= 1;
    p[REC_FILE_HEADER + 3] ^= 1;
    s = (seen){0};
    corrupt = 0;
    CHECK(rec_scan("t", p, whole, 1, collect, &s, &corrupt) == 0 && s.n == 0 && corrupt == 1);
    /* Bytes of a body that look like a record never pass: they are checked under the salt. */
    buf_free(&b);
    buf_init(&b);
    rec_put_headers(&b, 5);
    buf inner;
    buf_init(&inner);
    rec_put_copy(&inner, R_SETTLE, 0, 1, 1); /* a record under no salt, as a publisher could forge */
    uint32_t qid = 1;
    uint64_t seq = 1;
    rec_put_publish(&b, R_PUBLISH, 5, 0, -1, &qid, &seq, 1, S(""), S(""), S(""),
                    (slice){buf_head(&inner), inner.len});
    p = (uint8_t *)buf_head(&b);
    p[2 * REC_FILE_HEADER + 5] ^= 1; /* damage the publish: the scan searches past it */
    s = (seen){0};
    corrupt = 0;
    rec_scan("t", p, b.len, 0, collect, &s, &corrupt);
    CHECK(s.n == 0);
    buf_free(&inner);
    buf_free(&b);
}

/* ---- the segment set ---- */

static void test_reclamation_takes_only_the_oldest_empty_segments_never_a_live_or_the_active_one(void) {
    segset ss = {0};
    for (uint32_t id = 1; id <= 5; id++)
        segset_add(&ss, id, id, 0);
    segset_find(&ss, 2)->live = 1;
    segset_find(&ss, 4)->live = 3;
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 1 && n == 1 && ids[0] == 1);
    CHECK(segset_find(&ss, 1) == NULL && segset_find(&ss, 2) != NULL);
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 0); /* 2 is live */
    CHECK(segset_release(&ss, 2) == 1);              /* the oldest: reclaim may follow */
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 2 && ids[1] == 2 && ids[2] == 3);
    CHECK(segset_release(&ss, 5) == 0); /* not the oldest; and live 0 stays 0 */
    CHECK(segset_find(&ss, 5)->live == 0);
    for (int i = 0; i < 3; i++)
        segset_release(&ss, 4);
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 1 && ids[3] == 4);
    /* The active segment stays even when empty. */
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 0 && ss.n == 1 && segset_active(&ss)->id == 5);
    CHECK(segset_release(&ss, 99) == 0); /* an unknown id changes nothing */
    free(ids);
    segset_free(&ss);
}

static void test_segments_after_a_gap_in_the_ids_are_found_and_kept_while_live(void) {
    segset ss = {0};
    segset_add(&ss, 1, 1, 0);
    segset_add(&ss, 3, 3, 0); /* 2 is missing: lost, or unreadable at recovery */
    segset_add(&ss, 4, 4, 0);
    segset_add(&ss, 9, 9, 0);
    CHECK(segset_find(&ss, 2) == NULL && segset_find(&ss, 5) == NULL && segset_find(&ss, 10) == NULL);
    CHECK(segset_find(&ss, 0) == NULL);
    CHECK(segset_find(&ss, 3) && segset_find(&ss, 3)->id == 3);
    CHECK(segset_find(&ss, 4) && segset_find(&ss, 4)->id == 4);
    CHECK(segset_find(&ss, 9) == segset_active(&ss));
    segset_find(&ss, 1)->live = 1;
    segset_find(&ss, 3)->live = 2;
    segset_find(&ss, 4)->live = 1;
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    CHECK(segset_release(&ss, 1) == 1); /* the oldest drains: only it goes */
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 1 && ids[0] == 1);
    CHECK(segset_release(&ss, 4) == 0 && segset_find(&ss, 4)->live == 0);
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 0); /* 3 still has two */
    CHECK(segset_find(&ss, 3)->live == 2);
    free(ids);
    segset_free(&ss);
}

static void test_seg_list_finds_segment_files_sorted_and_ignores_others(void) {
    fresh_dir();
    buf b;
    buf_init(&b);
    rec_put_headers(&b, 1);
    seg_file(0x20, &b);
    seg_file(3, &b);
    seg_file(0xffffffffu, &b);
    char p[700];
    snprintf(p, sizeof p, "%s/0000000000000003.seg.tmp", segdir);
    write_file(p, "x", 1);
    snprintf(p, sizeof p, "%s/00000001000000000.seg", segdir);
    write_file(p, "x", 1);
    size_t n;
    uint32_t *ids = seg_list(segdir, &n);
    CHECK(n == 3 && ids && ids[0] == 3 && ids[1] == 0x20 && ids[2] == 0xffffffffu);
    free(ids);
    buf_free(&b);
    rm_dir(tmpdir);
}

/* ---- the writer ---- */

static void test_the_writer_puts_headers_then_records_in_each_segment(void) {
    fresh_dir();
    segset ss = {0};
    segset_add(&ss, 1, 111, 0);
    wbatch *w = wbatch_new();
    buf *b = wbatch_append(w, &ss, 200, REC_COPY_SIZE, &no_spare);
    rec_put_copy(b, R_SETTLE, 111, 1, 1);
    for (int i = 0; i < 10; i++) { /* rolls over to new segments at 200 bytes */
        b = wbatch_append(w, &ss, 200, REC_COPY_SIZE, &no_spare);
        rec_put_copy(b, R_DELIVERED, segset_active(&ss)->salt, 1, (uint64_t)i);
    }
    CHECK(ss.n > 1 && w->npieces == ss.n);
    writer wr = {0};
    snprintf(wr.segdir, sizeof wr.segdir, "%s", segdir);
    CHECK(writer_write(&wr, w) == 0);
    size_t total = 0;
    for (size_t i = 0; i < ss.n; i++) {
        char path[700];
        seg_path(segdir, ss.a[i].id, path, sizeof path);
        uint8_t *data;
        size_t len;
        CHECK(rec_read_file(path, &data, &len) == 0);
        CHECK(rec_read_salt(data, len) == ss.a[i].salt);
        CHECK(len == ss.a[i].bytes); /* what the loop thread counted is what is on disk */
        CHECK(w->pieces[i].off == 2 * REC_FILE_HEADER);
        seen s = {0};
        uint64_t corrupt = 0;
        CHECK(rec_scan(path, data, len, 1, collect, &s, &corrupt) == len && corrupt == 0);
        total += (size_t)s.n;
        free(data);
    }
    CHECK(total == 11);
    if (wr.wfile)
        sio_close(wr.wfile);
    wbatch_free(w);
    segset_free(&ss);
    rm_dir(tmpdir);
}

static int batches_done;
static void on_batch(void *ctx, wbatch *w) {
    (void)ctx;
    CHECK(w->err == 0);
    batches_done++;
    wbatch_free(w);
}

static void test_the_writer_thread_writes_a_batch_then_deletes_reclaimed_segments(void) {
    fresh_dir();
    segset ss = {0};
    segset_add(&ss, 1, 1, 0);
    writer wr = {0};
    CHECK(writer_start(&wr, NULL, segdir, on_batch, NULL) == 0);
    wbatch *w = wbatch_new();
    rec_put_copy(wbatch_append(w, &ss, 1 << 20, REC_COPY_SIZE, &no_spare), R_SETTLE, 1, 1, 1);
    writer_submit(&wr, w);
    CHECK(!writer_idle(&wr));
    for (int i = 0; i < 5000 && batches_done == 0; i++) {
        usleep(1000);
        writer_poll(&wr);
    }
    CHECK(batches_done == 1 && writer_idle(&wr));
    char path[700];
    seg_path(segdir, 1, path, sizeof path);
    CHECK(access(path, F_OK) == 0);
    /* Segment 1 is empty and no longer active: the next batch deletes it after writing. */
    segset_add(&ss, 2, 2, 0);
    w = wbatch_new();
    rec_put_copy(wbatch_append(w, &ss, 1 << 20, REC_COPY_SIZE, &no_spare), R_SETTLE, 2, 1, 2);
    wbatch_reclaim(w, &ss);
    CHECK(w->nunlinks == 1 && w->unlinks[0] == 1);
    writer_submit(&wr, w);
    w = writer_wait(&wr);
    CHECK(w && w->err == 0);
    wbatch_free(w);
    CHECK(access(path, F_OK) != 0);
    writer_stop(&wr);
    segset_free(&ss);
    rm_dir(tmpdir);
}

typedef struct tjob {
    job j;
    int id, ran, done;
} tjob;
static int job_order[8], njob_done;
static void tjob_run(job *j) {
    ((tjob *)j)->ran = 1;
    usleep(1000);
}
static void tjob_done(job *j) {
    tjob *t = (tjob *)j;
    CHECK(t->ran);
    t->done++;
    job_order[njob_done++ % 8] = t->id;
}

static void test_helper_jobs_run_in_order_and_hand_back_each_result_once(void) {
    helpers h = {0};
    CHECK(helpers_start(&h, NULL) == 0);
    tjob jobs[5];
    for (int i = 0; i < 5; i++) {
        jobs[i] = (tjob){{tjob_run, tjob_done, NULL}, i, 0, 0};
        helpers_submit(&h, &jobs[i].j);
    }
    for (int i = 0; i < 5000 && njob_done < 3; i++) {
        usleep(1000);
        helpers_poll(&h);
    }
    CHECK(njob_done >= 3);
    helpers_stop(&h); /* runs what is left and hands it back */
    CHECK(njob_done == 5);
    for (int i = 0; i < 5; i++)
        CHECK(job_order[i] == i && jobs[i].done == 1);
}

/* ---- meta.log ---- */

typedef struct defs {
    int nx, nxdel, nq, nqdel, nbind, nunbind, naccess, ncron;
    uint32_t last_qid;
    char last_bind_dst[32], last_vhost[32], last_access[32], last_cron[32];
} defs;

static void d_exchange(void *ctx, slice vh, slice name, uint8_t type, uint8_t flags, slice args) {
    (void)name, (void)type, (void)flags, (void)args;
    ((defs *)ctx)->nx++;
    snprintf(((defs *)ctx)->last_vhost, 32, "%.*s", (int)vh.n, (const char *)vh.p);
}
static void d_exchange_delete(void *ctx, slice vh, slice name) {
    (void)name, (void)vh;
    ((defs *)ctx)->nxdel++;
}
static void d_queue(void *ctx, uint32_t qid, slice vh, slice name, uint8_t flags, slice args) {
    (void)name, (void)flags, (void)args;
    ((defs *)ctx)->nq++;
    ((defs *)ctx)->last_qid = qid;
    snprintf(((defs *)ctx)->last_vhost, 32, "%.*s", (int)vh.n, (const char *)vh.p);
}
static void d_access(void *ctx, slice payload) {
    ((defs *)ctx)->naccess++;
    snprintf(((defs *)ctx)->last_access, 32, "%.*s", (int)payload.n, (const char *)payload.p);
}
static void d_queue_delete(void *ctx, uint32_t qid) {
    (void)qid;
    ((defs *)ctx)->nqdel++;
}
static void d_binding(void *ctx, int add, slice vh, slice src, int to_exchange, slice dst, slice key, slice args) {
    (void)src, (void)to_exchange, (void)key, (void)args, (void)vh;
    defs *d = ctx;
    add ? d->nbind++ : d->nunbind++;
    snprintf(d->last_bind_dst, sizeof d->last_bind_dst, "%.*s", (int)dst.n, (const char *)dst.p);
}
static void d_cron(void *ctx, slice payload) { /* M_CRON: opaque bytes, as M_ACCESS */
    ((defs *)ctx)->ncron++;
    snprintf(((defs *)ctx)->last_cron, 32, "%.*s", (int)payload.n, (const char *)payload.p);
}
static const meta_sink defs_sink = {d_exchange, d_exchange_delete, d_queue, d_queue_delete, d_binding, d_access, d_cron};

static void emit_one_queue(void *ctx, buf *out, uint64_t salt) {
    (void)ctx;
    meta_put_queue(out, salt, 12, S("/"), S("kept"), 0, S(""));
}

static void test_meta_log_loads_in_order_compacts_and_appends(void) {
    fresh_dir();
    rmdir(segdir); /* a new, empty data directory */
    char err[300];
    CHECK(meta_check_version(tmpdir, err, sizeof err) == 0);
    CHECK(meta_check_version(tmpdir, err, sizeof err) == 0); /* written once, then read */
    char vpath[600];
    snprintf(vpath, sizeof vpath, "%s/VERSION", tmpdir);
    write_file(vpath, "ferry-store 2\n", 14);
    CHECK(meta_check_version(tmpdir, err, sizeof err) < 0 && strstr(err, "refusing"));
    buf b;
    buf_init(&b);
    rec_put_headers(&b, 8);
    meta_put_exchange(&b, 8, S("/"), S("x"), 1, 1, S(""));
    meta_put_queue(&b, 8, 5, S("/"), S("q"), 0, S(""));
    meta_put_binding(&b, 8, 1, S("/"), S("x"), 0, S("q"), S("k"), S(""));
    meta_put_binding(&b, 8, 0, S("/"), S("x"), 0, S("q"), S("k"), S(""));
    meta_put_queue_del(&b, 8, 5);
    meta_put_exchange_del(&b, 8, S("/"), S("x"));
    meta_put_queue(&b, 8, 0, S("/"), S("no id"), 0, S("")); /* qid 0 is never a stored queue */
    meta_put_exchange(&b, 8, S("team-a"), S("x"), 1, 1, S("")); /* another vhost: carried */
    meta_put_access(&b, 8, S("user-record"));
    meta_put_cron(&b, 8, S("schedule-record"));
    char path[600];
    snprintf(path, sizeof path, "%s/meta.log", tmpdir);
    write_file(path, buf_head(&b), b.len);
    meta mt = {0};
    defs d = {0};
    CHECK(meta_load(&mt, tmpdir, &defs_sink, &d) == 0);
    CHECK(d.nx == 2 && d.nq == 1 && d.nbind == 1 && d.nunbind == 1 && d.nqdel == 1 && d.nxdel == 1);
    CHECK(strcmp(d.last_vhost, "team-a") == 0 && d.naccess == 1 && strcmp(d.last_access, "user-record") == 0);
    CHECK(d.ncron == 1 && strcmp(d.last_cron, "schedule-record") == 0);
    CHECK(strcmp(d.last_bind_dst, "q") == 0 && mt.next_qid == 6);
    CHECK(meta_compact(&mt, emit_one_queue, NULL) == 0);
    buf_free(&b);
    buf_init(&b);
    meta_put_queue(&b, mt.salt, meta_new_qid(&mt), S("/"), S("new"), 0, S(""));
    CHECK(meta_append(&mt, &b) == 0);
    meta_close(&mt);
    meta mt2 = {0};
    d = (defs){0};
    CHECK(meta_load(&mt2, tmpdir, &defs_sink, &d) == 0);
    CHECK(d.nq == 2 && d.nx == 0 && d.last_qid == 6 && mt2.next_qid == 13 && strcmp(d.last_vhost, "/") == 0);
    buf_free(&b);
    rm_dir(tmpdir);
}

static void test_a_damaged_meta_log_is_kept_and_reported(void) {
    fresh_dir();
    buf b;
    buf_init(&b);
    rec_put_headers(&b, 8);
    meta_put_queue(&b, 8, 1, S("/"), S("a"), 0, S(""));
    meta_put_queue(&b, 8, 2, S("/"), S("b"), 0, S(""));
    meta_put_queue(&b, 8, 3, S("/"), S("c"), 0, S(""));
    ((uint8_t *)buf_head(&b))[2 * REC_FILE_HEADER + 20] ^= 1; /* queue a */
    char path[600];
    snprintf(path, sizeof path, "%s/meta.log", tmpdir);
    write_file(path, buf_head(&b), b.len);
    meta mt = {0};
    defs d = {0};
    CHECK(meta_load(&mt, tmpdir, &defs_sink, &d) == 1);
    CHECK(d.nq == 2 && mt.corrupt == 1);
    /* Even once rewritten whole, the copy kept for a person keeps it "damaged". */
    CHECK(meta_compact(&mt, emit_one_queue, NULL) == 0);
    meta_close(&mt);
    meta mt2 = {0};
    d = (defs){0};
    CHECK(meta_load(&mt2, tmpdir, &defs_sink, &d) == 1 && mt2.corrupt == 0);
    buf_free(&b);
    rm_dir(tmpdir);
}

/* ---- recovery into a recording sink ---- */

typedef struct rcq { /* a queue as the recording sink sees it */
    uint32_t qid;
    int64_t dedup;
    int pageable;
    uint64_t seqs[64];
    uint16_t deliveries[64];
    int paged[64];
    int n;
    uint64_t next_seq;
    int dedups;
} rcq;

typedef struct rec_log {
    rcq q[4];
    int nq;
    int ndelayed;
    uint64_t delayed_sids[8];
} rec_log;

static void r_queues(void *ctx, void (*add)(void *rc, const rqueue *info), void *rc) {
    rec_log *l = ctx;
    for (int i = 0; i < l->nq; i++)
        add(rc, &(rqueue){l->q[i].qid, &l->q[i], l->q[i].dedup, l->q[i].pageable});
}
static void r_dedup(void *ctx, void *q, const message *m, uint64_t at, uint32_t seg) {
    (void)ctx, (void)m, (void)at, (void)seg;
    ((rcq *)q)->dedups++;
}
static void r_copy(void *ctx, void *qp, const rcopy *c) {
    (void)ctx;
    rcq *q = qp;
    if (q->n < 64) {
        q->seqs[q->n] = c->seq;
        q->deliveries[q->n] = c->deliveries;
        q->paged[q->n] = c->m == NULL;
    }
    q->n++;
    message_unref(c->m);
}
static void r_next_seq(void *ctx, void *q, uint64_t next) {
    (void)ctx;
    ((rcq *)q)->next_seq = next;
}
static int r_delayed(void *ctx, uint64_t sid, uint64_t due, slice vh, slice x, void *q, message *m, uint32_t seg) {
    (void)due, (void)vh, (void)x, (void)q, (void)seg;
    rec_log *l = ctx;
    if (l->ndelayed < 8)
        l->delayed_sids[l->ndelayed] = sid;
    l->ndelayed++;
    message_unref(m);
    return 1;
}
static const recover_sink rec_sink = {{d_exchange, d_exchange_delete, d_queue, d_queue_delete, d_binding, d_access, NULL},
                                      r_queues,
                                      r_dedup,
                                      r_copy,
                                      r_next_seq,
                                      r_delayed};

static void test_recovery_replays_a_hand_written_log_into_the_sink(void) {
    fresh_dir();
    buf b;
    buf_init(&b);
    rec_put_headers(&b, 21);
    uint32_t qids[2] = {1, 2};
    uint64_t seqs[2] = {1, 1};
    put_pub(&b, 21, 2, qids, seqs, "one"); /* to queues 1 and 2 */
    seqs[0] = seqs[1] = 2;
    put_pub(&b, 21, 2, qids, seqs, "two");
    uint32_t q9 = 9; /* a queue the broker does not define */
    uint64_t s9 = 1;
    put_pub(&b, 21, 1, &q9, &s9, "orphan");
    rec_put_copy(&b, R_SETTLE, 21, 1, 1);    /* queue 1 acked "one" */
    rec_put_copy(&b, R_DELIVERED, 21, 2, 2); /* queue 2 delivered "two" */
    rec_put_copy(&b, R_SETTLE, 21, 2, 7);    /* a settle of a copy never seen: its seq counts */
    rec_delayed d = {.sid = 4, .due = 1, .to_queue = 1, .qid = 2, .exchange = S(""), .rkey = S("k"), .props = PERSISTENT,
                     .body = S("d")};
    rec_put_delayed(&b, 21, &d);
    d.sid = 5;
    rec_put_delayed(&b, 21, &d);
    rec_put_delayed_done(&b, 21, 4);
    seg_file(3, &b);
    buf_free(&b);
    buf_init(&b);
    rec_put_headers(&b, 22);
    seqs[0] = seqs[1] = 3;
    put_pub(&b, 22, 2, qids, seqs, "three");
    rec_put_copy(&b, R_SETTLE, 22, 1, 3);
    rec_put_copy(&b, R_SETTLE, 22, 2, 3);
    seg_file(4, &b);
    buf_free(&b);

    rec_log l = {.nq = 2};
    l.q[0] = (rcq){.qid = 1, .pageable = 1};
    l.q[1] = (rcq){.qid = 2, .pageable = 1};
    segset ss = {0};
    recover_stats st = {0};
    recover_messages(&ss, segdir, UINT64_MAX, 0, &rec_sink, &l, &st);
    CHECK(st.records == 12 && st.corrupt == 0 && st.messages == 3 && st.max_qid == 9 && st.max_delay == 5);
    CHECK(l.q[0].n == 1 && l.q[0].seqs[0] == 2 && l.q[0].deliveries[0] == 0 && l.q[0].next_seq == 4);
    CHECK(l.q[1].n == 2 && l.q[1].seqs[0] == 1 && l.q[1].seqs[1] == 2 && l.q[1].deliveries[1] == 1);
    CHECK(l.q[1].next_seq == 8);
    CHECK(l.ndelayed == 1 && l.delayed_sids[0] == 5 && st.delayed == 1);
    /* Live counts: segment 3 holds three live copies and a delayed message; 4 holds none. */
    CHECK(ss.n == 2 && segset_find(&ss, 3)->live == 4 && segset_find(&ss, 4)->live == 0);
    CHECK(ss.next_id == 5 && st.orphans == 0);
    segset_free(&ss);

    /* With meta.log damaged, the unknown queue's copy pins its segment instead. */
    rec_log l2 = l;
    l2.q[0].n = l2.q[1].n = 0;
    l2.ndelayed = 0;
    recover_stats st2 = {0};
    recover_messages(&ss, segdir, UINT64_MAX, 1, &rec_sink, &l2, &st2);
    CHECK(st2.orphans == 1 && segset_find(&ss, 3)->live == 4 && segset_find(&ss, 3)->pins == 1);
    segset_free(&ss);

    /* Over the memory budget, copies come back paged out (their bodies stay in the log). */
    rec_log l3 = l;
    l3.q[0].n = l3.q[1].n = 0;
    l3.ndelayed = 0;
    recover_stats st3 = {0};
    message *held = message_new(S("x"), S("y"), S(""), 1); /* message memory is above 0 */
    recover_messages(&ss, segdir, 0, 0, &rec_sink, &l3, &st3);
    message_unref(held);
    CHECK(l3.q[1].n == 2 && l3.q[1].paged[0] && l3.q[1].paged[1]);
    CHECK(segset_find(&ss, 3)->live == 1 + 2 * 3); /* a paged copy holds its segment twice */
    segset_free(&ss);
    rm_dir(tmpdir);
}

static void test_recovery_reads_a_publish_to_70000_queues(void) {
    fresh_dir();
    uint32_t n = 70000;
    uint32_t *qids = xmalloc(n * sizeof *qids);
    uint64_t *seqs = xmalloc(n * sizeof *seqs);
    for (uint32_t i = 0; i < n; i++)
        qids[i] = i + 1, seqs[i] = 1;
    buf b;
    buf_init(&b);
    rec_put_headers(&b, 4);
    rec_put_publish(&b, R_PUBLISH, 4, wall_ms(), -1, qids, seqs, n, S("fan"), S(""), PERSISTENT, S("wide"));
    seg_file(1, &b);
    rec_log l = {.nq = 3};
    l.q[0] = (rcq){.qid = 1};
    l.q[1] = (rcq){.qid = 65536};
    l.q[2] = (rcq){.qid = 70000};
    segset ss = {0};
    recover_stats st = {0};
    recover_messages(&ss, segdir, UINT64_MAX, 0, &rec_sink, &l, &st);
    CHECK(l.q[0].n == 1 && l.q[1].n == 1 && l.q[2].n == 1 && st.max_qid == 70000 && st.corrupt == 0);
    CHECK(ss.n == 1 && ss.a[0].live == 3);
    segset_free(&ss);
    buf_free(&b);
    free(qids);
    free(seqs);
    rm_dir(tmpdir);
}

static void test_recovery_cuts_a_torn_tail_of_the_last_segment(void) {
    fresh_dir();
    buf b;
    buf_init(&b);
    rec_put_headers(&b, 3);
    uint32_t qid = 1;
    uint64_t seq = 1;
    put_pub(&b, 3, 1, &qid, &seq, "kept");
    size_t good = b.len;
    seq = 2;
    put_pub(&b, 3, 1, &qid, &seq, "torn");
    b.len -= 4;
    seg_file(1, &b);
    rec_log l = {.nq = 1};
    l.q[0] = (rcq){.qid = 1};
    segset ss = {0};
    recover_stats st = {0};
    recover_messages(&ss, segdir, UINT64_MAX, 0, &rec_sink, &l, &st);
    CHECK(l.q[0].n == 1 && l.q[0].seqs[0] == 1);
    char path[700];
    seg_path(segdir, 1, path, sizeof path);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (size_t)sb.st_size == good && ss.a[0].bytes == good);
    segset_free(&ss);
    buf_free(&b);
    rm_dir(tmpdir);
}

/* ---- compaction ---- */

static void test_a_move_record_round_trips_with_its_delivery_counts(void) {
    buf b;
    buf_init(&b);
    uint32_t qids[2] = {7, 8};
    uint64_t seqs[2] = {70, 80};
    uint16_t dels[2] = {0, 65535};
    rec_put_move(&b, 5, 1234, 99, qids, seqs, dels, 2, S("ex"), S("rk"), PERSISTENT, S("body"));
    CHECK(b.len == rec_move_size(2, 2, 2, sizeof persistent_props, 4));
    CHECK(rec_check(buf_head(&b), b.len, 5) == b.len && rec_type(buf_head(&b)) == R_MOVE);
    rec_publish p;
    CHECK(rec_publish_read(buf_head(&b), b.len, &p) == 0);
    CHECK(p.published == 1234 && p.ttl == 99 && p.nq == 2 && p.body.n == 4 && !memcmp(p.body.p, "body", 4));
    uint32_t q;
    uint64_t sq;
    rec_publish_queue(&p, 1, &q, &sq);
    CHECK(q == 8 && sq == 80);
    CHECK(rec_publish_deliveries(&p, 0) == 0 && rec_publish_deliveries(&p, 1) == 65535);
    /* cut before its delivery counts: malformed */
    buf_patch_u32(&b, 8, (uint32_t)(b.len - REC_HEADER - 1));
    CHECK(rec_publish_read(buf_head(&b), b.len - 1, &p) < 0);
    buf_free(&b);
    /* a PUBLISH has no delivery counts */
    buf_init(&b);
    put_pub(&b, 5, 2, qids, seqs, "x");
    CHECK(rec_publish_read(buf_head(&b), b.len, &p) == 0 && p.dlist == NULL && rec_publish_deliveries(&p, 1) == 0);
    buf_free(&b);
}

static void test_compaction_picks_the_oldest_segment_only_when_the_log_is_mostly_dead(void) {
    segset ss = {0};
    const uint64_t size = 1000;
    for (uint32_t id = 1; id <= 6; id++) {
        seg *sg = segset_add(&ss, id, id, size);
        sg->copies = 100;
    }
    /* 5 full non-active segments, each 1 copy in 100 live: 50 bytes live, 5000 on disk */
    for (uint32_t id = 1; id <= 5; id++)
        segset_find(&ss, id)->live = 1;
    CHECK(seg_live_bytes(segset_find(&ss, 1)) == 10);
    CHECK(segset_compact_pick(&ss, size) == segset_find(&ss, 1));
    /* all live: nothing to gain */
    for (uint32_t id = 1; id <= 5; id++)
        segset_find(&ss, id)->live = 100;
    CHECK(segset_compact_pick(&ss, size) == NULL);
    /* the oldest pinned (a deduplication window), held (a step in flight), or empty: not picked */
    for (uint32_t id = 1; id <= 5; id++)
        segset_find(&ss, id)->live = 1;
    segset_find(&ss, 1)->pins = 1;
    CHECK(segset_compact_pick(&ss, size) == NULL);
    segset_find(&ss, 1)->pins = 0;
    segset_find(&ss, 1)->hold = 3;
    CHECK(segset_compact_pick(&ss, size) == NULL);
    /* a held or pinned segment is never reclaimed, even with nothing live in it */
    segset_find(&ss, 1)->live = 0;
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 0);
    segset_find(&ss, 1)->hold = 0;
    segset_find(&ss, 1)->pins = 2;
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 0);
    segset_find(&ss, 1)->pins = 0;
    CHECK(segset_reclaim(&ss, &ids, &n, &cap) == 1 && ids[0] == 1);
    /* within 2 x live + 2 segments: left alone */
    CHECK(segset_compact_pick(&ss, 2000) == NULL);
    free(ids);
    segset_free(&ss);
}

/* Segment 3 as the broker wrote it, then segment 4 holding compaction's MOVE records of the
 * copies still live in 3 (1 and 3 of queue 1), written after a newer publish (4) and a new
 * delayed message (9), with a delayed message moved (7). */
static void compacted_log(void) {
    buf b;
    buf_init(&b);
    rec_put_headers(&b, 31);
    uint32_t q1 = 1;
    uint64_t seq;
    const char *bodies[] = {"", "a", "b", "c"};
    for (seq = 1; seq <= 3; seq++)
        put_pub(&b, 31, 1, &q1, &seq, bodies[seq]);
    rec_put_copy(&b, R_DELIVERED, 31, 1, 1);
    rec_put_copy(&b, R_SETTLE, 31, 1, 2);
    rec_delayed d = {.sid = 7, .due = 1, .to_queue = 1, .qid = 1, .exchange = S(""), .rkey = S("k"), .props = PERSISTENT,
                     .body = S("d7")};
    rec_put_delayed(&b, 31, &d);
    seg_file(3, &b);
    buf_free(&b);
    buf_init(&b);
    rec_put_headers(&b, 32);
    seq = 4;
    put_pub(&b, 32, 1, &q1, &seq, "d");
    d.sid = 9;
    rec_put_delayed(&b, 32, &d);
    uint64_t s1 = 1, s3 = 3;
    uint16_t three = 3, zero = 0;
    rec_put_move(&b, 32, wall_ms(), -1, &q1, &s1, &three, 1, S("ex"), S("key"), PERSISTENT, S("a"));
    rec_put_move(&b, 32, wall_ms(), -1, &q1, &s3, &zero, 1, S("ex"), S("key"), PERSISTENT, S("c"));
    d.sid = 7;
    rec_put_delayed(&b, 32, &d);
    rec_put_copy(&b, R_DELIVERED, 32, 1, 3); /* after the move */
    rec_put_copy(&b, R_SETTLE, 32, 1, 4);
    seg_file(4, &b);
    buf_free(&b);
}

static void test_recovery_keeps_one_copy_when_both_the_old_segment_and_its_moves_are_there(void) {
    fresh_dir();
    compacted_log();
    rec_log l = {.nq = 1};
    l.q[0] = (rcq){.qid = 1, .pageable = 1};
    segset ss = {0};
    recover_stats st = {0};
    recover_messages(&ss, segdir, UINT64_MAX, 0, &rec_sink, &l, &st);
    /* 1 and 3 once each, in order; the higher delivery count wins; 2 stays settled */
    CHECK(l.q[0].n == 2 && l.q[0].seqs[0] == 1 && l.q[0].seqs[1] == 3);
    CHECK(l.q[0].deliveries[0] == 3 && l.q[0].deliveries[1] == 1);
    CHECK(l.ndelayed == 2 && l.delayed_sids[0] == 7 && l.delayed_sids[1] == 9);
    CHECK(l.q[0].next_seq == 5);
    /* the copies were met first in segment 3: it holds them (and delayed 7) */
    CHECK(segset_find(&ss, 3)->live == 3 && segset_find(&ss, 4)->live == 1);
    CHECK(segset_find(&ss, 3)->copies == 4 && segset_find(&ss, 4)->copies == 5);
    segset_free(&ss);
    rm_dir(tmpdir);
}

static void test_recovery_takes_moved_copies_in_order_once_the_old_segment_is_gone(void) {
    fresh_dir();
    compacted_log();
    char path[700];
    seg_path(segdir, 3, path, sizeof path);
    unlink(path);
    rec_log l = {.nq = 1};
    l.q[0] = (rcq){.qid = 1, .pageable = 1};
    segset ss = {0};
    recover_stats st = {0};
    recover_messages(&ss, segdir, UINT64_MAX, 0, &rec_sink, &l, &st);
    /* met after 4: put back in seq order; 2 (settled, not moved) does not come back */
    CHECK(l.q[0].n == 2 && l.q[0].seqs[0] == 1 && l.q[0].seqs[1] == 3);
    CHECK(l.q[0].deliveries[0] == 3 && l.q[0].deliveries[1] == 1);
    CHECK(l.ndelayed == 2 && l.delayed_sids[0] == 7 && l.delayed_sids[1] == 9);
    CHECK(ss.n == 1 && segset_find(&ss, 4)->live == 4);
    segset_free(&ss);
    /* over the memory budget the moved copies come back paged out, pointing at the MOVEs */
    rec_log l2 = {.nq = 1};
    l2.q[0] = (rcq){.qid = 1, .pageable = 1};
    recover_stats st2 = {0};
    message *held = message_new(S("x"), S("y"), S(""), 1);
    recover_messages(&ss, segdir, 0, 0, &rec_sink, &l2, &st2);
    message_unref(held);
    CHECK(l2.q[0].n == 2 && l2.q[0].paged[0] && l2.q[0].paged[1] && l2.q[0].deliveries[0] == 3);
    CHECK(segset_find(&ss, 4)->live == 2 * 2 + 2);
    segset_free(&ss);
    rm_dir(tmpdir);
}

/* ---- the facade (store.h), driven by an owner that is not a broker ---- */

typedef struct towner {
    defs d; /* first: the definitions sink's ctx */
    rec_log l;
    uint32_t qid; /* the one durable queue it defines (0: none yet) */
    int nsynced, nmeta, nalarm, nemit;
    uint64_t synced_gen, meta_gen;
    int synced_ok, meta_ok, meta_first;
} towner;

static void o_synced(void *ctx, uint64_t gen, int ok) {
    towner *o = ctx;
    o->nsynced++;
    o->synced_gen = gen;
    o->synced_ok = ok;
}
static void o_meta_synced(void *ctx, uint64_t gen, int ok) {
    towner *o = ctx;
    o->nmeta++;
    o->meta_gen = gen;
    o->meta_ok = ok;
    o->meta_first = o->nsynced == 0;
}
static void o_disk_alarm(void *ctx, int on) {
    (void)on;
    ((towner *)ctx)->nalarm++;
}
static void o_emit(void *ctx, buf *out, uint64_t salt) {
    towner *o = ctx;
    o->nemit++;
    if (o->qid)
        meta_put_queue(out, salt, o->qid, S("/"), S("q"), 0, S(""));
}
static void t_queues(void *ctx, void (*add)(void *rc, const rqueue *info), void *rc) {
    r_queues(&((towner *)ctx)->l, add, rc);
}
static void t_dedup(void *ctx, void *q, const message *m, uint64_t at, uint32_t seg) {
    r_dedup(&((towner *)ctx)->l, q, m, at, seg);
}
static void t_copy(void *ctx, void *q, const rcopy *c) { r_copy(&((towner *)ctx)->l, q, c); }
static void t_next_seq(void *ctx, void *q, uint64_t next) { r_next_seq(&((towner *)ctx)->l, q, next); }
static int t_delayed(void *ctx, uint64_t sid, uint64_t due, slice vh, slice x, void *q, message *m, uint32_t seg) {
    return r_delayed(&((towner *)ctx)->l, sid, due, vh, x, q, m, seg);
}
static const recover_sink towner_sink = {{d_exchange, d_exchange_delete, d_queue, d_queue_delete, d_binding, d_access, NULL},
                                         t_queues,
                                         t_dedup,
                                         t_copy,
                                         t_next_seq,
                                         t_delayed};

static message *persistent_message(const char *body) {
    size_t n = strlen(body);
    message *m = message_new(S("ex"), S("key"), PERSISTENT, n);
    memcpy(msg_body(m), body, n);
    return m;
}

static void test_the_store_facade_takes_records_and_answers_its_owner(void) {
    fresh_dir();
    rmdir(segdir); /* an empty data directory */
    loop *lp = loop_new();
    store_config cfg = {.segment_size = 1 << 20, .memory_budget = UINT64_MAX, .disk_free_limit = 0, .loop = lp};
    towner o = {0};
    store_owner own = {&o, o_synced, o_meta_synced, o_disk_alarm, o_emit};
    store_recovered info;
    char err[600] = "";
    store *s = store_open(&cfg, &own, &towner_sink, tmpdir, &info, err, sizeof err);
    CHECK(s && !err[0] && info.messages == 0 && o.nemit == 1);
    if (!s) {
        loop_free(lp);
        rm_dir(tmpdir);
        return;
    }

    /* a durable queue, then two messages to it, one delivered, and a delayed message */
    o.qid = store_new_qid(s);
    buf b;
    buf_init(&b);
    meta_put_queue(&b, store_meta_salt(s), o.qid, S("/"), S("q"), 0, S(""));
    uint64_t gen = store_gen(s);
    store_meta_append(s, &b);
    CHECK(store_meta_count(s) == 1);
    message *m1 = persistent_message("one"), *m2 = persistent_message("two");
    uint64_t seq1 = 1, seq2 = 2;
    uint32_t seg1 = store_publish(s, m1, &o.qid, &seq1, 1);
    store_publish(s, m2, &o.qid, &seq2, 1);
    CHECK(seg1 == m1->seg && m1->in_store && store_appended(s) == 2);
    store_delivered(s, o.qid, seq2);
    rec_delayed dl = {.due = wall_ms() + 3600000, .to_queue = 1, .qid = o.qid, .exchange = S(""), .rkey = S("k"),
                      .props = PERSISTENT, .body = S("d")};
    uint32_t dseg = 0;
    uint64_t sid = store_delayed(s, &dl, &dseg);
    CHECK(sid == 1 && dl.sid == 1 && dseg == seg1 && store_appended(s) == 3);

    /* the batch goes to the writer; the owner hears meta_synced, then synced, for its gen */
    store_kick(s);
    for (int i = 0; i < 500 && !o.nsynced; i++)
        loop_step(lp, 10);
    CHECK(o.nsynced == 1 && o.synced_gen == gen && o.synced_ok);
    CHECK(o.nmeta == 1 && o.meta_gen == gen && o.meta_ok && o.meta_first && o.nalarm == 0);

    /* the first copy is acked; close writes what is pending */
    store_settle(s, o.qid, seq1, seg1);
    store_close(s);
    message_unref(m1);
    message_unref(m2);

    /* reopened: the queue's definition, the second copy (delivered) and the delayed message */
    towner o2 = {.l = {.nq = 1}};
    o2.l.q[0] = (rcq){.qid = o.qid, .pageable = 1};
    o2.qid = o.qid;
    s = store_open(&cfg, &(store_owner){&o2, o_synced, o_meta_synced, o_disk_alarm, o_emit}, &towner_sink, tmpdir,
                   &info, err, sizeof err);
    CHECK(s != NULL);
    CHECK(o2.d.nq == 1 && o2.d.last_qid == o.qid && o2.nemit == 1);
    CHECK(info.messages == 1 && o2.l.q[0].n == 1 && o2.l.q[0].seqs[0] == 2 && o2.l.q[0].deliveries[0] == 1);
    CHECK(o2.l.q[0].next_seq == 3);
    CHECK(o2.l.ndelayed == 1 && o2.l.delayed_sids[0] == sid);
    if (s) {
        CHECK(store_new_qid(s) == o.qid + 1);
        store_close(s);
    }
    loop_free(lp);
    rm_dir(tmpdir);
}

int main(void) {
    log_level = LOG_ERROR + 1; /* the damaged cases log on purpose */
    sio_init();
    static const unit_test tests[] = {
        {"a_written_batch_leaves_its_largest_buffer_for_the_next_one",
         test_a_written_batch_leaves_its_largest_buffer_for_the_next_one},
        {"crc32c_matches_the_table_driven_crc_at_every_length_and_alignment",
         test_crc32c_matches_the_table_driven_crc_at_every_length_and_alignment},
        {"a_record_round_trips_and_checks_under_its_salt", test_a_record_round_trips_and_checks_under_its_salt},
        {"a_publish_to_more_than_65535_queues_round_trips", test_a_publish_to_more_than_65535_queues_round_trips},
        {"every_damaged_record_is_refused", test_every_damaged_record_is_refused},
        {"a_file_salt_survives_one_damaged_header_copy", test_a_file_salt_survives_one_damaged_header_copy},
        {"scan_skips_a_corrupt_record_in_the_middle_and_stops_at_a_torn_tail",
         test_scan_skips_a_corrupt_record_in_the_middle_and_stops_at_a_torn_tail},
        {"reclamation_takes_only_the_oldest_empty_segments_never_a_live_or_the_active_one",
         test_reclamation_takes_only_the_oldest_empty_segments_never_a_live_or_the_active_one},
        {"segments_after_a_gap_in_the_ids_are_found_and_kept_while_live",
         test_segments_after_a_gap_in_the_ids_are_found_and_kept_while_live},
        {"seg_list_finds_segment_files_sorted_and_ignores_others",
         test_seg_list_finds_segment_files_sorted_and_ignores_others},
        {"the_writer_puts_headers_then_records_in_each_segment", test_the_writer_puts_headers_then_records_in_each_segment},
        {"the_writer_thread_writes_a_batch_then_deletes_reclaimed_segments",
         test_the_writer_thread_writes_a_batch_then_deletes_reclaimed_segments},
        {"helper_jobs_run_in_order_and_hand_back_each_result_once",
         test_helper_jobs_run_in_order_and_hand_back_each_result_once},
        {"meta_log_loads_in_order_compacts_and_appends", test_meta_log_loads_in_order_compacts_and_appends},
        {"a_damaged_meta_log_is_kept_and_reported", test_a_damaged_meta_log_is_kept_and_reported},
        {"recovery_replays_a_hand_written_log_into_the_sink", test_recovery_replays_a_hand_written_log_into_the_sink},
        {"recovery_reads_a_publish_to_70000_queues", test_recovery_reads_a_publish_to_70000_queues},
        {"recovery_cuts_a_torn_tail_of_the_last_segment", test_recovery_cuts_a_torn_tail_of_the_last_segment},
        {"a_move_record_round_trips_with_its_delivery_counts", test_a_move_record_round_trips_with_its_delivery_counts},
        {"compaction_picks_the_oldest_segment_only_when_the_log_is_mostly_dead",
         test_compaction_picks_the_oldest_segment_only_when_the_log_is_mostly_dead},
        {"recovery_keeps_one_copy_when_both_the_old_segment_and_its_moves_are_there",
         test_recovery_keeps_one_copy_when_both_the_old_segment_and_its_moves_are_there},
        {"recovery_takes_moved_copies_in_order_once_the_old_segment_is_gone",
         test_recovery_takes_moved_copies_in_order_once_the_old_segment_is_gone},
        {"the_store_facade_takes_records_and_answers_its_owner",
         test_the_store_facade_takes_records_and_answers_its_owner},
    };
    return unit_run(tests, sizeof tests / sizeof tests[0]);
}
