/* recover.c — replays the message log into a recover_sink at start (see recover.h). Runs on
 * the loop thread before it serves anyone. */
#include "recover.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "storeio.h"
#include "util.h"

typedef struct rentry { /* a copy while the log is replayed */
    rcopy c;
    uint8_t paged; /* c.m is NULL: the body stays in the log */
    uint8_t gone;  /* settled */
} rentry;

typedef struct rvec { /* one queue's recovered copies, in seq order */
    rentry *a;
    size_t n, cap;
    /* copies met after a higher seq (a MOVE record of compaction names old copies), in seq
     * order: merged into a once the whole log is read */
    rentry *late;
    size_t nlate, caplate;
    uint64_t max_seq;
    rqueue info; /* info.q is NULL for a queue the broker does not define */
} rvec;

typedef struct rdelayed { /* delayed entries, in sid order */
    uint64_t sid, due;
    uint32_t qid, seg;
    char *exchange; /* or NULL for a queue target */
    char *vhost;    /* the exchange's vhost, NULL for "/" */
    message *m;     /* NULL once done */
} rdelayed;

typedef struct recovery {
    const recover_sink *sink;
    void *ctx;
    uint64_t memory_budget;
    int meta_damaged; /* meta.log had a corrupt record: keep messages of unknown queues */
    rvec *vecs;       /* qid -> copies */
    uint32_t nqid;
    rdelayed *delayed;
    size_t ndelayed, capdelayed;
    uint64_t pinned; /* copies in the segment being scanned that keep it on disk */
    uint64_t copies; /* copies and delayed messages written to the segment being scanned */
    uint32_t segid;  /* the segment being scanned */
    uint64_t wall;   /* wall-clock ms, read once per segment (a read per record was 5% of recovery) */
    const uint8_t *base;
    recover_stats *st;
} recovery;

/* Recovery's table of the broker's durable queues (sink->queues calls this). */
static void add_queue(void *arg, const rqueue *info) {
    recovery *rc = arg;
    if (!info->qid || !info->q)
        return;
    if (info->qid >= rc->nqid) {
        uint32_t n = MAX(info->qid + 1, rc->nqid * 2);
        rc->vecs = xrealloc(rc->vecs, n * sizeof *rc->vecs);
        memset(rc->vecs + rc->nqid, 0, (n - rc->nqid) * sizeof *rc->vecs);
        rc->nqid = n;
    }
    rc->vecs[info->qid].info = *info;
}

static rvec *known(recovery *rc, uint32_t qid) {
    return qid < rc->nqid && rc->vecs[qid].info.q ? &rc->vecs[qid] : NULL;
}

/* The entry for seq in a (n entries, in seq order), or where it would go (*at). */
static rentry *entries_find(rentry *a, size_t n, uint64_t seq, size_t *at) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a[mid].c.seq == seq)
            return &a[mid];
        if (a[mid].c.seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (at)
        *at = lo;
    return NULL;
}

static rentry *rvec_find(rvec *v, uint64_t seq) {
    rentry *e = entries_find(v->a, v->n, seq, NULL);
    return e ? e : entries_find(v->late, v->nlate, seq, NULL);
}

/* A slot for a new copy of seq: at the end of v->a if it is the highest yet, else in order
 * in v->late (the caller checked it is in neither). */
static rentry *rvec_add(rvec *v, uint64_t seq) {
    if (v->n == 0 || seq > v->a[v->n - 1].c.seq) {
        if (v->n == v->cap) {
            v->cap = v->cap ? v->cap * 2 : 64;
            v->a = xrealloc(v->a, v->cap * sizeof *v->a);
        }
        return &v->a[v->n++];
    }
    size_t at = 0;
    entries_find(v->late, v->nlate, seq, &at);
    if (v->nlate == v->caplate) {
        v->caplate = v->caplate ? v->caplate * 2 : 16;
        v->late = xrealloc(v->late, v->caplate * sizeof *v->late);
    }
    memmove(v->late + at + 1, v->late + at, (v->nlate - at) * sizeof *v->late);
    v->nlate++;
    return &v->late[at];
}

/* Merges v->late into v->a (both in seq order, no seq in both). */
static void rvec_merge(rvec *v) {
    if (!v->nlate)
        return;
    rentry *out = xmalloc((v->n + v->nlate) * sizeof *out);
    size_t i = 0, j = 0, k = 0;
    while (i < v->n || j < v->nlate) {
        if (j == v->nlate || (i < v->n && v->a[i].c.seq < v->late[j].c.seq))
            out[k++] = v->a[i++];
        else
            out[k++] = v->late[j++];
    }
    free(v->a);
    free(v->late);
    v->a = out;
    v->n = v->cap = k;
    v->late = NULL;
    v->nlate = v->caplate = 0;
}

/* The message of a PUBLISH record being recovered (built once, on first need). */
static message *recovered_message(const rec_publish *p, const props_view *pv, uint32_t segid, size_t off,
                                  size_t len) {
    message *m = message_new(p->exchange, p->rkey, p->props, p->body.n);
    if (p->body.n)
        memcpy(msg_body(m), p->body.p, p->body.n);
    m->persistent = 1;
    m->priority = pv->priority;
    m->ttl = p->ttl;
    m->seg = segid;
    m->in_store = 1;
    if (off <= UINT32_MAX && len <= UINT32_MAX) { /* paging can point at it */
        m->doff = (uint32_t)off;
        m->dlen = (uint32_t)len;
        m->on_disk = 1;
    }
    return m;
}

/* A PUBLISH record gives each queue it names a copy. A MOVE record (compaction) names copies
 * that were live when it was written: one already met (the old segment is still there) stays
 * as it is, with the higher delivery count; one not met (its PUBLISH is gone with its
 * segment) is added in seq order. A settled copy is never in a MOVE written after it. */
static void apply_publish(recovery *rc, const uint8_t *rec, size_t len) {
    rec_publish p;
    props_view pv;
    if (rec_publish_read(rec, len, &p) < 0 || props_parse(p.props, &pv) < 0)
        return;
    int moved = rec_is_move(rec_type(rec));
    rc->copies += p.nq;
    size_t off = (size_t)(rec - rc->base);
    /* Paging: beyond the memory budget, a copy is recovered paged out (its body stays in the
     * log) rather than as a message. */
    int can_page = off <= UINT32_MAX && len <= UINT32_MAX;
    int page = can_page && p.ttl < 0 && message_bytes() > rc->memory_budget;
    message *m = NULL;
    for (uint32_t i = 0; i < p.nq; i++) {
        uint32_t qid;
        uint64_t seq;
        rec_publish_queue(&p, i, &qid, &seq);
        if (qid > rc->st->max_qid)
            rc->st->max_qid = qid;
        rvec *v = known(rc, qid);
        if (!v) {
            /* A queue we do not know: deleted, or its definition was damaged. In the second
             * case its messages must stay on disk for a person to recover. */
            if (rc->meta_damaged) {
                rc->pinned++;
                rc->st->orphans++;
            }
            continue;
        }
        if (moved) {
            rentry *had = rvec_find(v, seq);
            uint16_t d = rec_publish_deliveries(&p, i);
            if (had) {
                if (!had->gone && d > had->c.deliveries)
                    had->c.deliveries = d;
                continue;
            }
        } else if (v->n && seq <= v->a[v->n - 1].c.seq) {
            continue; /* out of order: cannot happen in a log we wrote */
        }
        uint64_t wall = rc->wall;
        /* A MOVE's id is remembered from its PUBLISH: the window pins that segment. */
        if (!moved && v->info.dedup_window > 0 && p.published + (uint64_t)v->info.dedup_window > wall) {
            /* still in the window: the id is remembered, and pins this segment */
            uint64_t age = wall > p.published ? wall - p.published : 0, mono = now_ms();
            if (!m)
                m = recovered_message(&p, &pv, rc->segid, off, len);
            rc->sink->dedup(rc->ctx, v->info.q, m, mono > age ? mono - age : 0, rc->segid);
            rc->pinned++;
        }
        rentry e = {.c = {.seq = seq, .published = p.published, .deliveries = rec_publish_deliveries(&p, i)}};
        if (page && v->info.pageable) {
            e.paged = 1;
            e.c.loc = (uint64_t)rc->segid << 32 | off;
            e.c.reclen = (uint32_t)len;
            e.c.priority = pv.priority;
        } else {
            if (!m)
                m = recovered_message(&p, &pv, rc->segid, off, len);
            e.c.m = message_ref(m);
        }
        *rvec_add(v, seq) = e;
        if (seq > v->max_seq)
            v->max_seq = seq;
    }
    message_unref(m);
}

static rdelayed *find_delayed(recovery *rc, uint64_t sid) {
    size_t lo = 0, hi = rc->ndelayed;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (rc->delayed[mid].sid == sid)
            return &rc->delayed[mid];
        if (rc->delayed[mid].sid < sid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void apply_delayed(recovery *rc, const uint8_t *rec, size_t len) {
    uint64_t sid;
    int bad = rec_delayed_sid(rec, len, &sid);
    if (sid > rc->st->max_delay)
        rc->st->max_delay = sid;
    if (rec_type(rec) == R_DELAYED_DONE) {
        rdelayed *d = bad ? NULL : find_delayed(rc, sid);
        if (d && d->m) {
            message_unref(d->m);
            d->m = NULL;
        }
        return;
    }
    rec_delayed r;
    props_view pv;
    if (rec_delayed_read(rec, len, &r) < 0 || props_parse(r.props, &pv) < 0)
        return;
    rc->copies++;
    /* compaction writes a pending delayed message again, with the same id: one is kept */
    if (find_delayed(rc, sid))
        return;
    message *m = message_new(r.exchange, r.rkey, r.props, r.body.n);
    if (r.body.n)
        memcpy(msg_body(m), r.body.p, r.body.n);
    m->persistent = 1;
    m->priority = pv.priority;
    rdelayed d = {sid, r.due, r.qid, rc->segid, NULL, NULL, m};
    if (!r.to_queue)
        d.exchange = xstrndup((const char *)r.target.p, r.target.n);
    if (r.vhost.n)
        d.vhost = xstrndup((const char *)r.vhost.p, r.vhost.n);
    if (rc->ndelayed == rc->capdelayed) {
        rc->capdelayed = rc->capdelayed ? rc->capdelayed * 2 : 64;
        rc->delayed = xrealloc(rc->delayed, rc->capdelayed * sizeof *rc->delayed);
    }
    size_t at = rc->ndelayed; /* in sid order (a moved one comes after higher ids) */
    while (at > 0 && rc->delayed[at - 1].sid > sid)
        at--;
    memmove(rc->delayed + at + 1, rc->delayed + at, (rc->ndelayed - at) * sizeof *rc->delayed);
    rc->ndelayed++;
    rc->delayed[at] = d;
}

static void apply_record(void *arg, const uint8_t *rec, size_t len) {
    recovery *rc = arg;
    uint8_t type = rec_type(rec);
    rc->st->records++;
    if (rec_is_publish(type)) {
        apply_publish(rc, rec, len);
        return;
    }
    if (type == R_DELAYED || type == R_DELAYED_DONE) {
        apply_delayed(rc, rec, len);
        return;
    }
    if (type != R_SETTLE && type != R_DELIVERED)
        return;
    uint32_t qid;
    uint64_t seq;
    if (rec_copy_read(rec, len, &qid, &seq) < 0)
        return;
    if (qid > rc->st->max_qid)
        rc->st->max_qid = qid;
    rvec *v = known(rc, qid);
    if (!v)
        return;
    if (seq > v->max_seq)
        v->max_seq = seq;
    rentry *e = rvec_find(v, seq);
    if (!e || e->gone)
        return;
    if (type == R_DELIVERED) {
        if (e->c.deliveries < UINT16_MAX)
            e->c.deliveries++;
    } else {
        message_unref(e->c.m);
        e->c.m = NULL;
        e->gone = 1;
    }
}

/* Delayed messages still pending go back to the broker, to their exchange or queue. */
static void restore_delayed(recovery *rc, segset *ss) {
    for (size_t i = 0; i < rc->ndelayed; i++) {
        rdelayed *d = &rc->delayed[i];
        if (d->m) {
            rvec *v = d->exchange ? NULL : known(rc, d->qid);
            slice xname = d->exchange ? slice_str(d->exchange) : (slice){0};
            slice vhost = d->vhost ? slice_str(d->vhost) : (slice){0};
            if ((d->exchange || v) &&
                rc->sink->delayed(rc->ctx, d->sid, d->due, vhost, xname, v ? v->info.q : NULL, d->m, d->seg)) {
                seg *sg = segset_find(ss, d->seg);
                if (sg)
                    sg->live++;
                rc->st->delayed++;
            } else {
                message_unref(d->m);
            }
        }
        free(d->exchange);
        free(d->vhost);
    }
    free(rc->delayed);
}

/* Recovery gives up (a segment it cannot read): drops everything not yet handed over. */
static void abandon(recovery *rc) {
    for (uint32_t qid = 0; qid < rc->nqid; qid++) {
        rvec *v = &rc->vecs[qid];
        for (size_t i = 0; i < v->n; i++)
            if (!v->a[i].gone && !v->a[i].paged)
                message_unref(v->a[i].c.m);
        free(v->a);
    }
    free(rc->vecs);
    for (size_t i = 0; i < rc->ndelayed; i++) {
        message_unref(rc->delayed[i].m);
        free(rc->delayed[i].exchange);
        free(rc->delayed[i].vhost);
    }
    free(rc->delayed);
}

int recover_messages(segset *ss, const char *segdir, uint64_t memory_budget, int meta_damaged,
                     const recover_sink *sink, void *ctx, recover_stats *st) {
    recovery rc = {.sink = sink, .ctx = ctx, .memory_budget = memory_budget, .meta_damaged = meta_damaged, .st = st};
    sink->queues(ctx, add_queue, &rc);
    size_t nids, cap = 0;
    uint32_t *ids = seg_list(segdir, &nids);
    uint8_t *data = NULL; /* one read buffer for every segment */
    for (size_t k = 0; k < nids; k++) {
        char path[700];
        /* Segments are read whole, in order: ask for the next two in the background while
         * this one is parsed, so a cold page cache costs the disk's streaming time, not a
         * read wait per segment plus the parse. */
        for (size_t ahead = k + 1; ahead <= k + 2 && ahead < nids; ahead++) {
            if (k > 0 && ahead == k + 1)
                continue; /* asked for on the previous turn */
            seg_path(segdir, ids[ahead], path, sizeof path);
            sio_prefetch(path);
        }
        seg_path(segdir, ids[k], path, sizeof path);
        size_t len;
        int err = rec_read_file_reuse(path, &data, &cap, &len);
        if (err == -ENOENT) /* deleted (reclaimed) since it was listed */
            continue;
        if (err == -EIO || err == -EMFILE || err == -ENFILE || err == -ENOMEM || err == -ENOSPC || err == -EDQUOT ||
            err == -EAGAIN || err == -EINTR) {
            /* A read that failed but may succeed later (a disk error, out of descriptors):
             * starting without the segment would lose its records for good (their copies
             * settled by omission, their sequence numbers reused). Refuse to start. */
            log_error("store: cannot read %s: %s; not starting without its records (move the file away to start "
                      "without them)",
                      path, strerror(-err));
            free(ids);
            free(data);
            abandon(&rc);
            return err;
        }
        if (err < 0) { /* not a readable file at all (a directory, no permission): only its records are lost */
            log_error("store: cannot read %s: %s", path, strerror(-err));
            continue;
        }
        rc.base = data;
        rc.segid = ids[k];
        rc.wall = wall_ms();
        int last = k + 1 == nids;
        size_t end = rec_scan(path, data, len, last, apply_record, &rc, &st->corrupt);
        rc.base = NULL;
        if (end < len && last) { /* cut the torn tail so appends continue cleanly */
            sio_file *f = sio_open(path, 0);
            if (f) {
                sio_truncate(f, end);
                sio_sync(f);
                sio_close(f);
            }
        }
        seg *sg = segset_add(ss, ids[k], rec_new_salt(), end);
        sg->pins += (uint32_t)MIN(rc.pinned, UINT32_MAX); /* kept on disk */
        sg->copies = rc.copies;
        rc.pinned = rc.copies = 0;
    }
    if (nids && ids[nids - 1] + 1 > ss->next_id)
        ss->next_id = ids[nids - 1] + 1;
    if (!ss->next_id)
        ss->next_id = 1;
    free(ids);
    free(data);
    /* Hand each queue its copies in order; count what is live in each segment. */
    for (uint32_t qid = 0; qid < rc.nqid; qid++) {
        rvec *v = &rc.vecs[qid];
        if (!v->info.q) {
            free(v->a);
            free(v->late);
            continue;
        }
        rvec_merge(v);
        for (size_t i = 0; i < v->n; i++) {
            rentry *e = &v->a[i];
            if (e->gone)
                continue;
            uint32_t segid = e->paged ? (uint32_t)(e->c.loc >> 32) : e->c.m->seg;
            seg *sg = segset_find(ss, segid);
            if (sg)
                sg->live += e->paged ? 2 : 1; /* a paged copy holds its segment once more */
            e->c.maybe_delivered = segid <= st->redelivered_upto;
            sink->copy(ctx, v->info.q, &e->c); /* takes the reference of e->c.m */
            st->messages++;
        }
        if (v->n || v->max_seq)
            sink->next_seq(ctx, v->info.q, v->max_seq + 1);
        free(v->a);
    }
    restore_delayed(&rc, ss);
    free(rc.vecs);
    return 0;
}
