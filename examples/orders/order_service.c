/* order_service.c — the order service of examples/orders: it owns orders.db (SQLite) and
 * announces what happens through the transactional outbox, never by publishing directly.
 *
 *   order_service DB init --uri URI        tables, the outbox, the exchange and its bindings
 *   order_service DB place CUSTOMER SKU QTY CARD
 *   order_service DB show                  the orders and their outbox rows
 *   order_service depth --uri URI QUEUE    messages waiting in QUEUE (passive declare)
 *
 * `place` is the point of the example: the order row and its two events (order.placed to the
 * `orders` topic exchange, payment.requested to the `payments` work queue) are written in ONE
 * SQLite transaction. Either all three exist or none does; the relay (`ferry outbox relay`)
 * publishes the events afterwards, so a crash can never leave an order nobody hears about,
 * or an event about an order that was rolled back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <jansson.h>
#include <sqlite3.h>

#include "ferry/outbox.h"

static int die(const char *what, sqlite3 *db) {
    fprintf(stderr, "order_service: %s%s%s\n", what, db ? ": " : "", db ? sqlite3_errmsg(db) : "");
    return 1;
}

/* A channel on the broker for set-up (rabbitmq-c directly: declares are not events). */
static amqp_connection_state_t amqp_open(const char *uri) {
    char *buf = strdup(uri);
    struct amqp_connection_info ci;
    if (amqp_parse_url(buf, &ci) != AMQP_STATUS_OK)
        return NULL;
    if (!ci.vhost[0])
        ci.vhost = "/";
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK ||
        amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password).reply_type !=
            AMQP_RESPONSE_NORMAL) {
        amqp_destroy_connection(c);
        free(buf);
        return NULL;
    }
    free(buf);
    amqp_channel_open(c, 1);
    return amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL ? c : NULL;
}

static int init(sqlite3 *db, const char *uri) {
    if (sqlite3_exec(db,
                     "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT NOT NULL, "
                     "sku TEXT NOT NULL, qty INTEGER NOT NULL, card TEXT NOT NULL, "
                     "placed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
                     NULL, NULL, NULL) != SQLITE_OK)
        return die("create orders", db);
    if (ferry_outbox_schema_sqlite(db) != FERRY_OK)
        return die("create ferry_outbox", db);
    /* The order service owns the `orders` topic exchange and the subscriber queues bound to
     * it (their workers use them as they are). `email` drops a second copy of an event within
     * 10 minutes (x-deduplication-window, ferryd; RabbitMQ ignores the argument), so a relay
     * crash between publish and mark sends no second email. */
    amqp_connection_state_t c = amqp_open(uri);
    if (!c)
        return die("cannot reach the broker", NULL);
    amqp_exchange_declare(c, 1, amqp_cstring_bytes("orders"), amqp_cstring_bytes("topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    const char *subs[] = {"email", "inventory", "analytics"};
    amqp_table_entry_t dedup_e = {amqp_cstring_bytes("x-deduplication-window"),
                                  {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 600000}};
    amqp_table_t dedup = {1, &dedup_e};
    for (int i = 0; i < 3; i++) {
        amqp_queue_declare(c, 1, amqp_cstring_bytes(subs[i]), 0, 1, 0, 0, i == 0 ? dedup : amqp_empty_table);
        amqp_queue_bind(c, 1, amqp_cstring_bytes(subs[i]), amqp_cstring_bytes("orders"),
                        amqp_cstring_bytes("order.placed"), amqp_empty_table);
    }
    int ok = amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL;
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    if (!ok)
        return die("declaring the orders exchange, its queues and bindings failed", NULL);
    printf("orders.db ready; exchange 'orders' bound to email, inventory, analytics\n");
    return 0;
}

static int place(sqlite3 *db, const char *customer, const char *sku, int qty, const char *card) {
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return die("begin", db);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "INSERT INTO orders (customer, sku, qty, card) VALUES (?1, ?2, ?3, ?4)", -1, &st, NULL);
    sqlite3_bind_text(st, 1, customer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sku, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, qty);
    sqlite3_bind_text(st, 4, card, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return die("insert order", db);
    }
    long long id = sqlite3_last_insert_rowid(db);
    char agg[32];
    snprintf(agg, sizeof agg, "order-%lld", id);
    json_t *o = json_pack("{s:I, s:s, s:s, s:i}", "order_id", (json_int_t)id, "customer", customer, "sku", sku, "qty", qty);
    char *placed = json_dumps(o, JSON_COMPACT);
    json_object_set_new(o, "card", json_string(card));
    char *pay = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    /* Both events of the order, in the order's transaction. Their event ids are generated
     * (UUIDs) and become the messages' message_id: what consumers deduplicate on. */
    ferry_outbox_event placed_ev = {.aggregate_id = agg,
                                    .exchange = "orders",
                                    .routing_key = "order.placed",
                                    .headers_json = "{\"type\": \"order.placed\"}",
                                    .content_type = "application/json",
                                    .body = placed,
                                    .body_len = strlen(placed)};
    ferry_outbox_event pay_ev = {.aggregate_id = agg,
                                 .exchange = "",
                                 .routing_key = "payments",
                                 .headers_json = "{\"type\": \"payment.requested\"}",
                                 .content_type = "application/json",
                                 .body = pay,
                                 .body_len = strlen(pay)};
    int e = ferry_outbox_insert_sqlite(db, &placed_ev, NULL);
    if (e == FERRY_OK)
        e = ferry_outbox_insert_sqlite(db, &pay_ev, NULL);
    free(placed);
    free(pay);
    if (e != FERRY_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return die("outbox insert", db);
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return die("commit", db);
    }
    printf("order %lld placed: %s x%d for %s\n", id, sku, qty, customer);
    return 0;
}

static int show(sqlite3 *db) {
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT o.id, o.customer, o.sku, o.qty, "
                           "(SELECT count(*) FROM ferry_outbox WHERE aggregate_id = 'order-' || o.id AND sent_at IS NOT NULL), "
                           "(SELECT count(*) FROM ferry_outbox WHERE aggregate_id = 'order-' || o.id AND sent_at IS NULL) "
                           "FROM orders o ORDER BY o.id", -1, &st, NULL);
    printf("%-6s %-8s %-10s %4s %6s %8s\n", "order", "customer", "sku", "qty", "sent", "pending");
    while (sqlite3_step(st) == SQLITE_ROW)
        printf("%-6lld %-8s %-10s %4d %6d %8d\n", (long long)sqlite3_column_int64(st, 0),
               sqlite3_column_text(st, 1), sqlite3_column_text(st, 2), sqlite3_column_int(st, 3),
               sqlite3_column_int(st, 4), sqlite3_column_int(st, 5));
    sqlite3_finalize(st);
    return 0;
}

static int depth(const char *uri, const char *queue) {
    amqp_connection_state_t c = amqp_open(uri);
    if (!c)
        return die("cannot reach the broker", NULL);
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    if (!ok) {
        fprintf(stderr, "order_service: no queue '%s'\n", queue);
        return 1;
    }
    printf("%u\n", ok->message_count);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 5 && strcmp(argv[1], "depth") == 0 && strcmp(argv[2], "--uri") == 0)
        return depth(argv[3], argv[4]);
    if (argc < 3) {
        fprintf(stderr, "usage: order_service DB init --uri URI | DB place CUSTOMER SKU QTY CARD | DB show | "
                        "depth --uri URI QUEUE\n");
        return 2;
    }
    sqlite3 *db;
    if (sqlite3_open(argv[1], &db) != SQLITE_OK)
        return die("open", db);
    sqlite3_busy_timeout(db, 5000);
    int rc = 2;
    if (strcmp(argv[2], "init") == 0 && argc == 5 && strcmp(argv[3], "--uri") == 0)
        rc = init(db, argv[4]);
    else if (strcmp(argv[2], "place") == 0 && argc == 7)
        rc = place(db, argv[3], argv[4], atoi(argv[5]), argv[6]);
    else if (strcmp(argv[2], "show") == 0)
        rc = show(db);
    else
        fprintf(stderr, "order_service: bad arguments\n");
    sqlite3_close(db);
    return rc;
}
