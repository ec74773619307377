/* mgmt.h — the management side of the `ferry` CLI: commands that talk to a broker's HTTP
 * management API (ferryd's, or RabbitMQ's management plugin: the same shapes).
 *
 * Shared by every management command (mgmt_*.c): the option parser with the common flags
 * (--url, --http-port, --vhost, --json), the broker URL rules (--url, else FERRY_URL, an
 * amqp(s):// URL turned into http://user:pass@host:15672), one HTTP call over libcurl that
 * turns transport failures and error replies into the exit codes scripts rely on, readable
 * tables, and the number/duration formats. */
#ifndef FERRY_MGMT_H
#define FERRY_MGMT_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* Exit codes of every management command (README, "The ferry CLI"). */
#define MG_OK 0
#define MG_FAILED 1      /* the broker said no (4xx/5xx), or the operation failed */
#define MG_USAGE 2       /* bad flag or argument: the message names it */
#define MG_UNREACHABLE 3 /* cannot connect to the broker, or it did not answer in time */

/* One command's connection to the API and the common flags. */
typedef struct mgmt {
    const char *cmd;   /* "queues", "dlq peek": for messages */
    const char *usage; /* the command's --help text */
    const char *url;   /* --url, or NULL */
    long http_port;    /* --http-port, or 0 */
    const char *vhost; /* --vhost, or NULL (commands on one queue default to "/") */
    int json;          /* --json */
    long timeout_ms;   /* whole request; default 30 s */
    char base[1024];   /* scheme://host:port, no credentials, no trailing slash */
    char user[256];
    char pass[256];
    void *curl; /* CURL *, reused between calls (keep-alive) */
    int quiet;  /* errors go to last_err instead of stderr (ferry top's full screen) */
    char last_err[512];
} mgmt;

/* A command-specific option. */
enum { MO_FLAG, MO_STR, MO_LONG, MO_DUR_MS, MO_DOUBLE };
typedef struct mopt {
    const char *name; /* "--count" */
    int kind;
    void *dst;        /* int* (MO_FLAG), const char** (MO_STR), long* (MO_LONG, MO_DUR_MS), double* */
    long min, max;    /* MO_LONG / MO_DUR_MS bounds (inclusive) */
} mopt;

/* Parses argv (argv[0] is the command's name) into the common flags, `opts` (terminated by
 * a {NULL} entry) and up to `maxpos` positional arguments. Returns -1 to go on, or an exit
 * code: 0 after printing --help, MG_USAGE after a message naming the bad flag. Then
 * resolves the broker URL (--url / FERRY_URL / default). */
int mgmt_init(mgmt *m, int argc, char **argv, const mopt *opts, const char **pos, int minpos, int maxpos,
              int *npos);
void mgmt_free(mgmt *m);
/* Prints "ferry CMD: MESSAGE (see ferry CMD --help)" and returns MG_USAGE. */
int mgmt_usage_error(const mgmt *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "ferry CMD: MESSAGE" on stderr and returns `code`. */
int mgmt_fail(mgmt *m, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* One request: `path` starts with /api/; `body` (may be NULL) is sent as JSON. On a 2xx
 * reply returns MG_OK with the parsed reply in *out (NULL for an empty body; out may be
 * NULL). Otherwise prints why (the broker's error and reason, or the transport error) and
 * returns MG_FAILED or MG_UNREACHABLE; *status gets the HTTP status (0 without a reply). */
int mgmt_call(mgmt *m, const char *method, const char *path, json_t *body, json_t **out, long *status);
/* The same without printing anything on an error reply (the caller decides): returns MG_OK
 * for any HTTP reply (check *status), MG_UNREACHABLE (printed) when there was none. The
 * broker's error text, if any, goes to err. */
int mgmt_call_quiet(mgmt *m, const char *method, const char *path, const char *body, size_t len,
                    json_t **out, long *status, char *err, size_t errn);

/* Adds Ferry's per-queue fields (oldest_message_age_seconds, dead_lettered, retries,
 * delayed_pending from GET /api/ferry/queues) to the queue objects of GET /api/queues; does
 * nothing on a broker without them (RabbitMQ). */
void mgmt_merge_ferry_queues(mgmt *m, json_t *queues);

/* Percent-encodes one path segment (vhost "/" becomes %2F). Returns out. */
char *mgmt_esc(const char *s, char *out, size_t n);
/* The vhost for commands about one queue: --vhost, else "/". */
const char *mgmt_vhost(const mgmt *m);

/* Prints a JSON value on stdout, indented, with a newline. */
void mgmt_print_json(const json_t *v);

/* JSON helpers: the value at a dotted path ("message_stats.publish_details.rate"), or a
 * fallback when it is missing or of another type. */
const json_t *jpath(const json_t *o, const char *path);
double jnum(const json_t *o, const char *path, double dflt);
const char *jstr(const json_t *o, const char *path, const char *dflt);
int jbool(const json_t *o, const char *path, int dflt);

/* Durations as the CLI writes them: 250ms, 5s, 12m30s, 1h5m, 3d2h. Negative: "-". */
char *fmt_dur(double seconds, char *out, size_t n);
/* Parses 250ms, 5s, 30m, 1h, 2d or a bare number of seconds into milliseconds; -1 if bad. */
long parse_dur_ms(const char *s);
/* 1.5 KiB, 12 MiB... */
char *fmt_bytes(double bytes, char *out, size_t n);
/* A rate per second: "0", "0.4", "12", "1.2k". */
char *fmt_rate(double r, char *out, size_t n);
/* A count: "-" when the field is missing, else the integer. */
char *fmt_count(const json_t *o, const char *path, char *out, size_t n);

/* Readable tables: columns sized to their widest cell, numbers right-aligned. */
typedef struct table table;
/* `align` has one letter per column: 'l' or 'r'. */
table *table_new(const char *const *heads, const char *align);
void table_row(table *t);                                                   /* starts a row */
void table_cell(table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3))); /* adds a cell */
int table_rows(const table *t);
/* Prints the header and at most max_rows rows (0 = all); cells are cut to max_cell chars. */
void table_print(const table *t, FILE *f, int max_rows);
void table_free(table *t);

/* The commands (argv[0] is the command's name). */
int mgmt_queues_main(int argc, char **argv);
int mgmt_exchanges_main(int argc, char **argv);
int mgmt_connections_main(int argc, char **argv);
int mgmt_get_main(int argc, char **argv);
int mgmt_purge_main(int argc, char **argv);
int mgmt_consume_main(int argc, char **argv);
int mgmt_dlq_main(int argc, char **argv);
int mgmt_alerts_main(int argc, char **argv);
int mgmt_top_main(int argc, char **argv);
int mgmt_definitions_main(int argc, char **argv);
int mgmt_schedules_main(int argc, char **argv); /* mgmt_schedules.c (cron) */
int mgmt_streams_main(int argc, char **argv);   /* mgmt_streams.c (streams) */

/* Shared by get, dlq peek and consume: prints one message (the API's get shape) readably. */
void mgmt_print_message(const json_t *msg, int index, FILE *f);

#endif
