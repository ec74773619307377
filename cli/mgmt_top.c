/* mgmt_top.c — `ferry top`: a live view of the broker, refreshed in place like top(1).
 *
 * Every interval it asks the API for the overview (rates, totals), the node (memory, disk,
 * alarms), the queues and Ferry's alerts, and draws one screen: the busiest queues first.
 * On a terminal it takes the alternate screen and reads keys without Enter (q quits,
 * s changes the sort); Ctrl-C, SIGTERM and q all restore the terminal before exiting.
 * When stdout is not a terminal (a pipe, a file, a test) it prints one plain snapshot per
 * interval instead, like `top -b`; --count N stops after N snapshots. --json prints each
 * snapshot as one JSON line. A broker that stops answering is shown on screen and retried;
 * only when the very first refresh fails does top exit (3, or 1 when the broker refuses). */
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "mgmt.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static const char *const sort_fields[] = {"messages", "messages_unacknowledged", "consumers",
                                          "oldest_message_age_seconds", "message_stats.publish_details.rate",
                                          "name"};
static const char *const sort_names[] = {"messages", "unacked", "consumers", "oldest", "in/s", "name"};
#define NSORT 6

/* One refresh worth of API replies. */
typedef struct snap {
    json_t *overview, *nodes, *queues, *alerts;
    int alerts_missing; /* the broker has no /api/ferry/alerts (RabbitMQ) */
} snap;

static void snap_free(snap *s) {
    json_decref(s->overview);
    json_decref(s->nodes);
    json_decref(s->queues);
    json_decref(s->alerts);
    memset(s, 0, sizeof *s);
}

/* Fetches everything; MG_OK, or the exit code with m->last_err saying why. */
static int fetch(mgmt *m, snap *s) {
    long st;
    char err[256];
    memset(s, 0, sizeof *s);
    const char *paths[] = {"/api/overview", "/api/nodes", "/api/queues"};
    json_t **dst[] = {&s->overview, &s->nodes, &s->queues};
    for (int i = 0; i < 3; i++) {
        int rc = mgmt_call_quiet(m, "GET", paths[i], NULL, 0, dst[i], &st, err, sizeof err);
        if (rc != MG_OK)
            return rc;
        if (st < 200 || st >= 300) {
            snprintf(m->last_err, sizeof m->last_err, "GET %s: %ld %s", paths[i], st, err[0] ? err : "error");
            return MG_FAILED;
        }
    }
    if (!json_is_array(s->queues)) {
        snprintf(m->last_err, sizeof m->last_err, "GET /api/queues: the reply is not a JSON list");
        return MG_FAILED;
    }
    mgmt_merge_ferry_queues(m, s->queues);
    int rc = mgmt_call_quiet(m, "GET", "/api/ferry/alerts", NULL, 0, &s->alerts, &st, err, sizeof err);
    if (rc != MG_OK)
        return rc;
    if (st < 200 || st >= 300 || !json_is_array(s->alerts)) {
        json_decref(s->alerts);
        s->alerts = NULL;
        s->alerts_missing = 1;
    }
    return MG_OK;
}

static const char *g_field;
static int cmp_queue(const void *a, const void *b) {
    const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
    if (strcmp(g_field, "name") == 0)
        return strcmp(jstr(x, "name", ""), jstr(y, "name", ""));
    double dx = jnum(x, g_field, -1), dy = jnum(y, g_field, -1);
    if (dx != dy)
        return dx < dy ? 1 : -1;
    return strcmp(jstr(x, "name", ""), jstr(y, "name", ""));
}

/* Draws one snapshot into f; at most max_rows queue rows (0 = all). */
static void draw(mgmt *m, const snap *s, int sort, int max_rows, int tty, FILE *f) {
    char t1[32], t2[32], t3[32], t4[32], clock[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(clock, sizeof clock, "%Y-%m-%d %H:%M:%S UTC", &tm);
    const json_t *o = s->overview;
    const json_t *node = json_is_array(s->nodes) ? json_array_get(s->nodes, 0) : NULL;
    fprintf(f, "ferry top  %s  %s  sort: %s%s\n", m->base, clock, sort_names[sort],
            tty ? "  (q quits, s sorts)" : "");
    fprintf(f, "node %s  %s %s", jstr(o, "node", jstr(node, "name", "?")), jstr(o, "product_name", "broker"),
            jstr(o, "product_version", jstr(o, "rabbitmq_version", "")));
    if (node) {
        fprintf(f, "  memory %s", fmt_bytes(jnum(node, "mem_used", -1), t1, sizeof t1));
        fprintf(f, " of %s", fmt_bytes(jnum(node, "mem_limit", -1), t2, sizeof t2));
        fprintf(f, "  disk free %s", fmt_bytes(jnum(node, "disk_free", -1), t3, sizeof t3));
        int mem_alarm = jbool(node, "mem_alarm", 0), disk_alarm = jbool(node, "disk_free_alarm", 0);
        fprintf(f, "  alarms: %s", mem_alarm && disk_alarm ? "MEMORY, DISK"
                                   : mem_alarm             ? "MEMORY"
                                   : disk_alarm            ? "DISK"
                                                           : "none");
    }
    fputc('\n', f);
    fprintf(f, "messages %s (ready %s, unacked %s)", fmt_count(o, "queue_totals.messages", t1, sizeof t1),
            fmt_count(o, "queue_totals.messages_ready", t2, sizeof t2),
            fmt_count(o, "queue_totals.messages_unacknowledged", t3, sizeof t3));
    fprintf(f, "  publish %s/s", fmt_rate(jnum(o, "message_stats.publish_details.rate", 0), t1, sizeof t1));
    fprintf(f, "  deliver %s/s", fmt_rate(jnum(o, "message_stats.deliver_get_details.rate", 0), t2, sizeof t2));
    fprintf(f, "  ack %s/s\n", fmt_rate(jnum(o, "message_stats.ack_details.rate", 0), t3, sizeof t3));
    fprintf(f, "connections %s  channels %s  queues %s  consumers %s",
            fmt_count(o, "object_totals.connections", t1, sizeof t1),
            fmt_count(o, "object_totals.channels", t2, sizeof t2), fmt_count(o, "object_totals.queues", t3, sizeof t3),
            fmt_count(o, "object_totals.consumers", t4, sizeof t4));
    int firing = 0;
    size_t i;
    json_t *a;
    if (s->alerts) {
        json_array_foreach(s->alerts, i, a) firing += strcmp(jstr(a, "state", ""), "firing") == 0;
        fprintf(f, "  alerts: %d firing of %zu\n", firing, json_array_size(s->alerts));
    } else {
        fputs("  alerts: n/a\n", f);
    }
    if (firing) {
        json_array_foreach(s->alerts, i, a) {
            if (strcmp(jstr(a, "state", ""), "firing") != 0)
                continue;
            fprintf(f, "FIRING %s: %s %s %s %g (now %g)\n", jstr(a, "name", "?"), jstr(a, "queue", "?"),
                    jstr(a, "metric", "?"), jstr(a, "op", "?"), jnum(a, "threshold", 0), jnum(a, "value", 0));
        }
    }
    fputc('\n', f);

    size_t n = json_array_size(s->queues);
    json_t **qs = malloc((n ? n : 1) * sizeof *qs);
    if (!qs)
        return;
    for (i = 0; i < n; i++)
        qs[i] = json_array_get(s->queues, i);
    g_field = sort_fields[sort];
    qsort(qs, n, sizeof *qs, cmp_queue);
    static const char *const heads[] = {"vhost",  "name", "messages", "ready", "unacked", "consumers",
                                        "oldest", "in/s", "out/s",    "ack/s", NULL};
    table *t = table_new(heads, "llrrrrrrrr");
    for (i = 0; i < n; i++) {
        const json_t *q = qs[i];
        char a1[32], b[32], c[32], d[32], e[32], g[32], h[32], k[32];
        table_row(t);
        table_cell(t, "%s", jstr(q, "vhost", "-"));
        table_cell(t, "%s", jstr(q, "name", "-"));
        table_cell(t, "%s", fmt_count(q, "messages", a1, sizeof a1));
        table_cell(t, "%s", fmt_count(q, "messages_ready", b, sizeof b));
        table_cell(t, "%s", fmt_count(q, "messages_unacknowledged", c, sizeof c));
        table_cell(t, "%s", fmt_count(q, "consumers", d, sizeof d));
        table_cell(t, "%s", fmt_dur(jnum(q, "oldest_message_age_seconds", -1), e, sizeof e));
        table_cell(t, "%s", fmt_rate(jnum(q, "message_stats.publish_details.rate", 0), g, sizeof g));
        table_cell(t, "%s", fmt_rate(jnum(q, "message_stats.deliver_get_details.rate", 0), h, sizeof h));
        table_cell(t, "%s", fmt_rate(jnum(q, "message_stats.ack_details.rate", 0), k, sizeof k));
    }
    if (n)
        table_print(t, f, max_rows);
    else
        fputs("no queues\n", f);
    if (max_rows > 0 && (int)n > max_rows)
        fprintf(f, "... %zu more queues\n", n - (size_t)max_rows);
    table_free(t);
    free(qs);
}

static const char top_usage[] =
    "usage: ferry top [--interval DURATION] [--count N] [--sort FIELD] [--json] [--url URL]\n"
    "\n"
    "A live view of the broker: message rates, totals, memory, disk, alarms, firing alerts and\n"
    "the queues with the largest backlog. On a terminal it redraws in place (q or Ctrl-C quits,\n"
    "s changes the sort); otherwise it prints one snapshot per interval.\n"
    "\n"
    "  --interval D     time between refreshes (default 2s; from 100ms)\n"
    "  --count N        stop after N refreshes (default: until q / Ctrl-C)\n"
    "  --sort FIELD     messages (default), unacked, consumers, oldest, in/s, name\n"
    "  --json           one JSON object per refresh and line: overview, nodes, queues, alerts\n"
    "  --url URL, --http-port N   as for ferry queues\n"
    "\n"
    "Exit status: 0 ok, 1 the broker refused the first refresh (e.g. bad credentials), 2 bad\n"
    "usage, 3 the broker cannot be reached at the first refresh (later failures are shown and\n"
    "retried).\n";

int mgmt_top_main(int argc, char **argv) {
    mgmt m = {.cmd = "top", .usage = top_usage};
    long interval = 2000, count = 0;
    const char *sort_name = "messages";
    const mopt opts[] = {{"--interval", MO_DUR_MS, &interval, 100, 86400000},
                         {"--count", MO_LONG, &count, 1, 1L << 40},
                         {"--sort", MO_STR, &sort_name, 0, 0},
                         {NULL, 0, NULL, 0, 0}};
    const char *pos[1];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 0, 0, &npos);
    if (rc >= 0)
        return rc;
    int sort = -1;
    for (int i = 0; i < NSORT; i++)
        if (strcmp(sort_name, sort_names[i]) == 0 || strcmp(sort_name, sort_fields[i]) == 0)
            sort = i;
    if (sort < 0) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "--sort must be one of messages, unacked, consumers, oldest, in/s, name; got '%s'",
                                sort_name);
    }
    m.timeout_ms = interval * 3 < 10000 ? 10000 : interval * 3;
    m.quiet = 1;
    int tty = isatty(STDOUT_FILENO) && !m.json;
    int keys = tty && isatty(STDIN_FILENO);
    struct termios saved;
    if (keys && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios raw = saved;
        raw.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    } else {
        keys = 0;
    }
    int raw_set = keys;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (tty)
        fputs("\x1b[?1049h\x1b[?25l", stdout); /* alternate screen, hide the cursor */

    int ok_once = 0;
    rc = MG_OK;
    for (long n = 0; !g_stop && (!count || n < count); n++) {
        snap s;
        int frc = fetch(&m, &s);
        if (frc != MG_OK && !ok_once) {
            snap_free(&s);
            rc = frc;
            break;
        }
        if (frc == MG_OK)
            ok_once = 1;
        if (m.json) {
            json_t *o = json_object();
            json_object_set_new(o, "time", json_integer((json_int_t)time(NULL)));
            if (frc == MG_OK) {
                json_object_set(o, "overview", s.overview);
                json_object_set(o, "nodes", s.nodes);
                json_object_set(o, "queues", s.queues);
                json_object_set(o, "alerts", s.alerts ? s.alerts : json_null());
            } else {
                json_object_set_new(o, "error", json_string(m.last_err));
            }
            char *line = json_dumps(o, JSON_COMPACT);
            if (line)
                puts(line);
            free(line);
            json_decref(o);
        } else {
            struct winsize ws = {0};
            int rows = 0;
            if (tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0)
                rows = ws.ws_row > 10 ? ws.ws_row - 9 : 1; /* the header takes ~8 lines */
            if (tty)
                fputs("\x1b[H\x1b[2J", stdout);
            else if (n)
                fputc('\n', stdout);
            if (frc == MG_OK)
                draw(&m, &s, sort, rows, tty, stdout);
            else
                fprintf(tty ? stdout : stderr, "ferry top: %s (retrying every %ld ms)\n", m.last_err, interval);
        }
        snap_free(&s);
        if (fflush(stdout) != 0 || ferror(stdout))
            break; /* the reader went away (a closed pipe) */
        if (count && n + 1 >= count)
            break;
        /* Wait for the next refresh, or a key. */
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long left = interval - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
            if (left <= 0 || g_stop)
                break;
            struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
            int pr = poll(&p, keys ? 1 : 0, (int)left);
            if (pr > 0 && (p.revents & POLLIN)) {
                char c;
                if (read(STDIN_FILENO, &c, 1) == 1) {
                    if (c == 'q' || c == 'Q' || c == 3)
                        g_stop = 1;
                    else if (c == 's' || c == 'S') {
                        sort = (sort + 1) % NSORT;
                        break; /* redraw now */
                    }
                }
            } else if (pr > 0) {
                keys = 0; /* stdin closed: no more keys */
            }
        }
    }
    if (tty)
        fputs("\x1b[?25h\x1b[?1049l", stdout); /* restore the screen and the cursor */
    fflush(stdout);
    if (raw_set)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (rc != MG_OK)
        fprintf(stderr, "ferry top: %s\n", m.last_err);
    mgmt_free(&m);
    return rc;
}
