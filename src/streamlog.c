/* streamlog.c — a stream's segment files, offset index, named offsets, retention and reads
 * (see streamlog.h). Store layer: records only.
 *
 * Segment file: a 16-byte header ("FERRYSTRM1" and zeros), then records:
 *   u32 magic, u32 crc32c (of everything after it), u32 payload length,
 *   u8 exchange length, u8 routing-key length, u16 filter-value length, u64 offset, u64 ts,
 *   payload: exchange, routing key, filter value, u32 properties length, properties, body.
 * (Host byte order: the files are not meant to move between machines of different endianness.)
 * Index file: 24-byte entries (offset, ts, position) for the first record of a segment and one
 * every SIDX_EVERY bytes after it; written after the segment's data is synced, never synced
 * itself: recovery checks its last entry against the segment and rebuilds what is missing by
 * scanning from there, so an index costs at most SIDX_EVERY bytes of scanning per segment.
 *
 * Threads: the loop thread owns every slog; the writer thread runs swrite_run on a batch it
 * was handed (its ops are self-contained copies: ids, positions, bytes); the reader thread
 * runs read jobs that carry a path and positions, never a pointer to a slog. */
#include "streamlog.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "memacct.h"
#include "storeio.h"
#include "util.h"
#include "writer.h"

#define SFILE_HEADER 16
#define SREC_HEADER 32
#define SREC_MAGIC 0x4d525453u /* "STRM" */
#define SIDX_EVERY (64u << 10)
#define NAMES_MAX 10000
static const char file_magic[SFILE_HEADER] = "FERRYSTRM1";

typedef struct sidx {
    uint64_t offset, ts, pos;
} sidx;

typedef struct sseg {
    uint64_t first;         /* its first offset (its file name) */
    uint64_t end;           /* offset after its last record appended */
    uint64_t bytes;         /* bytes appended, headers included (the file's size once written) */
    uint64_t committed;     /* bytes synced: readable */
    uint64_t committed_end; /* offset after its last synced record */
    uint64_t first_ts, last_ts;
    sidx *idx;
    size_t nidx, capidx;
    uint64_t last_idx_pos;
    uint8_t closed; /* a write failed: nothing more goes in it */
} sseg;

typedef struct sname {
    char *name;
    size_t n;
    uint64_t offset;
} sname;

struct slog {
    uint32_t id;
    slogs *ss;
    slog_limits lim;
    sseg *segs;
    size_t nsegs, capsegs;
    uint64_t next;      /* the next offset to assign */
    uint64_t committed; /* everything below is synced */
    uint64_t last_ts;   /* timestamps never go back within a stream */
    uint64_t bytes;     /* over all segments */
    sname *names;
    size_t nnames;
};

struct slogs {
    char dir[600]; /* DATA_DIR/streams */
    loop *loop;
    helpers rd; /* the reader thread */
    slog **all;
    size_t n, cap;
    uint64_t reading; /* bytes of read buffers handed out (memacct) */
};

/* ---- the pending batch's stream ops ---- */

enum { SOP_DATA, SOP_UNLINK, SOP_RMDIR, SOP_NAMES };

typedef struct sop {
    uint8_t kind;
    uint8_t doomed; /* for a segment that failed in an earlier batch: fails this batch */
    uint32_t id;
    uint64_t seg; /* DATA, UNLINK: the segment (its first offset) */
    uint64_t pos; /* DATA: where data starts in the file */
    uint64_t end; /* DATA: offset after its last record */
    buf data;     /* DATA: records (with the file header if pos is 0); NAMES: name records */
    buf idx;      /* DATA: index entries for the .idx file */
} sop;

struct swrite {
    sop *ops;
    size_t n, cap;
    char dir[600];
};

static sop *sop_add(struct swrite **pw, const slogs *ss, int kind, uint32_t id, uint64_t seg) {
    if (!*pw) {
        *pw = xcalloc(1, sizeof **pw);
        snprintf((*pw)->dir, sizeof(*pw)->dir, "%s", ss->dir);
    }
    struct swrite *w = *pw;
    if (kind == SOP_DATA || kind == SOP_NAMES) /* one op per file per batch */
        for (size_t i = w->n; i-- > 0;)
            if (w->ops[i].kind == kind && w->ops[i].id == id && w->ops[i].seg == seg)
                return &w->ops[i];
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 8;
        w->ops = xrealloc(w->ops, w->cap * sizeof *w->ops);
    }
    sop *o = &w->ops[w->n++];
    memset(o, 0, sizeof *o);
    o->kind = (uint8_t)kind;
    o->id = id;
    o->seg = seg;
    buf_init(&o->data);
    buf_init(&o->idx);
    return o;
}

int swrite_empty(const struct swrite *w) { return !w || w->n == 0; }

uint64_t swrite_bytes(const struct swrite *w) {
    uint64_t n = 0;
    for (size_t i = 0; w && i < w->n; i++)
        n += w->ops[i].data.cap + w->ops[i].idx.cap;
    return n;
}

void swrite_free(struct swrite *w) {
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++) {
        buf_free(&w->ops[i].data);
        buf_free(&w->ops[i].idx);
    }
    free(w->ops);
    free(w);
}

static void stream_dir(const char *dir, uint32_t id, char *out, size_t n) {
    snprintf(out, n, "%s/%08x", dir, id);
}
static void seg_file(const char *dir, uint32_t id, uint64_t first, const char *ext, char *out, size_t n) {
    snprintf(out, n, "%s/%08x/%016llx.%s", dir, id, (unsigned long long)first, ext);
}

/* Appends bytes at the end of a file (created if missing); synced if asked. */
static int append_file(const char *path, const buf *b, int sync, int *created) {
    sio_file *f = sio_open(path, 1);
    if (!f)
        return -errno;
    int64_t size = sio_size(f);
    if (created)
        *created = size == 0;
    int err = size < 0 ? (int)size : sio_pwrite(f, buf_head(b), b->len, (uint64_t)size);
    if (!err && sync)
        err = sio_sync(f);
    sio_close(f);
    return err;
}

/* Removes a stream's directory and everything in it. */
static void remove_stream_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[1000];
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                sio_unlink(path);
            }
        closedir(d);
    }
    if (rmdir(dir) < 0 && errno != ENOENT)
        log_warn("stream: cannot remove %s: %s", dir, strerror(errno));
}

int swrite_run(struct swrite *w) {
    int err = 0;
    char path[1000], sdir[700];
    for (size_t i = 0; i < w->n && !err; i++) {
        sop *o = &w->ops[i];
        stream_dir(w->dir, o->id, sdir, sizeof sdir);
        if (o->kind == SOP_DATA) {
            if (o->doomed) {
                err = -EIO;
                break;
            }
            int created = o->pos == 0;
            if (created && ((err = sio_mkdir(w->dir)) < 0 || (err = sio_mkdir(sdir)) < 0))
                break;
            seg_file(w->dir, o->id, o->seg, "seg", path, sizeof path);
            sio_file *f = sio_open(path, 1);
            if (!f) {
                err = -errno;
                break;
            }
            err = sio_pwrite(f, buf_head(&o->data), o->data.len, o->pos);
            if (!err)
                err = sio_sync(f);
            sio_close(f);
            if (!err && created && (err = sio_sync_dir(sdir)) == 0)
                err = sio_sync_dir(w->dir);
            if (!err && o->idx.len) { /* not synced: recovery checks and completes it */
                seg_file(w->dir, o->id, o->seg, "idx", path, sizeof path);
                if (append_file(path, &o->idx, 0, NULL) < 0)
                    log_warn("stream: cannot write %s (rebuilt at the next start)", path);
            }
        } else if (o->kind == SOP_NAMES) {
            if ((err = sio_mkdir(w->dir)) < 0 || (err = sio_mkdir(sdir)) < 0)
                break;
            snprintf(path, sizeof path, "%s/offsets.log", sdir);
            int created = 0;
            err = append_file(path, &o->data, 1, &created);
            if (!err && created)
                err = sio_sync_dir(sdir);
        } else if (o->kind == SOP_UNLINK) {
            seg_file(w->dir, o->id, o->seg, "seg", path, sizeof path);
            sio_unlink(path);
            seg_file(w->dir, o->id, o->seg, "idx", path, sizeof path);
            sio_unlink(path);
        } else {
            remove_stream_dir(sdir);
        }
    }
    return err;
}

/* ---- the stream set ---- */

slogs *slogs_new(const char *dir, loop *l) {
    slogs *ss = xcalloc(1, sizeof *ss);
    snprintf(ss->dir, sizeof ss->dir, "%s/streams", dir);
    ss->loop = l;
    return ss;
}

size_t slogs_poll(slogs *ss) { return ss->rd.started ? helpers_poll(&ss->rd) : 0; }

void slogs_stop(slogs *ss) {
    if (ss)
        helpers_stop(&ss->rd);
}

void slogs_free(slogs *ss) {
    if (!ss)
        return;
    slogs_stop(ss);
    while (ss->n)
        slog_close(ss, ss->all[ss->n - 1]);
    free(ss->all);
    free(ss);
}

static slog *find_log(slogs *ss, uint32_t id) {
    for (size_t i = 0; i < ss->n; i++)
        if (ss->all[i]->id == id)
            return ss->all[i];
    return NULL;
}

void slogs_gc(slogs *ss, int (*keep)(void *ctx, uint32_t id), void *ctx) {
    DIR *d = opendir(ss->dir);
    if (!d)
        return;
    struct dirent *e;
    char path[1000];
    while ((e = readdir(d))) {
        char *endp;
        unsigned long id = strtoul(e->d_name, &endp, 16);
        if (e->d_name[0] == '.' || *endp || strlen(e->d_name) != 8 || keep(ctx, (uint32_t)id))
            continue;
        snprintf(path, sizeof path, "%s/%s", ss->dir, e->d_name);
        log_info("stream: removing %s (its stream was deleted)", path);
        remove_stream_dir(path);
    }
    closedir(d);
}

/* ---- segments and the index ---- */

static void idx_add(sseg *g, uint64_t offset, uint64_t ts, uint64_t pos) {
    if (g->nidx == g->capidx) {
        g->capidx = g->capidx ? g->capidx * 2 : 8;
        g->idx = xrealloc(g->idx, g->capidx * sizeof *g->idx);
    }
    g->idx[g->nidx++] = (sidx){offset, ts, pos};
    g->last_idx_pos = pos;
}

static sseg *seg_push(slog *l, uint64_t first) {
    if (l->nsegs == l->capsegs) {
        l->capsegs = l->capsegs ? l->capsegs * 2 : 4;
        l->segs = xrealloc(l->segs, l->capsegs * sizeof *l->segs);
    }
    sseg *g = &l->segs[l->nsegs++];
    memset(g, 0, sizeof *g);
    g->first = g->end = g->committed_end = first;
    return g;
}

static void seg_drop_first(slog *l) {
    free(l->segs[0].idx);
    l->bytes -= MIN(l->bytes, l->segs[0].bytes);
    memmove(l->segs, l->segs + 1, (l->nsegs - 1) * sizeof *l->segs);
    l->nsegs--;
}

/* Parses the record at p (n bytes available): 1 with *r and *total set, 0 if it is not all
 * there, -1 if it is not a good record. */
static int rec_parse(const uint8_t *p, size_t n, slog_rec *r, size_t *total) {
    if (n < SREC_HEADER)
        return 0;
    uint32_t magic, crc, len, lens;
    memcpy(&magic, p, 4);
    memcpy(&crc, p + 4, 4);
    memcpy(&len, p + 8, 4);
    memcpy(&lens, p + 12, 4);
    if (magic != SREC_MAGIC)
        return -1;
    if (len > n - SREC_HEADER)
        return len > (1u << 30) ? -1 : 0;
    if (crc32c(0, p + 8, SREC_HEADER - 8 + len) != crc)
        return -1;
    size_t exl = lens & 0xff, rkl = (lens >> 8) & 0xff, fl = lens >> 16;
    if ((size_t)exl + rkl + fl + 4 > len)
        return -1;
    memcpy(&r->offset, p + 16, 8);
    memcpy(&r->ts, p + 24, 8);
    const uint8_t *q = p + SREC_HEADER;
    r->exchange = (slice){q, exl};
    r->rkey = (slice){q + exl, rkl};
    r->filter = (slice){q + exl + rkl, fl};
    q += exl + rkl + fl;
    uint32_t pl;
    memcpy(&pl, q, 4);
    if (pl > len - exl - rkl - fl - 4)
        return -1;
    r->props = (slice){q + 4, pl};
    r->body = (slice){q + 4 + pl, len - exl - rkl - fl - 4 - pl};
    *total = SREC_HEADER + len;
    return 1;
}

/* Startup: scans a segment file from the index's last good entry to its end, completing the
 * index and cutting a torn or corrupt tail (and records at or past `limit`, the next segment's
 * first offset). Returns 0, or -1 if the file is unusable. */
static int seg_recover(sseg *g, const char *path, uint64_t limit) {
    sio_file *f = sio_open(path, 0);
    if (!f)
        return -1;
    int64_t size = sio_size(f);
    char hdr[SFILE_HEADER];
    if (size < SFILE_HEADER || sio_pread(f, hdr, SFILE_HEADER, 0) != SFILE_HEADER ||
        memcmp(hdr, file_magic, 10)) {
        sio_close(f);
        return -1;
    }
    /* The index file, as far as it agrees with the segment. */
    char ipath[1000];
    snprintf(ipath, sizeof ipath, "%.*s.idx", (int)strlen(path) - 4, path);
    sio_file *fi = sio_open(ipath, 0);
    if (fi) {
        int64_t isz = sio_size(fi);
        size_t ne = isz > 0 ? (size_t)isz / sizeof(sidx) : 0;
        sidx *e = ne ? xmalloc(ne * sizeof *e) : NULL;
        if (ne && sio_pread(fi, e, ne * sizeof *e, 0) == (ssize_t)(ne * sizeof *e)) {
            for (size_t i = 0; i < ne; i++) {
                if (e[i].pos < SFILE_HEADER || e[i].pos >= (uint64_t)size || e[i].offset >= limit ||
                    (g->nidx && (e[i].offset <= g->idx[g->nidx - 1].offset || e[i].pos <= g->last_idx_pos)))
                    break;
                idx_add(g, e[i].offset, e[i].ts, e[i].pos);
            }
        }
        free(e);
        sio_close(fi);
    }
    /* Its last entry must name a good record with that offset; otherwise scan it all. */
    uint64_t pos = SFILE_HEADER;
    uint8_t *buf = xmalloc(1u << 20);
    size_t cap = 1u << 20;
    if (g->nidx) {
        sidx last = g->idx[g->nidx - 1];
        ssize_t got = sio_pread(f, buf, SREC_HEADER, last.pos);
        uint64_t off;
        uint32_t magic;
        memcpy(&magic, buf, 4);
        memcpy(&off, buf + 16, 8);
        if (got == SREC_HEADER && magic == SREC_MAGIC && off == last.offset) {
            pos = last.pos;
        } else {
            g->nidx = 0;
            g->last_idx_pos = 0;
        }
    }
    uint64_t end = g->nidx ? g->idx[g->nidx - 1].offset : g->first;
    uint64_t last_ts = g->nidx ? g->idx[g->nidx - 1].ts : 0;
    int any = 0;
    for (;;) {
        ssize_t got = sio_pread(f, buf, cap, pos);
        if (got <= 0)
            break;
        size_t at = 0, total;
        slog_rec r;
        int rc = 0;
        while ((rc = rec_parse(buf + at, (size_t)got - at, &r, &total)) == 1) {
            if (r.offset >= limit || (any && r.offset < end) || r.offset < g->first) {
                rc = -1;
                break;
            }
            uint64_t rpos = pos + at;
            if (!g->nidx || rpos - g->last_idx_pos >= SIDX_EVERY)
                if (!g->nidx || g->idx[g->nidx - 1].pos != rpos)
                    idx_add(g, r.offset, r.ts, rpos);
            end = r.offset + 1;
            last_ts = r.ts;
            any = 1;
            at += total;
        }
        pos += at;
        if (rc < 0 || at == 0) {
            if (rc == 0 && at == 0 && (size_t)got == cap) { /* one record bigger than the buffer */
                uint32_t len;
                memcpy(&len, buf + 8, 4);
                cap = SREC_HEADER + (size_t)len;
                buf = xrealloc(buf, cap);
                continue;
            }
            break;
        }
    }
    free(buf);
    while (g->nidx && g->idx[g->nidx - 1].pos >= pos)
        g->nidx--;
    g->last_idx_pos = g->nidx ? g->idx[g->nidx - 1].pos : 0;
    if (pos < (uint64_t)size) {
        log_warn("stream: %s: cutting %llu bytes of torn or corrupt records at %llu", path,
                 (unsigned long long)((uint64_t)size - pos), (unsigned long long)pos);
        sio_file *w = sio_open(path, 1);
        if (w) {
            sio_truncate(w, pos);
            sio_sync(w);
            sio_close(w);
        }
    }
    sio_close(f);
    g->end = g->committed_end = end;
    g->bytes = g->committed = pos;
    g->first_ts = g->nidx ? g->idx[0].ts : 0;
    g->last_ts = last_ts;
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* offsets.log: u32 crc32c, u16 name length, name, u64 offset; the last record of a name wins. */
static void put_name_rec(buf *b, slice name, uint64_t offset) {
    uint8_t tmp[2 + 255 + 8];
    uint16_t n = (uint16_t)name.n;
    memcpy(tmp, &n, 2);
    memcpy(tmp + 2, name.p, name.n);
    memcpy(tmp + 2 + name.n, &offset, 8);
    uint32_t crc = crc32c(0, tmp, 2 + name.n + 8);
    buf_put(b, &crc, 4);
    buf_put(b, tmp, 2 + name.n + 8);
}

static sname *name_find(slog *l, slice name) {
    for (size_t i = 0; i < l->nnames; i++)
        if (slice_eq((slice){(const uint8_t *)l->names[i].name, l->names[i].n}, name))
            return &l->names[i];
    return NULL;
}

static void name_set(slog *l, slice name, uint64_t offset) {
    sname *s = name_find(l, name);
    if (!s) {
        if (l->nnames >= NAMES_MAX)
            return;
        l->names = xrealloc(l->names, (l->nnames + 1) * sizeof *l->names);
        s = &l->names[l->nnames++];
        s->name = xstrndup((const char *)name.p, name.n);
        s->n = name.n;
    }
    s->offset = offset;
}

/* Startup: reads offsets.log and rewrites it compacted (one record per name). */
static void names_recover(slog *l, const char *sdir) {
    char path[1000], tmp[1000];
    snprintf(path, sizeof path, "%s/offsets.log", sdir);
    sio_file *f = sio_open(path, 0);
    if (!f)
        return;
    int64_t size = sio_size(f);
    uint8_t *data = size > 0 ? xmalloc((size_t)size) : NULL;
    size_t n = data && sio_pread(f, data, (size_t)size, 0) == size ? (size_t)size : 0;
    sio_close(f);
    size_t at = 0;
    while (at + 4 + 2 + 8 <= n) {
        uint32_t crc;
        uint16_t len;
        memcpy(&crc, data + at, 4);
        memcpy(&len, data + at + 4, 2);
        if (len > 255 || at + 4 + 2 + len + 8 > n || crc32c(0, data + at + 4, 2 + (size_t)len + 8) != crc)
            break;
        uint64_t off;
        memcpy(&off, data + at + 6 + len, 8);
        name_set(l, (slice){data + at + 6, len}, off);
        at += 4 + 2 + len + 8;
    }
    free(data);
    if (at == n && l->nnames * 2 >= n / 32)
        return; /* already about compact */
    buf b;
    buf_init(&b);
    for (size_t i = 0; i < l->nnames; i++)
        put_name_rec(&b, (slice){(const uint8_t *)l->names[i].name, l->names[i].n}, l->names[i].offset);
    snprintf(tmp, sizeof tmp, "%s/offsets.log.tmp", sdir);
    sio_unlink(tmp);
    int created;
    if (append_file(tmp, &b, 1, &created) == 0 && sio_rename(tmp, path) == 0)
        sio_sync_dir(sdir);
    buf_free(&b);
}

slog *slog_open(slogs *ss, uint32_t id, const slog_limits *lim, int fresh) {
    slog *l = xcalloc(1, sizeof *l);
    l->id = id;
    l->ss = ss;
    l->lim = *lim;
    if (ss->n == ss->cap) {
        ss->cap = ss->cap ? ss->cap * 2 : 8;
        ss->all = xrealloc(ss->all, ss->cap * sizeof *ss->all);
    }
    ss->all[ss->n++] = l;
    if (fresh)
        return l;
    char sdir[700], path[1000];
    stream_dir(ss->dir, id, sdir, sizeof sdir);
    DIR *d = opendir(sdir);
    if (!d)
        return l;
    uint64_t *firsts = NULL;
    size_t nf = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *endp;
        unsigned long long first = strtoull(e->d_name, &endp, 16);
        if (strlen(e->d_name) == 20 && endp == e->d_name + 16 && !strcmp(endp, ".seg")) {
            firsts = xrealloc(firsts, (nf + 1) * sizeof *firsts);
            firsts[nf++] = first;
        }
    }
    closedir(d);
    if (nf)
        qsort(firsts, nf, sizeof *firsts, cmp_u64);
    for (size_t i = 0; i < nf; i++) {
        seg_file(ss->dir, id, firsts[i], "seg", path, sizeof path);
        sseg *g = seg_push(l, firsts[i]);
        uint64_t limit = i + 1 < nf ? firsts[i + 1] : UINT64_MAX;
        if (seg_recover(g, path, limit) < 0 || (g->end == g->first && i + 1 < nf)) {
            log_warn("stream: %s holds no readable record: removed", path);
            free(g->idx);
            l->nsegs--;
            sio_unlink(path);
            seg_file(ss->dir, id, firsts[i], "idx", path, sizeof path);
            sio_unlink(path);
            continue;
        }
        l->bytes += g->bytes;
        if (g->last_ts > l->last_ts)
            l->last_ts = g->last_ts;
    }
    free(firsts);
    if (l->nsegs)
        l->next = l->committed = l->segs[l->nsegs - 1].end;
    names_recover(l, sdir);
    return l;
}

void slog_close(slogs *ss, slog *l) {
    for (size_t i = 0; i < ss->n; i++)
        if (ss->all[i] == l) {
            ss->all[i] = ss->all[--ss->n];
            break;
        }
    for (size_t i = 0; i < l->nsegs; i++)
        free(l->segs[i].idx);
    free(l->segs);
    for (size_t i = 0; i < l->nnames; i++)
        free(l->names[i].name);
    free(l->names);
    free(l);
}

void slog_delete(slogs *ss, slog *l, struct swrite **pending) {
    /* What this stream still has in the pending batch is not written at all. */
    if (*pending)
        for (size_t i = 0; i < (*pending)->n; i++)
            if ((*pending)->ops[i].id == l->id && (*pending)->ops[i].kind != SOP_RMDIR) {
                buf_free(&(*pending)->ops[i].data);
                buf_free(&(*pending)->ops[i].idx);
                (*pending)->ops[i] = (*pending)->ops[--(*pending)->n];
                i--;
            }
    sop_add(pending, ss, SOP_RMDIR, l->id, 0);
    slog_close(ss, l);
}

/* ---- appending ---- */

uint64_t slog_append(slog *l, struct swrite **pending, slice exchange, slice rkey, slice props,
                     const uint8_t *body, uint64_t body_len, slice filter) {
    exchange.n = MIN(exchange.n, 255);
    rkey.n = MIN(rkey.n, 255);
    filter.n = MIN(filter.n, 65535);
    uint64_t len = exchange.n + rkey.n + filter.n + 4 + props.n + body_len;
    sseg *g = l->nsegs ? &l->segs[l->nsegs - 1] : NULL;
    int roll = !g || g->closed || (g->bytes + SREC_HEADER + len > l->lim.segment_size && g->end > g->first);
    if (roll)
        g = seg_push(l, l->next);
    sop *o = sop_add(pending, l->ss, SOP_DATA, l->id, g->first);
    if (o->data.len == 0)
        o->pos = g->bytes;
    if (g->bytes == 0) {
        buf_put(&o->data, file_magic, SFILE_HEADER);
        g->bytes = SFILE_HEADER;
        l->bytes += SFILE_HEADER;
    }
    uint64_t ts = MAX(wall_ms(), l->last_ts);
    l->last_ts = ts;
    uint64_t offset = l->next++;
    uint64_t pos = g->bytes;
    if (g->end == g->first || pos - g->last_idx_pos >= SIDX_EVERY) {
        idx_add(g, offset, ts, pos);
        sidx e = {offset, ts, pos};
        buf_put(&o->idx, &e, sizeof e);
    }
    if (g->end == g->first)
        g->first_ts = ts;
    g->last_ts = ts;
    g->end = offset + 1;
    o->end = offset + 1;
    uint8_t h[SREC_HEADER];
    uint32_t magic = SREC_MAGIC, len32 = (uint32_t)len;
    uint32_t lens = (uint32_t)(exchange.n | rkey.n << 8 | filter.n << 16);
    memcpy(h, &magic, 4);
    memcpy(h + 8, &len32, 4);
    memcpy(h + 12, &lens, 4);
    memcpy(h + 16, &offset, 8);
    memcpy(h + 24, &ts, 8);
    uint32_t pl = (uint32_t)props.n;
    uint32_t crc = crc32c(0, h + 8, SREC_HEADER - 8);
    crc = crc32c(crc, exchange.p, exchange.n);
    crc = crc32c(crc, rkey.p, rkey.n);
    crc = crc32c(crc, filter.p, filter.n);
    crc = crc32c(crc, &pl, 4);
    crc = crc32c(crc, props.p, props.n);
    crc = crc32c(crc, body, body_len);
    memcpy(h + 4, &crc, 4);
    buf_put(&o->data, h, SREC_HEADER);
    buf_put(&o->data, exchange.p, exchange.n);
    buf_put(&o->data, rkey.p, rkey.n);
    buf_put(&o->data, filter.p, filter.n);
    buf_put(&o->data, &pl, 4);
    buf_put(&o->data, props.p, props.n);
    buf_put(&o->data, body, body_len);
    g->bytes += SREC_HEADER + len;
    l->bytes += SREC_HEADER + len;
    if (roll && l->nsegs > 1)
        slog_retention(l, pending, wall_ms(), 1);
    return offset;
}

void slog_put_name(slog *l, struct swrite **pending, slice name, uint64_t offset) {
    name.n = MIN(name.n, 255);
    name_set(l, name, offset);
    sop *o = sop_add(pending, l->ss, SOP_NAMES, l->id, 0);
    put_name_rec(&o->data, name, offset);
}

void slog_each_name(slog *l, void (*fn)(void *ctx, slice name, uint64_t offset), void *ctx) {
    for (size_t i = 0; i < l->nnames; i++)
        fn(ctx, (slice){(const uint8_t *)l->names[i].name, l->names[i].n}, l->names[i].offset);
}

size_t slog_retention(slog *l, struct swrite **pending, uint64_t now, int by_bytes) {
    size_t dropped = 0;
    while (l->nsegs > 1) {
        sseg *g = &l->segs[0];
        int drop = (by_bytes && l->lim.max_bytes >= 0 && l->bytes > (uint64_t)l->lim.max_bytes) ||
                   (l->lim.max_age_ms >= 0 && g->last_ts + (uint64_t)l->lim.max_age_ms < now);
        if (!drop || g->committed != g->bytes) /* never a segment with writes in flight */
            break;
        sop_add(pending, l->ss, SOP_UNLINK, l->id, g->first);
        seg_drop_first(l);
        dropped++;
    }
    return dropped;
}

/* ---- the writer's results ---- */

void swrite_done(slogs *ss, struct swrite *w, int err) {
    for (size_t i = 0; w && i < w->n; i++) {
        sop *o = &w->ops[i];
        slog *l = o->kind == SOP_DATA ? find_log(ss, o->id) : NULL;
        if (!l)
            continue;
        sseg *g = NULL;
        for (size_t k = 0; k < l->nsegs; k++)
            if (l->segs[k].first == o->seg)
                g = &l->segs[k];
        if (!g)
            continue;
        if (!err) {
            g->committed = o->pos + o->data.len;
            g->committed_end = o->end;
            if (o->end > l->committed)
                l->committed = o->end;
            continue;
        }
        /* Failed: what is on disk past the committed part is unknown. The segment takes no
         * more records (the next append starts a new one, so the failed offsets are a gap),
         * and pieces of it already in the pending batch fail their batch too. */
        g->closed = 1;
        l->bytes -= MIN(l->bytes, g->bytes - g->committed);
        g->bytes = g->committed;
        g->end = g->committed_end;
        while (g->nidx && g->idx[g->nidx - 1].pos >= g->committed)
            g->nidx--;
        g->last_idx_pos = g->nidx ? g->idx[g->nidx - 1].pos : 0;
    }
}

/* Pieces of the pending batch for a segment that failed are doomed (store.c calls this
 * after swrite_done of a failed batch). */
void swrite_doom(slogs *ss, struct swrite *pending) {
    for (size_t i = 0; pending && i < pending->n; i++) {
        sop *o = &pending->ops[i];
        slog *l = o->kind == SOP_DATA ? find_log(ss, o->id) : NULL;
        for (size_t k = 0; l && k < l->nsegs; k++)
            if (l->segs[k].first == o->seg && l->segs[k].closed)
                o->doomed = 1;
    }
}

/* ---- offsets ---- */

uint64_t slog_first(const slog *l) { return l->nsegs ? l->segs[0].first : l->next; }
uint64_t slog_end(const slog *l) { return l->next; }
uint64_t slog_committed(const slog *l) { return l->committed; }
uint64_t slog_bytes(const slog *l) { return l->bytes; }
size_t slog_segments(const slog *l) { return l->nsegs; }
uint64_t slog_last(const slog *l) {
    for (size_t i = l->nsegs; i-- > 0;)
        if (l->segs[i].committed_end > l->segs[i].first)
            return l->segs[i].committed_end - 1;
    return l->next;
}

uint64_t slog_seek_time(const slog *l, uint64_t ts) {
    for (size_t i = 0; i < l->nsegs; i++) {
        const sseg *g = &l->segs[i];
        if (g->committed_end == g->first || g->last_ts < ts)
            continue;
        uint64_t at = g->first;
        for (size_t k = 0; k < g->nidx && g->idx[k].ts < ts; k++)
            at = g->idx[k].offset;
        return at;
    }
    return l->committed;
}

/* ---- reading ---- */

typedef struct sread {
    job j;
    char path[1000];
    uint64_t pos, len, from;
    uint64_t seg_size;  /* committed bytes of the segment */
    uint64_t after_end; /* where to go on once the segment is read to its end */
    slog_batch *b;
    slogs *ss;
    void (*done)(void *ctx, slog_batch *b);
    void *ctx;
} sread;

void slog_batch_free(slog_batch *b) {
    if (!b)
        return;
    memacct_sub(MEM_STREAM_READS, b->acct);
    free(b->data);
    free(b->recs);
    free(b);
}

static void read_run(job *j) {
    sread *r = (sread *)j;
    slog_batch *b = r->b;
    sio_file *f = sio_open(r->path, 0);
    if (!f) { /* gone (retention, a deleted stream): on to what follows; anything else is logged */
        b->err = -errno;
        b->next = r->after_end;
        if (b->err != -ENOENT)
            log_error("stream: cannot open %s: %s; that segment is skipped", r->path, strerror(-b->err));
        return;
    }
    size_t cap = (size_t)r->len;
    b->data = xmalloc(cap);
    uint64_t next = r->from, pos = r->pos;
    size_t capr = 0;
    for (;;) {
        /* never past what is synced: the writer may be appending after it right now */
        ssize_t got = pos < r->seg_size ? sio_pread(f, b->data, (size_t)MIN(cap, r->seg_size - pos), pos) : 0;
        if (got < 0) {
            b->err = (int)got;
            break;
        }
        size_t at = 0, total;
        slog_rec rec;
        int rc;
        while ((rc = rec_parse(b->data + at, (size_t)got - at, &rec, &total)) == 1) {
            at += total;
            if (rec.offset + 1 > next)
                next = rec.offset + 1;
            if (rec.offset < r->from)
                continue;
            if (b->nrecs == capr) {
                capr = capr ? capr * 2 : 256;
                b->recs = xrealloc(b->recs, capr * sizeof *b->recs);
            }
            b->recs[b->nrecs++] = rec;
        }
        pos += at;
        if (rc < 0) {
            b->err = -EBADMSG;
            break;
        }
        if (at == 0 && got >= SREC_HEADER && b->nrecs == 0 && pos < r->seg_size) {
            /* one record bigger than what was asked for: read it whole (a length past the
             * synced end is damage, not a big record) */
            uint32_t len;
            memcpy(&len, b->data + 8, 4);
            if (SREC_HEADER + (uint64_t)len > r->seg_size - pos || SREC_HEADER + (size_t)len <= cap) {
                b->err = -EBADMSG;
                break;
            }
            cap = SREC_HEADER + (size_t)len;
            b->data = xrealloc(b->data, cap);
            continue;
        }
        if (b->nrecs == 0 && at > 0 && pos < r->seg_size) /* all before from: read on */
            continue;
        break;
    }
    sio_close(f);
    if (b->err) {
        log_error("stream: reading %s at %llu: %s; the rest of that segment is skipped", r->path,
                  (unsigned long long)pos, strerror(-b->err));
    }
    if (b->err) {
        free(b->recs);
        b->recs = NULL;
        b->nrecs = 0;
        b->next = r->after_end;
    } else {
        b->next = pos >= r->seg_size ? MAX(next, r->after_end) : next;
    }
}

static void read_done(job *j) {
    sread *r = (sread *)j;
    r->ss->reading -= MIN(r->ss->reading, r->len);
    r->b->acct = r->len; /* counted until the consumer has used the batch (slog_batch_free) */
    r->done(r->ctx, r->b);
    free(r);
}

int slog_read(slogs *ss, slog *l, uint64_t from, size_t max, void (*done)(void *ctx, slog_batch *b),
              void *ctx) {
    if (from < slog_first(l))
        from = slog_first(l);
    size_t i = 0;
    for (;;) {
        if (from >= l->committed)
            return 0;
        /* the last segment whose first offset is at or before from */
        size_t lo = 0, hi = l->nsegs;
        while (hi - lo > 1) {
            size_t mid = (lo + hi) / 2;
            if (l->segs[mid].first <= from)
                lo = mid;
            else
                hi = mid;
        }
        i = lo;
        if (i < l->nsegs && from < l->segs[i].committed_end)
            break;
        if (i + 1 >= l->nsegs) /* in a gap after a failed write, at the end */
            return 0;
        from = l->segs[i + 1].first; /* in a gap left by a failed write */
    }
    const sseg *g = &l->segs[i];
    uint64_t pos = SFILE_HEADER;
    size_t lo = 0, hi = g->nidx;
    while (lo < hi) { /* the last index entry at or before from */
        size_t mid = (lo + hi) / 2;
        if (g->idx[mid].offset <= from)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > 0)
        pos = g->idx[lo - 1].pos;
    if (!ss->rd.started && helpers_start(&ss->rd, ss->loop) < 0)
        return 0;
    sread *r = xcalloc(1, sizeof *r);
    seg_file(ss->dir, l->id, g->first, "seg", r->path, sizeof r->path);
    r->pos = pos;
    r->len = MIN((uint64_t)max, g->committed - pos);
    r->from = from;
    r->seg_size = g->committed;
    r->after_end = i + 1 < l->nsegs ? l->segs[i + 1].first : g->committed_end;
    r->b = xcalloc(1, sizeof *r->b);
    r->ss = ss;
    r->done = done;
    r->ctx = ctx;
    r->j.run = read_run;
    r->j.done = read_done;
    ss->reading += r->len;
    memacct_add(MEM_STREAM_READS, r->len);
    helpers_submit(&ss->rd, &r->j);
    return 1;
}
