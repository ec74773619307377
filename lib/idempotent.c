/* idempotent.c — the idempotent consumer (ferry/idempotent.h): the processed-message mark and
 * the handler's writes in one SQLite or PostgreSQL transaction.
 *
 * Why the mark is inserted first, before the handler runs: the insert is the check. On SQLite,
 * BEGIN IMMEDIATE takes the write lock, so a second process handling the same message waits
 * and then sees the committed mark; on PostgreSQL the second INSERT ... ON CONFLICT DO NOTHING
 * waits on the first transaction's uncommitted key and inserts nothing if it commits. Either
 * way "already processed" is decided by the database, never by a read followed by a write. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "ferry/idempotent.h"

static const char sqlite_schema[] =
    "CREATE TABLE IF NOT EXISTS ferry_processed (\n"
    "  consumer     TEXT NOT NULL,\n"
    "  message_id   TEXT NOT NULL,\n"
    "  processed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),\n"
    "  PRIMARY KEY (consumer, message_id)\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS ferry_processed_at ON ferry_processed (processed_at);\n";

static const char pg_schema[] = "CREATE TABLE IF NOT EXISTS ferry_processed (\n"
                                "  consumer     text NOT NULL,\n"
                                "  message_id   text NOT NULL,\n"
                                "  processed_at timestamptz NOT NULL DEFAULT now(),\n"
                                "  PRIMARY KEY (consumer, message_id)\n"
                                ");\n"
                                "CREATE INDEX IF NOT EXISTS ferry_processed_at ON ferry_processed (processed_at);\n";

int ferry_idempotent_schema_sqlite(struct sqlite3 *db) {
    if (db == NULL)
        return FERRY_EINVAL;
    return sqlite3_exec(db, sqlite_schema, NULL, NULL, NULL) == SQLITE_OK ? FERRY_OK : FERRY_EDB;
}

int ferry_idempotent_schema_pg(struct pg_conn *pg) {
    if (pg == NULL)
        return FERRY_EINVAL;
    PGresult *res = PQexec(pg, pg_schema);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    return ok ? FERRY_OK : FERRY_EDB;
}

static int valid(const char *consumer, const char *message_id) {
    return consumer != NULL && message_id != NULL && message_id[0] != '\0';
}

int ferry_idempotent_sqlite(struct sqlite3 *db, const char *consumer, const char *message_id, ferry_idem_sqlite_fn fn,
                            void *arg) {
    if (db == NULL || fn == NULL || !valid(consumer, message_id))
        return FERRY_EINVAL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return FERRY_EDB;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "INSERT INTO ferry_processed (consumer, message_id) VALUES (?1, ?2) "
                                "ON CONFLICT (consumer, message_id) DO NOTHING",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, consumer, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, message_id, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return FERRY_EDB;
    }
    if (sqlite3_changes(db) == 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return FERRY_IDEM_DUPLICATE;
    }
    int h = fn(db, arg);
    if (h != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return h;
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return FERRY_EDB;
    }
    return FERRY_OK;
}

static int pg_cmd(PGconn *pg, const char *sql) {
    PGresult *res = PQexec(pg, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    return ok;
}

int ferry_idempotent_pg(struct pg_conn *pg, const char *consumer, const char *message_id, ferry_idem_pg_fn fn,
                        void *arg) {
    if (pg == NULL || fn == NULL || !valid(consumer, message_id))
        return FERRY_EINVAL;
    if (!pg_cmd(pg, "BEGIN"))
        return FERRY_EDB;
    const char *v[2] = {consumer, message_id};
    PGresult *res = PQexecParams(pg,
                                 "INSERT INTO ferry_processed (consumer, message_id) VALUES ($1, $2) "
                                 "ON CONFLICT (consumer, message_id) DO NOTHING",
                                 2, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        PQclear(res);
        pg_cmd(pg, "ROLLBACK");
        return FERRY_EDB;
    }
    int inserted = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    if (!inserted) {
        pg_cmd(pg, "ROLLBACK");
        return FERRY_IDEM_DUPLICATE;
    }
    int h = fn(pg, arg);
    if (h != 0) {
        pg_cmd(pg, "ROLLBACK");
        return h;
    }
    /* COMMIT of a transaction that failed inside fn answers ROLLBACK: the status is still
     * COMMAND_OK but the tag says ROLLBACK, which is not a success. */
    res = PQexec(pg, "COMMIT");
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0;
    PQclear(res);
    return ok ? FERRY_OK : FERRY_EDB;
}

int ferry_idempotent_purge_sqlite(struct sqlite3 *db, int64_t older_than_ms, int64_t *deleted) {
    if (db == NULL || older_than_ms < 0)
        return FERRY_EINVAL;
    char mod[64];
    snprintf(mod, sizeof mod, "-%lld.%03lld seconds", (long long)(older_than_ms / 1000),
             (long long)(older_than_ms % 1000));
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "DELETE FROM ferry_processed WHERE processed_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1)",
                           -1, &st, NULL) != SQLITE_OK)
        return FERRY_EDB;
    sqlite3_bind_text(st, 1, mod, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return FERRY_EDB;
    if (deleted)
        *deleted = sqlite3_changes(db);
    return FERRY_OK;
}

int ferry_idempotent_purge_pg(struct pg_conn *pg, int64_t older_than_ms, int64_t *deleted) {
    if (pg == NULL || older_than_ms < 0)
        return FERRY_EINVAL;
    char ms[32];
    snprintf(ms, sizeof ms, "%lld", (long long)older_than_ms);
    const char *v[1] = {ms};
    PGresult *res = PQexecParams(pg,
                                 "DELETE FROM ferry_processed WHERE processed_at < now() - $1::bigint * interval "
                                 "'1 millisecond'",
                                 1, NULL, v, NULL, NULL, 0);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (ok && deleted)
        *deleted = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return ok ? FERRY_OK : FERRY_EDB;
}
