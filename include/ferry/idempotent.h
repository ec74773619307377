/* ferry/idempotent.h — the idempotent consumer: a message's effect happens once even when the
 * message arrives twice (at-least-once delivery, a relay that died before marking a row sent,
 * a worker killed after its commit and before its ack).
 *
 * The mark "consumer C processed message M" is a row in `ferry_processed` written in the SAME
 * database transaction as the handler's own writes: both commit or neither does. A second
 * delivery finds the mark and the handler is not run.
 *
 *   ferry_processed(consumer text, message_id text, processed_at, PRIMARY KEY (consumer, message_id))
 *
 * Use: on each delivery call ferry_idempotent_sqlite() / _pg() with the message_id and a
 * handler that does its writes through the given connection (and does not commit). Then ack
 * the message when the result is FERRY_OK or FERRY_IDEM_DUPLICATE; on an error the
 * transaction was rolled back and the message may be retried.
 */
#ifndef FERRY_IDEMPOTENT_H
#define FERRY_IDEMPOTENT_H

#include <stdint.h>

#include "ferry/ferry.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sqlite3;
struct pg_conn;

/* Returned (positive, not an error) when the message was already processed: the handler was
 * not called and nothing was written. */
#define FERRY_IDEM_DUPLICATE 1

/* The handler: does the message's writes on db / pg inside the open transaction and returns 0
 * to commit, anything else to roll back (that value is returned to the caller). It must not
 * commit or roll back itself. */
typedef int (*ferry_idem_sqlite_fn)(struct sqlite3 *db, void *arg);
typedef int (*ferry_idem_pg_fn)(struct pg_conn *pg, void *arg);

/* Creates ferry_processed if missing. */
int ferry_idempotent_schema_sqlite(struct sqlite3 *db);
int ferry_idempotent_schema_pg(struct pg_conn *pg);

/* Runs fn once per (consumer, message_id): BEGIN (SQLite: IMMEDIATE, so two processes never
 * both pass the check), insert the mark, fn, COMMIT. Returns FERRY_OK (fn ran, all
 * committed), FERRY_IDEM_DUPLICATE, fn's non-zero return (rolled back), FERRY_EINVAL (no
 * message_id: without one a message cannot be recognised again) or FERRY_EDB (rolled back).
 * No transaction may be open on the connection when it is called.
 * PostgreSQL: a concurrent delivery of the same message waits on the mark's unique key until
 * the first commits (then it is a duplicate) or rolls back (then it runs). */
int ferry_idempotent_sqlite(struct sqlite3 *db, const char *consumer, const char *message_id, ferry_idem_sqlite_fn fn,
                            void *arg);
int ferry_idempotent_pg(struct pg_conn *pg, const char *consumer, const char *message_id, ferry_idem_pg_fn fn,
                        void *arg);

/* Forgets marks older than older_than_ms (keep them longer than any redelivery can take);
 * *deleted (may be NULL) gets the count. */
int ferry_idempotent_purge_sqlite(struct sqlite3 *db, int64_t older_than_ms, int64_t *deleted);
int ferry_idempotent_purge_pg(struct pg_conn *pg, int64_t older_than_ms, int64_t *deleted);

#ifdef __cplusplus
}
#endif
#endif
