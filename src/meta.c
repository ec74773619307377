/* meta.c — meta.log and VERSION (see meta.h). Loop thread only; every call blocks on the
 * disk (they are rare: a start, a durable declare, bind or delete). */
#include "meta.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "record.h"
#include "util.h"

#define STORE_VERSION "ferry-store 1"

int meta_check_version(const char *dir, char *err, size_t errlen) {
    char path[600];
    snprintf(path, sizeof path, "%s/VERSION", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        char line[128] = "";
        if (!fgets(line, sizeof line, f))
            line[0] = 0;
        fclose(f);
        line[strcspn(line, "\r\n")] = 0;
        if (strcmp(line, STORE_VERSION) != 0) {
            snprintf(err, errlen, "data directory %s has format '%s', this ferryd reads '%s'; refusing to touch it",
                     dir, line, STORE_VERSION);
            return -1;
        }
        return 0;
    }
    char metap[600], segdir[600];
    snprintf(metap, sizeof metap, "%s/meta.log", dir);
    snprintf(segdir, sizeof segdir, "%s/segments", dir);
    struct stat st;
    if (stat(metap, &st) == 0 || stat(segdir, &st) == 0) {
        snprintf(err, errlen, "data directory %s has store files but no VERSION; refusing to touch it", dir);
        return -1;
    }
    sio_file *vf = sio_open(path, 1);
    int rc = vf ? sio_pwrite(vf, STORE_VERSION "\n", strlen(STORE_VERSION) + 1, 0) : -errno;
    if (!rc)
        rc = sio_sync(vf);
    if (vf)
        sio_close(vf);
    if (!rc)
        rc = sio_sync_dir(dir);
    if (rc) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
        return -1;
    }
    return 0;
}

/* The optional vhost after a definition's fields: none means "/" (records from before vhosts). */
static slice read_vhost(rd *r) {
    if (!r->err && rd_left(r) > 0)
        return rd_shortstr(r);
    return (slice){(const uint8_t *)"/", 1};
}

static void put_vhost(buf *b, slice vhost) {
    if (vhost.n && !(vhost.n == 1 && vhost.p[0] == '/'))
        buf_shortstr(b, (const char *)vhost.p, vhost.n);
}

typedef struct loader {
    meta *mt;
    const meta_sink *sink;
    void *ctx;
} loader;

/* Hands one definition record to the sink (malformed ones are skipped). */
static void meta_apply(void *arg, const uint8_t *p, size_t n) {
    loader *ld = arg;
    const meta_sink *k = ld->sink;
    rd r = rd_make(p + REC_HEADER, n - REC_HEADER);
    switch (rec_type(p)) {
    case M_EXCHANGE: {
        slice name = rd_shortstr(&r);
        uint8_t type = rd_u8(&r), flags = rd_u8(&r);
        slice args = rd_longstr(&r);
        slice vh = read_vhost(&r);
        if (!r.err)
            k->exchange(ld->ctx, vh, name, type, flags, args);
        return;
    }
    case M_EXCHANGE_DEL: {
        slice name = rd_shortstr(&r);
        slice vh = read_vhost(&r);
        if (!r.err)
            k->exchange_delete(ld->ctx, vh, name);
        return;
    }
    case M_QUEUE: {
        uint32_t qid = rd_u32(&r);
        slice name = rd_shortstr(&r);
        uint8_t flags = rd_u8(&r);
        slice args = rd_longstr(&r);
        slice vh = read_vhost(&r);
        if (r.err || qid == 0)
            return;
        k->queue(ld->ctx, qid, vh, name, flags, args);
        meta_saw_qid(ld->mt, qid);
        return;
    }
    case M_QUEUE_DEL: {
        uint32_t qid = rd_u32(&r);
        if (!r.err)
            k->queue_delete(ld->ctx, qid);
        return;
    }
    case M_BIND:
    case M_UNBIND: {
        slice src = rd_shortstr(&r);
        uint8_t kind = rd_u8(&r);
        slice dst = rd_shortstr(&r), key = rd_shortstr(&r), args = rd_longstr(&r);
        slice vh = read_vhost(&r);
        if (!r.err && kind <= 1)
            k->binding(ld->ctx, rec_type(p) == M_BIND, vh, src, kind == 1, dst, key, args);
        return;
    }
    case M_ACCESS:
        if (k->access)
            k->access(ld->ctx, (slice){p + REC_HEADER, n - REC_HEADER});
        return;
    case M_CRON:
        if (k->cron)
            k->cron(ld->ctx, (slice){p + REC_HEADER, n - REC_HEADER});
        return;
    }
}

static int damaged_copy_exists(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    int found = 0;
    while (d && (de = readdir(d)))
        found |= strncmp(de->d_name, "meta.log.damaged-", 17) == 0;
    if (d)
        closedir(d);
    return found;
}

int meta_load(meta *mt, const char *dir, const meta_sink *sink, void *ctx) {
    snprintf(mt->dir, sizeof mt->dir, "%s", dir);
    if (!mt->next_qid)
        mt->next_qid = 1;
    char metap[600];
    snprintf(metap, sizeof metap, "%s/meta.log", dir);
    uint8_t *data;
    size_t len;
    int bad_tail = 0;
    loader ld = {mt, sink, ctx};
    int err = rec_read_file(metap, &data, &len);
    if (err == 0) {
        size_t good = rec_scan(metap, data, len, 1, meta_apply, &ld, &mt->corrupt);
        bad_tail = good < len;
        mt->old_salt = rec_read_salt(data, len);
        mt->old_good = good;
        free(data);
    } else if (err != -ENOENT) {
        /* Unreadable is not empty: compacting now would delete every definition. */
        log_error("store: cannot read %s: %s", metap, strerror(-err));
        return err;
    }
    /* Compaction would make damage to meta.log permanent (and the queue's messages
     * reclaimable on the next start): a damaged meta.log is kept, renamed, for a person. */
    int damaged = mt->corrupt > 0 || bad_tail;
    if (!damaged && damaged_copy_exists(dir)) {
        /* Damage found on an earlier start: keep pinning until a person removes the copy. */
        damaged = 1;
        log_warn("store: %s holds a meta.log.damaged-* copy: messages of unknown queues are kept on disk "
                 "until it is removed",
                 dir);
    } else if (damaged) {
        char keep[700];
        snprintf(keep, sizeof keep, "%s/meta.log.damaged-%llu", dir, (unsigned long long)wall_seconds());
        if (link(metap, keep) == 0)
            log_error("store: meta.log is damaged; a copy is kept as %s, and messages of queues it no "
                      "longer defines stay on disk",
                      keep);
    }
    return damaged;
}

/* The rewrite failed before its rename: goes on appending to the meta.log that was loaded
 * (its torn tail, if any, cut off first). 0, or -errno if there is none to go on with. */
static int keep_old(meta *mt, const char *path, int why) {
    if (!mt->old_salt)
        return why;
    sio_file *f = sio_open(path, 0);
    int err = f ? sio_truncate(f, mt->old_good) : -errno;
    if (!err)
        err = sio_sync(f);
    if (err) {
        if (f)
            sio_close(f);
        return why;
    }
    mt->f = f;
    mt->size = mt->old_good;
    mt->salt = mt->old_salt;
    log_warn("store: cannot rewrite %s (%s): appending to it as it is", path, strerror(-why));
    return 0;
}

int meta_compact(meta *mt, void (*emit)(void *ctx, buf *out, uint64_t salt), void *ctx) {
    buf out;
    buf_init(&out);
    uint64_t salt = rec_new_salt();
    rec_put_headers(&out, salt);
    emit(ctx, &out, salt);
    char tmp[600], path[600];
    snprintf(tmp, sizeof tmp, "%s/meta.log.tmp", mt->dir);
    snprintf(path, sizeof path, "%s/meta.log", mt->dir);
    sio_file *f = sio_open(tmp, 1);
    int err = f ? sio_truncate(f, 0) : -errno;
    if (!err)
        err = sio_pwrite(f, buf_head(&out), out.len, 0);
    if (!err)
        err = sio_sync(f);
    if (f)
        sio_close(f);
    if (!err)
        err = sio_rename(tmp, path);
    if (err) { /* meta.log is as it was loaded */
        sio_unlink(tmp);
        buf_free(&out);
        return keep_old(mt, path, err);
    }
    err = sio_sync_dir(mt->dir);
    if (!err) {
        mt->f = sio_open(path, 1);
        mt->size = out.len;
        mt->salt = salt;
        if (!mt->f)
            err = -errno;
    }
    buf_free(&out);
    return err;
}

int meta_append(meta *mt, buf *b) {
    if (!mt->f || !b->len)
        return 0;
    int err = sio_pwrite(mt->f, buf_head(b), b->len, mt->size);
    if (!err)
        err = sio_sync(mt->f);
    if (err) {
        log_error("store: cannot write definitions: %s", strerror(-err));
        sio_truncate(mt->f, mt->size);
        return err;
    }
    mt->size += b->len;
    return 0;
}

void meta_close(meta *mt) {
    if (mt->f)
        sio_close(mt->f);
    mt->f = NULL;
}

void meta_put_exchange(buf *b, uint64_t salt, slice vhost, slice name, uint8_t type, uint8_t flags, slice args) {
    size_t at = rec_begin(b, M_EXCHANGE);
    buf_shortstr(b, (const char *)name.p, name.n);
    buf_u8(b, type);
    buf_u8(b, flags);
    buf_longstr(b, args.p, args.n);
    put_vhost(b, vhost);
    rec_end(b, at, salt);
}

void meta_put_exchange_del(buf *b, uint64_t salt, slice vhost, slice name) {
    size_t at = rec_begin(b, M_EXCHANGE_DEL);
    buf_shortstr(b, (const char *)name.p, name.n);
    put_vhost(b, vhost);
    rec_end(b, at, salt);
}

void meta_put_queue(buf *b, uint64_t salt, uint32_t qid, slice vhost, slice name, uint8_t flags, slice args) {
    size_t at = rec_begin(b, M_QUEUE);
    buf_u32(b, qid);
    buf_shortstr(b, (const char *)name.p, name.n);
    buf_u8(b, flags);
    buf_longstr(b, args.p, args.n);
    put_vhost(b, vhost);
    rec_end(b, at, salt);
}

void meta_put_access(buf *b, uint64_t salt, slice payload) {
    size_t at = rec_begin(b, M_ACCESS);
    buf_put(b, payload.p, payload.n);
    rec_end(b, at, salt);
}

void meta_put_cron(buf *b, uint64_t salt, slice payload) {
    size_t at = rec_begin(b, M_CRON);
    buf_put(b, payload.p, payload.n);
    rec_end(b, at, salt);
}

void meta_put_queue_del(buf *b, uint64_t salt, uint32_t qid) {
    size_t at = rec_begin(b, M_QUEUE_DEL);
    buf_u32(b, qid);
    rec_end(b, at, salt);
}

void meta_put_binding(buf *b, uint64_t salt, int add, slice vhost, slice src, int to_exchange, slice dst, slice key,
                      slice args) {
    size_t at = rec_begin(b, add ? M_BIND : M_UNBIND);
    buf_shortstr(b, (const char *)src.p, src.n);
    buf_u8(b, to_exchange ? 1 : 0);
    buf_shortstr(b, (const char *)dst.p, dst.n);
    buf_shortstr(b, (const char *)key.p, key.n);
    buf_longstr(b, args.p, args.n);
    put_vhost(b, vhost);
    rec_end(b, at, salt);
}
