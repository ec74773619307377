/* outbox.c — `ferry outbox schema|relay`: the transactional outbox from any language.
 *
 *   ferry outbox schema --db sqlite:PATH | postgresql://…   creates ferry_outbox (and, on
 *       PostgreSQL, its NOTIFY trigger) and ferry_processed, if missing
 *   ferry outbox relay --db … [--uri amqp://…] [--poll D] [--batch N] [--retention D|forever]
 *       [--lease D]   publishes the table's pending rows until SIGTERM / SIGINT
 *
 * The work is libferry's (lib/outbox*.c); this file parses flags, picks the broker URI the way
 * every AMQP command does (cli_amqp_uri: --uri, else FERRY_URL, else amqp://guest:guest@
 * 127.0.0.1:5672/) and maps errors to the shared exit codes: 0 ok, 1 failed, 2 bad usage,
 * 3 cannot reach the broker. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "amqp_url.h"
#include "ferry/ferry.h"
#include "ferry/idempotent.h"
#include "ferry/outbox.h"
#include "outbox_cmd.h"

static const char usage[] =
    "usage: ferry outbox schema --db DB [--json]\n"
    "       ferry outbox relay --db DB [--uri amqp://…] [--poll D] [--batch N] [--retention D|forever] [--lease D]\n"
    "\n"
    "DB is sqlite:PATH or postgresql://user@host:port/dbname.\n"
    "  schema       create the ferry_outbox table (PostgreSQL: and its NOTIFY trigger) and the\n"
    "               idempotent consumer's ferry_processed table, if missing\n"
    "  relay        publish pending rows with publisher confirms (message_id = event_id), in\n"
    "               order per aggregate, mark them sent; runs until SIGTERM or SIGINT\n"
    "  --uri        the broker (default: FERRY_URL, else amqp://guest:guest@127.0.0.1:5672/)\n"
    "  --poll       look for new rows this often (SQLite default 100ms; PostgreSQL default 1s, a\n"
    "               fallback: NOTIFY wakes the relay at once)\n"
    "  --batch      rows per round (default 500)\n"
    "  --retention  delete sent rows older than this (default 7d; 'forever' keeps them)\n"
    "  --lease      SQLite: a standby replica takes over after the active relay was silent\n"
    "               this long (default 5s)\n"
    "durations: 250ms, 5s, 30m, 1h, 7d\n";

static ferry_outbox_relay *volatile running;

static void on_signal(int sig) {
    (void)sig;
    if (running)
        ferry_outbox_relay_stop(running);
}

/* The value after a flag, or an error naming it. */
static const char *need(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "ferry outbox: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

static int bad_db(const char *cmd, const char *db) {
    fprintf(stderr, "ferry outbox %s: --db '%s' is not a database: expected sqlite:PATH or postgresql://user@host:port/db\n",
            cmd, db);
    return 2;
}

static int do_schema(const char *db, int json) {
    const char *path = NULL;
    int kind = ferry_outbox_db_kind(db, &path);
    if (kind < 0)
        return bad_db("schema", db);
    int e;
    char why[512] = "";
    if (kind == 1) {
        sqlite3 *s = NULL;
        if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
            fprintf(stderr, "ferry outbox schema: cannot open SQLite database '%s': %s\n", path,
                    s ? sqlite3_errmsg(s) : "out of memory");
            sqlite3_close(s);
            return 1;
        }
        sqlite3_busy_timeout(s, 5000);
        e = ferry_outbox_schema_sqlite(s);
        if (e == FERRY_OK)
            e = ferry_idempotent_schema_sqlite(s);
        if (e)
            snprintf(why, sizeof why, "%s", sqlite3_errmsg(s));
        sqlite3_close(s);
    } else {
        PGconn *pg = PQconnectdb(db);
        if (PQstatus(pg) != CONNECTION_OK) {
            fprintf(stderr, "ferry outbox schema: cannot connect to PostgreSQL '%s': %s", db, PQerrorMessage(pg));
            PQfinish(pg);
            return 1;
        }
        e = ferry_outbox_schema_pg(pg);
        if (e == FERRY_OK)
            e = ferry_idempotent_schema_pg(pg);
        if (e)
            snprintf(why, sizeof why, "%s", PQerrorMessage(pg));
        PQfinish(pg);
    }
    if (e) {
        size_t l = strlen(why);
        while (l && why[l - 1] == '\n')
            why[--l] = '\0';
        fprintf(stderr, "ferry outbox schema: %s: %s\n", db, why[0] ? why : ferry_strerror(e));
        return 1;
    }
    if (json)
        printf("{\"ok\": true, \"db\": \"%s\", \"tables\": [\"ferry_outbox\", \"ferry_processed\"]%s}\n",
               kind == 1 ? "sqlite" : "postgresql", kind == 2 ? ", \"trigger\": \"ferry_outbox_notify\"" : "");
    else
        printf("ferry_outbox and ferry_processed ready in %s%s\n", kind == 1 ? path : db,
               kind == 2 ? " (NOTIFY trigger ferry_outbox_notify on channel ferry_outbox)" : "");
    return 0;
}

/* A duration flag: --retention also takes "forever" (-1). */
static int duration_flag(const char *flag, const char *v, int64_t *ms, int allow_forever) {
    if (allow_forever && strcmp(v, "forever") == 0) {
        *ms = -1;
        return 0;
    }
    if (ferry_parse_duration(v, ms) != FERRY_OK) {
        fprintf(stderr, "ferry outbox relay: %s '%s' is not a duration (250ms, 5s, 30m, 1h, 7d%s)\n", flag, v,
                allow_forever ? " or forever" : "");
        return 2;
    }
    return 0;
}

/* The URI with the password replaced by ***, for log lines. */
static void masked(const char *uri, char *out, size_t n) {
    const char *p = strstr(uri, "://");
    const char *at = p ? strchr(p + 3, '@') : NULL;
    const char *colon = p ? strchr(p + 3, ':') : NULL;
    if (at && colon && colon < at)
        snprintf(out, n, "%.*s:***%s", (int)(colon - uri), uri, at);
    else
        snprintf(out, n, "%s", uri);
}

static int do_relay(int argc, char **argv) {
    ferry_outbox_relay_options o;
    memset(&o, 0, sizeof o);
    const char *uri_flag = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        int64_t ms;
        if (strcmp(a, "--db") == 0) {
            if (!(v = need(argc, argv, &i)))
                return 2;
            o.db = v;
        } else if (strcmp(a, "--uri") == 0) {
            if (!(uri_flag = need(argc, argv, &i)))
                return 2;
        } else if (strcmp(a, "--poll") == 0 || strcmp(a, "--lease") == 0 || strcmp(a, "--retention") == 0) {
            if (!(v = need(argc, argv, &i)))
                return 2;
            int r = duration_flag(a, v, &ms, strcmp(a, "--retention") == 0);
            if (r)
                return r;
            if (strcmp(a, "--retention") != 0 && (ms <= 0 || ms > 3600000)) {
                fprintf(stderr, "ferry outbox relay: %s '%s' must be between 1ms and 1h\n", a, v);
                return 2;
            }
            if (strcmp(a, "--poll") == 0)
                o.poll_ms = (int)ms;
            else if (strcmp(a, "--lease") == 0)
                o.lease_ms = (int)ms;
            else
                o.retention_ms = ms == 0 ? 1 : ms; /* 0 means "delete once sent" (0 is the default's sign) */
        } else if (strcmp(a, "--batch") == 0) {
            if (!(v = need(argc, argv, &i)))
                return 2;
            char *end;
            long b = strtol(v, &end, 10);
            if (*v == '\0' || *end || b < 1 || b > 100000) {
                fprintf(stderr, "ferry outbox relay: --batch '%s' must be a number from 1 to 100000\n", v);
                return 2;
            }
            o.batch = (int)b;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "ferry outbox relay: unknown flag '%s' (ferry outbox --help)\n", a);
            return 2;
        }
    }
    if (o.db == NULL) {
        fprintf(stderr, "ferry outbox relay: --db is required (sqlite:PATH or postgresql://…)\n");
        return 2;
    }
    if (ferry_outbox_db_kind(o.db, NULL) < 0)
        return bad_db("relay", o.db);
    char uri[1024];
    cli_amqp_uri(uri_flag, uri, sizeof uri);
    o.uri = uri;
    ferry_outbox_relay *r = NULL;
    char err[768];
    int e = ferry_outbox_relay_open(&r, &o, err, sizeof err);
    if (e) {
        fprintf(stderr, "ferry outbox relay: %s\n", err);
        return e == FERRY_EINVAL ? 2 : (e == FERRY_ECONNECT || e == FERRY_EAUTH || e == FERRY_ETIMEDOUT) ? 3 : 1;
    }
    char shown[1100];
    masked(uri, shown, sizeof shown);
    fprintf(stderr, "ferry outbox relay: relaying %s to %s\n", o.db, shown);
    running = r;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    ferry_outbox_relay_run(r);
    running = NULL;
    fprintf(stderr, "ferry outbox relay: stopped (%llu events sent)\n",
            (unsigned long long)ferry_outbox_relay_sent(r));
    ferry_outbox_relay_close(r);
    return 0;
}

int outbox_main(int argc, char **argv) {
    /* argv[0] = "outbox" */
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "relay") == 0)
        return do_relay(argc, argv);
    if (strcmp(argv[1], "schema") == 0) {
        const char *db = NULL;
        int json = 0;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--db") == 0) {
                if (!(db = need(argc, argv, &i)))
                    return 2;
            } else if (strcmp(argv[i], "--json") == 0)
                json = 1;
            else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                fputs(usage, stdout);
                return 0;
            } else {
                fprintf(stderr, "ferry outbox schema: unknown flag '%s' (ferry outbox --help)\n", argv[i]);
                return 2;
            }
        }
        if (db == NULL) {
            fprintf(stderr, "ferry outbox schema: --db is required (sqlite:PATH or postgresql://…)\n");
            return 2;
        }
        return do_schema(db, json);
    }
    fprintf(stderr, "ferry outbox: unknown subcommand '%s' (schema or relay)\n", argv[1]);
    return 2;
}
