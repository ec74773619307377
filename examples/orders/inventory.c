/* inventory.c — the inventory subscriber of examples/orders: a libferry worker on the
 * `inventory` queue whose handler is an idempotent consumer (ferry/idempotent.h).
 *
 *   inventory --uri URI --db inventory.db [--stock SKU=N ...]
 *
 * For each order.placed it takes the quantity off the stock and records the reservation — and
 * the mark "inventory processed message M" — in one SQLite transaction. When the same event
 * arrives twice (the relay died between publishing and marking the row sent, or this worker
 * died between its commit and its ack) the second copy finds the mark and changes nothing.
 * An order for more than the stock is dead-lettered (FERRY_FAIL, x-ferry-failure
 * "out of stock"); a database error is retried. SIGTERM / SIGINT: finish, then exit. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include "ferry/ferry.h"
#include "ferry/idempotent.h"
#include "ferry/worker.h"

#define OUT_OF_STOCK 100

typedef struct order {
    long long id;
    const char *sku;
    long long qty;
} order;

static sqlite3 *db;
static ferry_worker *worker;

/* Runs inside the idempotent consumer's transaction: its writes and the mark commit together. */
static int reserve(struct sqlite3 *d, void *arg) {
    order *o = arg;
    sqlite3_stmt *st;
    sqlite3_prepare_v2(d, "UPDATE stock SET qty = qty - ?1 WHERE sku = ?2 AND qty >= ?1", -1, &st, NULL);
    sqlite3_bind_int64(st, 1, o->qty);
    sqlite3_bind_text(st, 2, o->sku, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return FERRY_EDB;
    if (sqlite3_changes(d) == 0)
        return OUT_OF_STOCK;
    sqlite3_prepare_v2(d, "INSERT INTO reservations (order_id, sku, qty) VALUES (?1, ?2, ?3)", -1, &st, NULL);
    sqlite3_bind_int64(st, 1, o->id);
    sqlite3_bind_text(st, 2, o->sku, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, o->qty);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : FERRY_EDB;
}

static long long stock_of(const char *sku) {
    sqlite3_stmt *st;
    long long q = -1;
    sqlite3_prepare_v2(db, "SELECT qty FROM stock WHERE sku = ?1", -1, &st, NULL);
    sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        q = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return q;
}

static int handle(ferry_job *job, void *arg) {
    (void)arg;
    const ferry_message *m = ferry_job_message(job);
    const char *id = ferry_message_property(m, "message_id");
    size_t len;
    const char *body = ferry_message_body(m, &len);
    json_t *j = json_loadb(body, len, 0, NULL);
    order o = {0, NULL, 0};
    if (!j || json_unpack(j, "{s:I, s:s, s:I}", "order_id", &o.id, "sku", &o.sku, "qty", &o.qty) != 0 || !id) {
        json_decref(j);
        ferry_job_set_failure(job, "not an order.placed event");
        return FERRY_FAIL;
    }
    int rc = ferry_idempotent_sqlite(db, "inventory", id, reserve, &o);
    int result = FERRY_OK;
    if (rc == FERRY_OK)
        printf("inventory: order %lld reserved %lld x %s (stock now %lld)\n", o.id, o.qty, o.sku, stock_of(o.sku));
    else if (rc == FERRY_IDEM_DUPLICATE)
        printf("inventory: order %lld: event %s already processed, skipped (stock stays %lld)\n", o.id, id,
               stock_of(o.sku));
    else if (rc == OUT_OF_STOCK) {
        printf("inventory: order %lld: out of stock for %lld x %s, dead-lettered\n", o.id, o.qty, o.sku);
        ferry_job_set_failure(job, "out of stock");
        result = FERRY_FAIL;
    } else {
        printf("inventory: order %lld: %s, will retry\n", o.id, sqlite3_errmsg(db));
        result = FERRY_RETRY;
    }
    fflush(stdout);
    json_decref(j);
    return result;
}

static void on_signal(int sig) {
    (void)sig;
    if (worker)
        ferry_worker_stop(worker);
}

int main(int argc, char **argv) {
    const char *uri = "amqp://guest:guest@127.0.0.1:5672/", *path = "inventory.db";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--uri") && i + 1 < argc)
            uri = argv[++i];
        else if (!strcmp(argv[i], "--db") && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "--stock") != 0 || i + 1 >= argc) {
            fprintf(stderr, "usage: inventory --uri URI --db PATH [--stock SKU=N ...]\n");
            return 2;
        } else
            i++;
    }
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return 1;
    sqlite3_busy_timeout(db, 5000);
    sqlite3_exec(db,
                 "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL);"
                 "CREATE TABLE IF NOT EXISTS reservations (order_id INTEGER, sku TEXT, qty INTEGER);",
                 NULL, NULL, NULL);
    ferry_idempotent_schema_sqlite(db);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--stock")) {
            char sku[128];
            long long n;
            if (sscanf(argv[++i], "%127[^=]=%lld", sku, &n) != 2)
                return 2;
            sqlite3_stmt *st;
            sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO stock (sku, qty) VALUES (?1, ?2)", -1, &st, NULL);
            sqlite3_bind_text(st, 1, sku, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, n);
            sqlite3_step(st);
            sqlite3_finalize(st);
        }

    ferry_worker_opts o;
    ferry_worker_opts_init(&o);
    o.queue = "inventory";
    o.dead_letter_queue = "inventory.dead";
    o.concurrency = 1; /* one SQLite connection, one thread */
    int rc = ferry_worker_new(&worker, uri, NULL, &o, handle, NULL);
    if (rc < 0) {
        fprintf(stderr, "inventory: cannot start the worker: %s\n", ferry_strerror(rc));
        return rc == FERRY_ECONNECT ? 3 : 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("inventory: consuming 'inventory'\n");
    fflush(stdout);
    rc = ferry_worker_run(worker);
    ferry_worker_free(worker);
    sqlite3_close(db);
    return rc < 0 ? 1 : 0;
}
