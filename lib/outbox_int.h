/* outbox_int.h — what the outbox relay (outbox_relay.c) asks of a database backend
 * (outbox_sqlite.c, outbox_pg.c), and the rows they hand each other.
 *
 * A backend answers four questions: which pending rows may this relay publish now (claim:
 * taking the SQLite lease or PostgreSQL's per-aggregate advisory locks first, so replicas
 * never publish the same aggregate at once), mark these sent, let go of what was claimed,
 * and wait until there may be new rows. */
#ifndef FERRY_OUTBOX_INT_H
#define FERRY_OUTBOX_INT_H

#include <stddef.h>
#include <stdint.h>

#include "ferry/outbox.h"

typedef struct outbox_row {
    int64_t id;
    char *event_id, *aggregate_id, *exchange, *routing_key, *headers, *content_type; /* content_type may be NULL */
    unsigned char *body;
    size_t body_len;
} outbox_row;

typedef struct outbox_db outbox_db;

typedef struct outbox_db_ops {
    /* Claims up to `limit` pending rows in publishing order (id order within each aggregate).
     * Zero rows (FERRY_OK, *n = 0) when there is nothing, or another replica holds the lease. */
    int (*claim)(outbox_db *db, int limit, outbox_row **rows, size_t *n);
    /* Marks these rows sent (one transaction). */
    int (*mark_sent)(outbox_db *db, const int64_t *ids, size_t n);
    /* Lets go of what claim took (advisory locks); the SQLite lease is kept while running. */
    void (*release)(outbox_db *db);
    /* Deletes sent rows whose sent_at is older than retention_ms; *deleted gets the count. */
    int (*purge)(outbox_db *db, int64_t retention_ms, int64_t *deleted);
    /* Returns after timeout_ms, or earlier when new rows may be there (NOTIFY). */
    int (*wait)(outbox_db *db, int timeout_ms);
    /* Gives up the lease (clean stop) and closes the connection. */
    void (*close)(outbox_db *db);
} outbox_db_ops;

struct outbox_db {
    const outbox_db_ops *ops;
    char err[512]; /* the last error's text */
};

/* Opens a backend; on failure returns an error and writes the reason to err. */
int outbox_sqlite_open(outbox_db **out, const char *path, int lease_ms, char *err, size_t errlen);
int outbox_pg_open(outbox_db **out, const char *conninfo, char *err, size_t errlen);

void outbox_rows_free(outbox_row *rows, size_t n);

/* A random UUID v4 in text form (37 bytes with the NUL). */
void outbox_uuid(char out[37]);

/* Wall-clock milliseconds (the SQLite lease is shared between processes). */
int64_t outbox_now_ms(void);

#endif
