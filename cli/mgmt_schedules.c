/* mgmt_schedules.c — `ferry schedules`: the broker-held cron schedules (x-ferry-cron) of a
 * ferryd, read from GET /api/ferry/schedules[/{vhost}] with the management commands' shared
 * flags, URL rules and exit codes (mgmt.h). */
#include <regex.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mgmt.h"

static const char schedules_usage[] =
    "usage: ferry schedules [--vhost V] [--name REGEX] [--json] [--url URL] [--http-port N]\n"
    "\n"
    "Lists the cron schedules ferryd holds (messages published to an x-delayed-message exchange\n"
    "with an x-ferry-cron header): vhost, exchange, name (the message_id), cron expression,\n"
    "time zone, routing key, the next tick and the last tick fired (UTC, and how far away).\n"
    "\n"
    "  --vhost V       only this vhost (default: all)\n"
    "  --name REGEX    only schedules whose name matches (POSIX extended regex)\n"
    "  --json          the API's schedule objects as a JSON list\n"
    "  --url URL       http://user:pass@host:15672 (else FERRY_URL, else http://guest:guest@127.0.0.1:15672);\n"
    "                  an amqp:// URL means the same user and host on port 15672\n"
    "  --http-port N   the management port, overriding the URL's\n"
    "\n"
    "Exit status: 0 ok, 1 the broker refused (bad credentials, unknown vhost, a broker without\n"
    "schedules such as RabbitMQ), 2 bad usage, 3 the broker cannot be reached.\n";

/* "2026-12-03 09:00:00 (in 5m)" for a tick in Unix seconds; "-" for null. */
static void fmt_tick(const json_t *v, time_t now, char *out, size_t n) {
    if (!json_is_integer(v)) {
        snprintf(out, n, "-");
        return;
    }
    time_t t = (time_t)json_integer_value(v);
    struct tm tm;
    char when[32], d[32];
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    if (t >= now)
        snprintf(out, n, "%s (in %s)", when, fmt_dur((double)(t - now), d, sizeof d));
    else
        snprintf(out, n, "%s (%s ago)", when, fmt_dur((double)(now - t), d, sizeof d));
}

int mgmt_schedules_main(int argc, char **argv) {
    mgmt m = {.cmd = "schedules", .usage = schedules_usage};
    const char *name_re = NULL;
    const mopt opts[] = {{"--name", MO_STR, &name_re, 0, 0}, {NULL, 0, NULL, 0, 0}};
    const char *pos[1];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 0, 0, &npos);
    if (rc >= 0)
        return rc;
    regex_t re;
    if (name_re && regcomp(&re, name_re, REG_EXTENDED | REG_NOSUB) != 0) {
        rc = mgmt_usage_error(&m, "--name is not a valid regular expression: '%s'", name_re);
        mgmt_free(&m);
        return rc;
    }
    char path[1024], ev[768];
    if (m.vhost)
        snprintf(path, sizeof path, "/api/ferry/schedules/%s", mgmt_esc(m.vhost, ev, sizeof ev));
    else
        snprintf(path, sizeof path, "/api/ferry/schedules");
    json_t *list = NULL;
    long status = 0;
    rc = mgmt_call(&m, "GET", path, NULL, &list, &status);
    if (rc == MG_OK && !json_is_array(list))
        rc = mgmt_fail(&m, MG_FAILED, "GET %s: the broker's reply is not a JSON list", path);
    if (rc == MG_OK && name_re) { /* keep the matching ones */
        json_t *kept = json_array();
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s) {
            if (regexec(&re, jstr(s, "name", ""), 0, NULL, 0) == 0)
                json_array_append(kept, s);
        }
        json_decref(list);
        list = kept;
    }
    if (rc == MG_OK && m.json) {
        mgmt_print_json(list);
    } else if (rc == MG_OK) {
        static const char *const heads[] = {"vhost", "exchange", "name", "cron", "timezone", "routing key",
                                            "next tick (UTC)", "last fired (UTC)", NULL};
        table *t = table_new(heads, "llllllll");
        time_t now = time(NULL);
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s) {
            char next[96], last[96];
            const char *tz = jstr(s, "timezone", "");
            fmt_tick(json_object_get(s, "next_tick"), now, next, sizeof next);
            fmt_tick(json_object_get(s, "last_fired_tick"), now, last, sizeof last);
            table_row(t);
            table_cell(t, "%s", jstr(s, "vhost", "-"));
            table_cell(t, "%s", jstr(s, "exchange", "-"));
            table_cell(t, "%s", jstr(s, "name", "-"));
            table_cell(t, "%s", jstr(s, "cron", "-"));
            table_cell(t, "%s", *tz ? tz : "UTC");
            table_cell(t, "%s", jstr(s, "routing_key", ""));
            table_cell(t, "%s", next);
            table_cell(t, "%s", last);
        }
        if (table_rows(t))
            table_print(t, stdout, 0);
        else
            fputs("no schedules\n", stdout);
        table_free(t);
    }
    if (name_re)
        regfree(&re);
    json_decref(list);
    mgmt_free(&m);
    return rc;
}
