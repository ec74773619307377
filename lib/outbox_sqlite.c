/* outbox_sqlite.c — the outbox in SQLite: the table, the insert function the application calls
 * inside its own transaction, and the relay's backend (claim, mark sent, retention).
 *
 * Replicas: SQLite has one writer at a time and no advisory locks, so several relays share one
 * lease row (ferry_outbox_lease, name 'relay'): the holder publishes, the others stand by and
 * take over when the lease has not been renewed for lease_ms (a crashed or stopped holder).
 * One active relay publishing in id order keeps every aggregate's order. The holder renews the
 * lease when half of it is gone, so a busy relay writes the lease every lease_ms/2, not on
 * every 100 ms poll. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "outbox_check.h"
#include "outbox_int.h"

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS ferry_outbox (\n"
    "  id           INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "  event_id     TEXT NOT NULL UNIQUE CHECK (length(CAST(event_id AS BLOB)) BETWEEN 1 AND 255),\n"
    "  aggregate_id TEXT NOT NULL CHECK (aggregate_id <> ''),\n"
    "  exchange     TEXT NOT NULL DEFAULT '' CHECK (length(CAST(exchange AS BLOB)) <= 255),\n"
    "  routing_key  TEXT NOT NULL DEFAULT '' CHECK (length(CAST(routing_key AS BLOB)) <= 255),\n"
    "  headers      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(headers) AND json_type(headers) = 'object'),\n"
    "  content_type TEXT CHECK (content_type IS NULL OR length(CAST(content_type AS BLOB)) <= 255),\n"
    "  body         BLOB NOT NULL DEFAULT x'',\n"
    "  created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),\n"
    "  sent_at      TEXT\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS ferry_outbox_pending ON ferry_outbox (id) WHERE sent_at IS NULL;\n"
    "CREATE INDEX IF NOT EXISTS ferry_outbox_sent ON ferry_outbox (sent_at) WHERE sent_at IS NOT NULL;\n"
    "CREATE TABLE IF NOT EXISTS ferry_outbox_lease (\n"
    "  name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL\n"
    ");\n";

int ferry_outbox_schema_sqlite(struct sqlite3 *db) {
    if (db == NULL)
        return FERRY_EINVAL;
    /* WAL lets the relay read while the application writes (and survives the relay's crash). */
    sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    return sqlite3_exec(db, schema_sql, NULL, NULL, NULL) == SQLITE_OK ? FERRY_OK : FERRY_EDB;
}

static int bind_text(sqlite3_stmt *st, int i, const char *s) {
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

int ferry_outbox_insert_sqlite(struct sqlite3 *db, const ferry_outbox_event *ev, char event_id_out[37]) {
    if (db == NULL || outbox_check_event(ev) != NULL)
        return FERRY_EINVAL;
    char made[37];
    const char *id = ev->event_id;
    if (id == NULL) {
        outbox_uuid(made);
        id = made;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO ferry_outbox (event_id, aggregate_id, exchange, routing_key, headers, "
                           "content_type, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           -1, &st, NULL) != SQLITE_OK)
        return FERRY_EDB;
    bind_text(st, 1, id);
    bind_text(st, 2, ev->aggregate_id);
    bind_text(st, 3, ev->exchange ? ev->exchange : "");
    bind_text(st, 4, ev->routing_key ? ev->routing_key : "");
    bind_text(st, 5, ev->headers_json ? ev->headers_json : "{}");
    bind_text(st, 6, ev->content_type);
    sqlite3_bind_blob(st, 7, ev->body_len ? ev->body : "", (int)ev->body_len, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return FERRY_EDB;
    if (event_id_out && ev->event_id == NULL)
        memcpy(event_id_out, made, sizeof made);
    return FERRY_OK;
}

/* ---- the relay's backend ------------------------------------------------------------------ */

typedef struct sq_db {
    outbox_db base;
    sqlite3 *db;
    char holder[37];     /* this relay's id in the lease row */
    int lease_ms;
    int64_t lease_until; /* wall-clock ms until which we hold the lease; 0 = not held */
} sq_db;

static int sq_fail(sq_db *s, const char *what) {
    snprintf(s->base.err, sizeof s->base.err, "sqlite: %s: %s", what, sqlite3_errmsg(s->db));
    return FERRY_EDB;
}

/* Takes or renews the lease; returns 1 if this relay holds it, 0 if another does, <0 on error. */
static int sq_lease(sq_db *s) {
    int64_t now = outbox_now_ms();
    if (s->lease_until - now > s->lease_ms / 2)
        return 1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO ferry_outbox_lease (name, holder, expires_at) VALUES ('relay', ?1, ?2) "
                           "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
                           "WHERE ferry_outbox_lease.holder = ?1 OR ferry_outbox_lease.expires_at < ?3",
                           -1, &st, NULL) != SQLITE_OK)
        return sq_fail(s, "lease");
    sqlite3_bind_text(st, 1, s->holder, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now + s->lease_ms);
    sqlite3_bind_int64(st, 3, now);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sq_fail(s, "lease");
    if (sqlite3_changes(s->db) == 1) {
        s->lease_until = now + s->lease_ms;
        return 1;
    }
    s->lease_until = 0;
    return 0;
}

static char *col_dup(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

static int sq_claim(outbox_db *d, int limit, outbox_row **rows, size_t *n) {
    sq_db *s = (sq_db *)d;
    *n = 0;
    *rows = NULL;
    int held = sq_lease(s);
    if (held <= 0)
        return held;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT id, event_id, aggregate_id, exchange, routing_key, headers, content_type, body "
                           "FROM ferry_outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return sq_fail(s, "select pending rows");
    sqlite3_bind_int(st, 1, limit);
    outbox_row *r = calloc((size_t)limit, sizeof *r);
    size_t k = 0;
    int rc;
    while (r && k < (size_t)limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        outbox_row *w = &r[k++];
        w->id = sqlite3_column_int64(st, 0);
        w->event_id = col_dup(st, 1);
        w->aggregate_id = col_dup(st, 2);
        w->exchange = col_dup(st, 3);
        w->routing_key = col_dup(st, 4);
        w->headers = col_dup(st, 5);
        w->content_type = col_dup(st, 6);
        int len = sqlite3_column_bytes(st, 7);
        const void *b = sqlite3_column_blob(st, 7);
        w->body = malloc((size_t)len + 1);
        if (w->body && len > 0)
            memcpy(w->body, b, (size_t)len);
        w->body_len = (size_t)len;
        /* NOT NULL columns can still hold NULL in a table someone made by hand: give them "" */
        if (!w->event_id || !w->aggregate_id || !w->exchange || !w->routing_key || !w->headers || !w->body) {
            if (!w->event_id)
                w->event_id = strdup("");
            if (!w->aggregate_id)
                w->aggregate_id = strdup("");
            if (!w->exchange)
                w->exchange = strdup("");
            if (!w->routing_key)
                w->routing_key = strdup("");
            if (!w->headers)
                w->headers = strdup("{}");
            if (!w->body)
                w->body = malloc(1);
        }
    }
    rc = sqlite3_errcode(s->db);
    sqlite3_finalize(st);
    if (r == NULL)
        return FERRY_ENOMEM;
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        outbox_rows_free(r, k);
        return sq_fail(s, "read pending rows");
    }
    *rows = r;
    *n = k;
    return FERRY_OK;
}

static int sq_mark_sent(outbox_db *d, const int64_t *ids, size_t n) {
    sq_db *s = (sq_db *)d;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return sq_fail(s, "begin");
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "UPDATE ferry_outbox SET sent_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                           "WHERE id = ?1 AND sent_at IS NULL",
                           -1, &st, NULL) != SQLITE_OK) {
        int e = sq_fail(s, "mark sent");
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return e;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, ids[i]);
        if (sqlite3_step(st) != SQLITE_DONE) {
            int e = sq_fail(s, "mark sent");
            sqlite3_finalize(st);
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return e;
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        int e = sq_fail(s, "commit");
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return e;
    }
    return FERRY_OK;
}

static void sq_release(outbox_db *d) {
    (void)d; /* the lease stays with the running relay */
}

static int sq_purge(outbox_db *d, int64_t retention_ms, int64_t *deleted) {
    sq_db *s = (sq_db *)d;
    char mod[64];
    snprintf(mod, sizeof mod, "-%lld.%03lld seconds", (long long)(retention_ms / 1000),
             (long long)(retention_ms % 1000));
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "DELETE FROM ferry_outbox WHERE sent_at IS NOT NULL AND "
                           "sent_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1)",
                           -1, &st, NULL) != SQLITE_OK)
        return sq_fail(s, "retention");
    sqlite3_bind_text(st, 1, mod, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sq_fail(s, "retention");
    *deleted = sqlite3_changes(s->db);
    return FERRY_OK;
}

static int sq_wait(outbox_db *d, int timeout_ms) {
    (void)d;
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return 0;
}

static void sq_close(outbox_db *d) {
    sq_db *s = (sq_db *)d;
    if (s->lease_until) { /* hand the lease over at once instead of making a standby wait */
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(s->db, "UPDATE ferry_outbox_lease SET expires_at = 0 WHERE name = 'relay' AND holder = ?1",
                               -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, s->holder, -1, SQLITE_STATIC);
            sqlite3_step(st);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(s->db);
    free(s);
}

static const outbox_db_ops sq_ops = {sq_claim, sq_mark_sent, sq_release, sq_purge, sq_wait, sq_close};

int outbox_sqlite_open(outbox_db **out, const char *path, int lease_ms, char *err, size_t errlen) {
    sq_db *s = calloc(1, sizeof *s);
    if (s == NULL)
        return FERRY_ENOMEM;
    s->base.ops = &sq_ops;
    s->lease_ms = lease_ms;
    outbox_uuid(s->holder);
    /* READWRITE without CREATE: a mistyped path is an error, not a new empty database. */
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open SQLite database '%s': %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sqlite3_close(s->db);
        free(s);
        return FERRY_EDB;
    }
    sqlite3_busy_timeout(s->db, 5000);
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ferry_outbox'", -1,
                           &st, NULL) == SQLITE_OK) {
        found = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    } else {
        snprintf(err, errlen, "cannot read SQLite database '%s': %s", path, sqlite3_errmsg(s->db));
        sqlite3_close(s->db);
        free(s);
        return FERRY_EDB;
    }
    if (!found) {
        snprintf(err, errlen, "SQLite database '%s' has no ferry_outbox table (ferry outbox schema --db sqlite:%s)",
                 path, path);
        sqlite3_close(s->db);
        free(s);
        return FERRY_EDB;
    }
    if (sqlite3_exec(s->db,
                     "CREATE TABLE IF NOT EXISTS ferry_outbox_lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
                     "expires_at INTEGER NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "SQLite database '%s': cannot create ferry_outbox_lease: %s", path, sqlite3_errmsg(s->db));
        sqlite3_close(s->db);
        free(s);
        return FERRY_EDB;
    }
    *out = &s->base;
    return FERRY_OK;
}
