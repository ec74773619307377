/* access_store.c — the access database (users, vhosts, permissions) in meta.log, and how
 * ferryd's users come to be at start.
 *
 * The store carries M_ACCESS records as opaque bytes (meta.h); this file, on the broker's
 * side, writes and reads them. One record per user, vhost, permission and topic
 * permission; a later record of the same key replaces an earlier one, and compaction
 * writes the current ones (access_emit). Users change only at start (definitions file, the
 * default user), so after a change the whole database is appended once (access_store_all).
 *
 *   USER   name, alg, hash, tags, max-connections, max-channels
 *   VHOST  name, max-connections, max-queues
 *   PERM   user, vhost, configure, write, read
 *   TPERM  user, vhost, exchange, write, read */
#include "broker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "meta.h"
#include "store.h"
#include "util.h"

enum { A_USER = 1, A_VHOST = 2, A_PERM = 3, A_TPERM = 4 };

static void put_str(buf *b, const char *s) { buf_longstr(b, s, strlen(s)); }

static void emit_one(buf *out, uint64_t salt, buf *p) {
    meta_put_access(out, salt, (slice){buf_head(p), p->len});
    p->len = 0;
}

void access_emit(broker *b, buf *out, uint64_t salt) {
    access_db *db = b->access;
    buf p;
    buf_init(&p);
    size_t i = 0;
    map_entry *e;
    while (map_iter(&b->vhosts, &i, &e)) {
        vhost *vh = e->val;
        buf_u8(&p, A_VHOST);
        buf_shortstr(&p, vh->name, vh->name_len);
        buf_u64(&p, (uint64_t)vh->max_connections);
        buf_u64(&p, (uint64_t)vh->max_queues);
        emit_one(out, salt, &p);
    }
    i = 0;
    while (map_iter(&db->users, &i, &e)) {
        user *u = e->val;
        buf_u8(&p, A_USER);
        buf_shortstr(&p, u->name, u->name_len);
        buf_u8(&p, u->alg);
        buf_longstr(&p, u->hash, u->hash_len);
        put_str(&p, u->tags);
        buf_u64(&p, (uint64_t)u->max_connections);
        buf_u64(&p, (uint64_t)u->max_channels);
        emit_one(out, salt, &p);
    }
    i = 0;
    while (map_iter(&db->perms, &i, &e)) {
        uperm *pm = e->val;
        buf_u8(&p, A_PERM);
        buf_shortstr(&p, pm->user, strlen(pm->user));
        buf_shortstr(&p, pm->vhost, strlen(pm->vhost));
        for (int k = 0; k < 3; k++)
            put_str(&p, pm->p[k].src);
        emit_one(out, salt, &p);
    }
    i = 0;
    while (map_iter(&db->tperms, &i, &e)) {
        tperm *tp = e->val;
        buf_u8(&p, A_TPERM);
        buf_shortstr(&p, tp->user, strlen(tp->user));
        buf_shortstr(&p, tp->vhost, strlen(tp->vhost));
        buf_shortstr(&p, tp->exchange, strlen(tp->exchange));
        put_str(&p, tp->p[0].src);
        put_str(&p, tp->p[1].src);
        emit_one(out, salt, &p);
    }
    buf_free(&p);
}

void access_store_all(broker *b) {
    if (!b->store)
        return;
    buf out;
    buf_init(&out);
    access_emit(b, &out, store_meta_salt(b->store));
    if (out.len)
        store_meta_append(b->store, &out);
    else
        buf_free(&out);
}

/* A long string as a C string (regexes, tags): NULL if it holds a NUL. */
static char *cstr(slice s) {
    if (memchr(s.p, 0, s.n))
        return NULL;
    return xstrndup((const char *)s.p, s.n);
}

void access_recover(void *ctx, slice payload) {
    broker *b = ctx;
    access_db *db = b->access;
    rd r = rd_make(payload.p, payload.n);
    char err[200];
    switch (rd_u8(&r)) {
    case A_VHOST: {
        slice name = rd_shortstr(&r);
        int64_t mc = (int64_t)rd_u64(&r), mq = (int64_t)rd_u64(&r);
        if (r.err)
            return;
        vhost *vh = vhost_get(b, name);
        vh->max_connections = mc;
        vh->max_queues = mq;
        return;
    }
    case A_USER: {
        slice name = rd_shortstr(&r);
        uint8_t alg = rd_u8(&r);
        slice hash = rd_longstr(&r), tags = rd_longstr(&r);
        int64_t mc = (int64_t)rd_u64(&r), mch = (int64_t)rd_u64(&r);
        char *t = r.err ? NULL : cstr(tags);
        if (!t)
            return;
        user *u = auth_put_user(db, name, alg, hash.p, hash.n, t);
        u->max_connections = mc;
        u->max_channels = mch;
        free(t);
        return;
    }
    case A_PERM: {
        slice user = rd_shortstr(&r), vh = rd_shortstr(&r);
        slice c = rd_longstr(&r), w = rd_longstr(&r), rr = rd_longstr(&r);
        if (r.err)
            return;
        char *cs = cstr(c), *ws = cstr(w), *rs_ = cstr(rr);
        if (cs && ws && rs_ && access_set_perm(db, user, vh, cs, ws, rs_, err, sizeof err) < 0)
            log_error("meta.log: permission of user '%.*s' on vhost '%.*s' skipped: %s", (int)user.n,
                      (const char *)user.p, (int)vh.n, (const char *)vh.p, err);
        free(cs), free(ws), free(rs_);
        return;
    }
    case A_TPERM: {
        slice user = rd_shortstr(&r), vh = rd_shortstr(&r), x = rd_shortstr(&r);
        slice w = rd_longstr(&r), rr = rd_longstr(&r);
        if (r.err)
            return;
        char *ws = cstr(w), *rs_ = cstr(rr);
        if (ws && rs_ && access_set_topic_perm(db, user, vh, x, ws, rs_, err, sizeof err) < 0)
            log_error("meta.log: topic permission of user '%.*s' skipped: %s", (int)user.n, (const char *)user.p, err);
        free(ws), free(rs_);
        return;
    }
    }
}

/* After recovery: the definitions file, if given, is loaded (as RabbitMQ loads definitions
 * at boot; the default user is then not created); otherwise a data directory that has no
 * users yet gets the default user (guest/guest, all permissions on "/"), as a new RabbitMQ
 * node does. What changed is stored. */
int access_setup(broker *b, char *err, size_t errlen) {
    access_db *db = b->access;
    const config *cfg = &b->cfg;
    int changed = 0;
    if (cfg->definitions[0]) {
        if (definitions_load(b, cfg->definitions, err, errlen) < 0)
            return -1;
        changed = 1;
    } else if (db->users.count == 0) {
        buf h;
        buf_init(&h);
        int alg;
        auth_hash_password(db, slice_str(cfg->default_pass), &alg, &h);
        auth_put_user(db, slice_str(cfg->default_user), alg, buf_head(&h), h.len, "administrator");
        buf_free(&h);
        if (access_set_perm(db, slice_str(cfg->default_user), slice_str("/"), ".*", ".*", ".*", err, errlen) < 0)
            return -1;
        log_info("created the default user '%s' (from loopback only)", cfg->default_user);
        changed = 1;
    }
    if (changed)
        access_store_all(b);
    return 0;
}
