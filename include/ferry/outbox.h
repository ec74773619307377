/* ferry/outbox.h — the transactional outbox: write an event in the same database transaction
 * as the state change it announces, and let the relay publish it afterwards.
 *
 * The table `ferry_outbox` is the interface (any language can insert into it):
 *   id            integer, increasing (SQLite: INTEGER PRIMARY KEY AUTOINCREMENT;
 *                 PostgreSQL: bigint identity)
 *   event_id      text, unique; becomes the AMQP message_id
 *   aggregate_id  text; the relay keeps the order of the events of one aggregate
 *   exchange      text ('' = the default exchange)
 *   routing_key   text
 *   headers       JSON text (an object; '{}' when there are none) -> AMQP headers
 *   content_type  text (NULL: no content_type property)
 *   body          bytes (SQLite BLOB, PostgreSQL bytea)
 *   created_at    when the row was inserted (SQLite: ISO-8601 UTC text; PostgreSQL: timestamptz)
 *   sent_at       NULL until the broker confirmed the publish; sent rows are deleted by the
 *                 relay's retention setting
 *
 * The relay publishes pending rows with publisher confirms (persistent, message_id =
 * event_id), in id order within each aggregate, then marks them sent. A crash between the
 * confirm and the mark publishes the row again (at-least-once): a queue with ferryd's
 * `x-deduplication-window`, or an idempotent consumer (ferry/idempotent.h), drops the copy.
 *
 * Errors are values: every function returns FERRY_OK (0) or a negative FERRY_E* code and
 * leaves its outputs untouched on failure (see ferry/ferry.h).
 */
#ifndef FERRY_OUTBOX_H
#define FERRY_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "ferry/ferry.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The application's own handles: sqlite3.h's `sqlite3` and libpq-fe.h's `PGconn`. Declared
 * by their struct tags so this header needs neither library's header. */
struct sqlite3;
struct pg_conn;

/* One event to put in the outbox. Strings are NUL-terminated; only body may hold any byte. */
typedef struct ferry_outbox_event {
    const char *event_id;     /* NULL: a random UUID v4 is made (and written to event_id_out) */
    const char *aggregate_id; /* required, non-empty */
    const char *exchange;     /* NULL = "" (the default exchange) */
    const char *routing_key;  /* NULL = "" */
    const char *headers_json; /* NULL = "{}"; must be a JSON object */
    const char *content_type; /* may be NULL */
    const void *body;
    size_t body_len;
} ferry_outbox_event;

/* Creates ferry_outbox (and the relay's lease table) if missing; switches the database to WAL
 * so the relay reads while the application writes. Idempotent. */
int ferry_outbox_schema_sqlite(struct sqlite3 *db);

/* Creates ferry_outbox, its indexes and the NOTIFY trigger (channel "ferry_outbox", one
 * notification per inserting statement) if missing. Idempotent. */
int ferry_outbox_schema_pg(struct pg_conn *pg);

/* Inserts one event using the application's connection, inside whatever transaction the
 * application has open on it (it commits or rolls back; the row goes with it). When
 * ev->event_id is NULL a UUID is made and, if event_id_out is not NULL, written there (37
 * bytes with the NUL). FERRY_EINVAL: the event breaks a rule above (nothing is written);
 * FERRY_EDB: the database refused (e.g. a duplicate event_id, no ferry_outbox table). */
int ferry_outbox_insert_sqlite(struct sqlite3 *db, const ferry_outbox_event *ev, char event_id_out[37]);
int ferry_outbox_insert_pg(struct pg_conn *pg, const ferry_outbox_event *ev, char event_id_out[37]);

/* ---- the relay ---------------------------------------------------------------------------- */

typedef struct ferry_outbox_relay ferry_outbox_relay;

typedef struct ferry_outbox_relay_options {
    const char *db;       /* "sqlite:PATH" or "postgresql://…" / "postgres://…" (required) */
    const char *uri;      /* amqp://… of the broker (NULL: amqp://guest:guest@127.0.0.1:5672/) */
    int poll_ms;          /* how often to look for rows when nothing says there are some:
                           * 0 = default, 100 ms for SQLite (the upper bound of the delay of
                           * an inserted row), 1000 ms for PostgreSQL (a fallback: NOTIFY
                           * wakes the relay at once) */
    int batch;            /* rows per round (0 = 500) */
    int64_t retention_ms; /* sent rows older than this are deleted; 0 = default (7 days);
                           * -1 = keep forever */
    int lease_ms;         /* SQLite: how long the active relay's lease lasts before a standby
                           * replica takes over (0 = 5000) */
    /* Log lines (what was published, errors, reconnects); NULL = stderr. */
    void (*log)(void *arg, const char *line);
    void *log_arg;
} ferry_outbox_relay_options;

/* Opens the database (and checks that ferry_outbox exists) and connects to the broker.
 * On failure *out is untouched and, if err is not NULL, err holds a readable reason. */
int ferry_outbox_relay_open(ferry_outbox_relay **out, const ferry_outbox_relay_options *opt, char *err,
                            size_t errlen);

/* One round: publish up to `batch` pending rows, wait for their confirms, mark them sent,
 * apply retention. *published (may be NULL) gets the number of rows marked sent. A broker or
 * database failure returns its error and leaves the rows pending (the next round retries). */
int ferry_outbox_relay_round(ferry_outbox_relay *r, int *published);

/* Runs rounds until ferry_outbox_relay_stop() (async-signal-safe) is called: waits between
 * rounds for NOTIFY or the poll interval, reconnects to the broker and the database with
 * backoff (100 ms doubling to 5 s). Returns FERRY_OK after a stop. */
int ferry_outbox_relay_run(ferry_outbox_relay *r);
void ferry_outbox_relay_stop(ferry_outbox_relay *r);

/* The last error's readable text ("" if none). */
const char *ferry_outbox_relay_error(const ferry_outbox_relay *r);

/* Totals since open: rows marked sent, publishes (including ones whose mark was lost). */
uint64_t ferry_outbox_relay_sent(const ferry_outbox_relay *r);

void ferry_outbox_relay_close(ferry_outbox_relay *r);

/* Parses a --db value: returns 1 for SQLite (*path gets the file name), 2 for PostgreSQL,
 * FERRY_EINVAL otherwise. */
int ferry_outbox_db_kind(const char *db, const char **path);

#ifdef __cplusplus
}
#endif
#endif
