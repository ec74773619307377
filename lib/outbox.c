/* outbox.c — the parts of the transactional outbox that do not depend on the database: the
 * --db value, event validation shared by both insert functions, event ids, and row memory.
 *
 * The database-specific halves are outbox_sqlite.c and outbox_pg.c; the relay that publishes
 * the rows is outbox_relay.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "outbox_int.h"
#include "outbox_check.h"

int ferry_outbox_db_kind(const char *db, const char **path) {
    if (db == NULL)
        return FERRY_EINVAL;
    if (strncmp(db, "sqlite:", 7) == 0) {
        const char *p = db + 7;
        /* sqlite:///abs/path and sqlite://rel are accepted as well as sqlite:PATH */
        if (strncmp(p, "//", 2) == 0)
            p += 2;
        if (*p == '\0')
            return FERRY_EINVAL;
        if (path)
            *path = p;
        return 1;
    }
    if ((strncmp(db, "postgresql://", 13) == 0 && db[13] != '\0') ||
        (strncmp(db, "postgres://", 11) == 0 && db[11] != '\0'))
        return 2;
    return FERRY_EINVAL;
}

/* AMQP short strings (message_id, exchange, routing key, content type) hold at most 255
 * bytes: an event that cannot become a message is refused when it is written, not when the
 * relay meets it. Returns NULL when the event is fine, else what is wrong. */
const char *outbox_check_event(const ferry_outbox_event *ev) {
    if (ev == NULL)
        return "no event";
    if (ev->event_id && (ev->event_id[0] == '\0' || strlen(ev->event_id) > 255))
        return "event_id must be 1-255 bytes";
    if (ev->aggregate_id == NULL || ev->aggregate_id[0] == '\0')
        return "aggregate_id is required";
    if (ev->exchange && strlen(ev->exchange) > 255)
        return "exchange is longer than 255 bytes";
    if (ev->routing_key && strlen(ev->routing_key) > 255)
        return "routing_key is longer than 255 bytes";
    if (ev->content_type && strlen(ev->content_type) > 255)
        return "content_type is longer than 255 bytes";
    if (ev->body == NULL && ev->body_len > 0)
        return "body is NULL with a non-zero length";
    return outbox_check_headers(ev->headers_json ? ev->headers_json : "{}");
}

/* headers must be a JSON object whose values AMQP can carry (outbox_relay.c converts them). */
const char *outbox_check_headers(const char *json) {
    json_error_t e;
    json_t *j = json_loads(json, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL)
        return "headers is not valid JSON";
    int ok = json_is_object(j);
    json_decref(j);
    return ok ? NULL : "headers must be a JSON object";
}

void outbox_uuid(char out[37]) {
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) { /* no entropy source at all: time and pid still make ids unique enough */
            uint64_t t = (uint64_t)outbox_now_ms() ^ ((uint64_t)getpid() << 32);
            for (size_t i = got; i < sizeof b; i++)
                b[i] = (unsigned char)(t >> ((i % 8) * 8)) ^ (unsigned char)i;
            break;
        }
        got += (size_t)n;
    }
    b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
    b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
}

int64_t outbox_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void outbox_rows_free(outbox_row *rows, size_t n) {
    if (rows == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(rows[i].event_id);
        free(rows[i].aggregate_id);
        free(rows[i].exchange);
        free(rows[i].routing_key);
        free(rows[i].headers);
        free(rows[i].content_type);
        free(rows[i].body);
    }
    free(rows);
}
