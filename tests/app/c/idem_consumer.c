/* idem_consumer.c — a test consumer built on libferry's idempotent consumer (ferry/idempotent.h).
 *
 *   idem_consumer --uri amqp://… --queue Q --db sqlite:PATH|postgresql://… [--consumer NAME]
 *                 [--idle-ms 2000] [--max N] [--fail-first] [--die-after-commit]
 *
 * For every delivery it runs ferry_idempotent_*() with a handler that inserts
 * (message_id, body) into the table `effects` through the same connection, then acks. It
 * prints one line per delivery: "processed ID", "duplicate ID" or "failed ID", and exits 0
 * after --idle-ms without a delivery or after --max deliveries.
 *   --fail-first        the handler fails (rolls back) the first time it sees each message id:
 *                       the message is rejected with requeue and must be processed on redelivery
 *   --die-after-commit  SIGKILL itself after the first commit, before the ack: the broker
 *                       redelivers, and the mark must make the redelivery a duplicate
 * Test-only program (tests/app); the idempotent consumer itself is lib/idempotent.c. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "ferry/idempotent.h"
#include "ferry/outbox.h"

typedef struct job {
    const char *id;
    const void *body;
    size_t len;
} job;

static int fail_first;
static char **failed_once;
static size_t nfailed;

static int seen_failure(const char *id) {
    for (size_t i = 0; i < nfailed; i++)
        if (strcmp(failed_once[i], id) == 0)
            return 1;
    failed_once = realloc(failed_once, (nfailed + 1) * sizeof *failed_once);
    failed_once[nfailed++] = strdup(id);
    return 0;
}

static int handle_sqlite(struct sqlite3 *db, void *arg) {
    job *j = arg;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "INSERT INTO effects (message_id, body) VALUES (?1, ?2)", -1, &st, NULL) != SQLITE_OK)
        return 10;
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, j->body, (int)j->len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return 11;
    if (fail_first && !seen_failure(j->id))
        return 12; /* after the write: the rollback must undo it */
    return 0;
}

static int handle_pg(struct pg_conn *pg, void *arg) {
    job *j = arg;
    const char *v[2] = {j->id, (const char *)j->body};
    int lens[2] = {0, (int)j->len}, fmts[2] = {0, 1};
    PGresult *res = PQexecParams(pg, "INSERT INTO effects (message_id, body) VALUES ($1, $2)", 2, NULL, v, lens, fmts, 0);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok)
        return 11;
    if (fail_first && !seen_failure(j->id))
        return 12;
    return 0;
}

int main(int argc, char **argv) {
    const char *uri = "amqp://guest:guest@127.0.0.1:5672/", *queue = NULL, *db = NULL, *consumer = "test";
    int idle_ms = 2000, max = 0, die_after_commit = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--uri") && i + 1 < argc)
            uri = argv[++i];
        else if (!strcmp(argv[i], "--queue") && i + 1 < argc)
            queue = argv[++i];
        else if (!strcmp(argv[i], "--db") && i + 1 < argc)
            db = argv[++i];
        else if (!strcmp(argv[i], "--consumer") && i + 1 < argc)
            consumer = argv[++i];
        else if (!strcmp(argv[i], "--idle-ms") && i + 1 < argc)
            idle_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max") && i + 1 < argc)
            max = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fail-first"))
            fail_first = 1;
        else if (!strcmp(argv[i], "--die-after-commit"))
            die_after_commit = 1;
        else {
            fprintf(stderr, "idem_consumer: bad argument %s\n", argv[i]);
            return 2;
        }
    }
    const char *path = NULL;
    int kind = ferry_outbox_db_kind(db, &path);
    if (!queue || kind < 0) {
        fprintf(stderr, "idem_consumer: --queue and --db sqlite:PATH|postgresql://… are required\n");
        return 2;
    }
    sqlite3 *sq = NULL;
    PGconn *pg = NULL;
    if (kind == 1) {
        if (sqlite3_open(path, &sq) != SQLITE_OK)
            return 1;
        sqlite3_busy_timeout(sq, 5000);
        if (ferry_idempotent_schema_sqlite(sq) ||
            sqlite3_exec(sq, "CREATE TABLE IF NOT EXISTS effects (message_id TEXT, body BLOB)", 0, 0, 0) != SQLITE_OK)
            return 1;
    } else {
        pg = PQconnectdb(db);
        if (PQstatus(pg) != CONNECTION_OK || ferry_idempotent_schema_pg(pg))
            return 1;
        PGresult *res = PQexec(pg, "CREATE TABLE IF NOT EXISTS effects (message_id text, body bytea)");
        PQclear(res);
    }

    char *ubuf = strdup(uri);
    struct amqp_connection_info ci;
    if (amqp_parse_url(ubuf, &ci) != AMQP_STATUS_OK)
        return 2;
    if (!ci.vhost[0])
        ci.vhost = "/";
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK)
        return 3;
    if (amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password).reply_type !=
        AMQP_RESPONSE_NORMAL)
        return 3;
    amqp_channel_open(c, 1);
    amqp_basic_qos(c, 1, 0, 1, 0);
    amqp_basic_consume(c, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "idem_consumer: cannot consume from %s\n", queue);
        return 1;
    }
    int n = 0;
    for (;;) {
        amqp_envelope_t env;
        amqp_maybe_release_buffers(c);
        struct timeval tv = {idle_ms / 1000, (idle_ms % 1000) * 1000};
        amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            break; /* idle timeout (or the connection went away) */
        char id[300] = "";
        if (env.message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
            snprintf(id, sizeof id, "%.*s", (int)env.message.properties.message_id.len,
                     (char *)env.message.properties.message_id.bytes);
        job j = {id, env.message.body.bytes, env.message.body.len};
        int rc = kind == 1 ? ferry_idempotent_sqlite(sq, consumer, id, handle_sqlite, &j)
                           : ferry_idempotent_pg(pg, consumer, id, handle_pg, &j);
        if (rc == FERRY_OK || rc == FERRY_IDEM_DUPLICATE) {
            printf("%s %s\n", rc == FERRY_OK ? "processed" : "duplicate", id);
            fflush(stdout);
            if (rc == FERRY_OK && die_after_commit)
                raise(SIGKILL);
            amqp_basic_ack(c, 1, env.delivery_tag, 0);
        } else {
            printf("failed %s %d\n", id, rc);
            fflush(stdout);
            amqp_basic_reject(c, 1, env.delivery_tag, 1);
        }
        amqp_destroy_envelope(&env);
        if (max && ++n >= max)
            break;
    }
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    free(ubuf);
    for (size_t i = 0; i < nfailed; i++)
        free(failed_once[i]);
    free(failed_once);
    if (sq)
        sqlite3_close(sq);
    if (pg)
        PQfinish(pg);
    return 0;
}
