/* mgmt_alerts.c — `ferry alerts [list|set|delete]`: ferryd's backlog alerts
 * (/api/ferry/alerts): a threshold on a queue metric held for some time, evaluated every
 * second by the broker, optionally POSTed to a webhook.
 *
 * The definition is checked here too (metric and operator names, a number for the
 * threshold), so a typo fails with a message naming the flag before anything is sent. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mgmt.h"

static const char alerts_usage[] =
    "usage: ferry alerts [list] [--firing] [--json] [--url URL]\n"
    "       ferry alerts set NAME --queue REGEX --metric METRIC --op OP --threshold N\n"
    "                             [--for DURATION] [--webhook URL] [--vhost V]\n"
    "       ferry alerts delete NAME\n"
    "\n"
    "list shows every alert with its state (ok / FIRING), the current value and since when.\n"
    "set creates or replaces an alert: it fires when METRIC of a queue whose name matches REGEX\n"
    "has been OP N for DURATION, and resolves when it no longer is.\n"
    "\n"
    "  --firing         list only the alerts that are firing\n"
    "  --queue REGEX    queue names to watch (a regex; '^orders$' for one queue)\n"
    "  --metric M       messages, messages_ready, messages_unacknowledged,\n"
    "                   oldest_message_age_seconds, consumers or dead_letters (dead-lettered\n"
    "                   in the last 60 s)\n"
    "  --op OP          > or <\n"
    "  --threshold N    the number to compare with\n"
    "  --for D          how long the condition must hold (0s, 30s, 5m...; default 0s)\n"
    "  --webhook URL    POST {name, state, value, vhost, queue} here on firing and resolving\n"
    "  --vhost V        the queues' vhost (default /)\n"
    "  --json           list: the API's alert objects; set/delete: the result as JSON\n"
    "  --url URL, --http-port N   as for ferry queues\n"
    "\n"
    "Exit status: 0 ok, 1 the broker refused (bad definition, no such alert, bad credentials,\n"
    "a broker without alerts), 2 bad usage, 3 the broker cannot be reached.\n";

static const char *const metrics[] = {"messages", "messages_ready", "messages_unacknowledged", "oldest_message_age_seconds",
                                      "consumers", "dead_letters", NULL};

/* "5m ago" for an epoch time in seconds (or milliseconds), the text itself for a string. */
static void fmt_since(const json_t *v, char *out, size_t n) {
    if (json_is_number(v)) {
        double t = json_number_value(v);
        if (t <= 0) {
            snprintf(out, n, "-");
            return;
        }
        if (t > 1e11)
            t /= 1000; /* milliseconds */
        char d[32];
        snprintf(out, n, "%s ago", fmt_dur(difftime(time(NULL), (time_t)t), d, sizeof d));
    } else if (json_is_string(v)) {
        snprintf(out, n, "%s", json_string_value(v));
    } else {
        snprintf(out, n, "-");
    }
}

/* A 404 on /api/ferry/ means a broker without Ferry's additions. */
static int no_alerts_api(mgmt *m, long st) {
    if (st == 404)
        return mgmt_fail(m, MG_FAILED, "this broker has no alerts API (/api/ferry/alerts: 404; RabbitMQ has none)");
    return MG_FAILED;
}

static int alerts_list(mgmt *m, int firing_only) {
    json_t *list = NULL;
    long st = 0;
    char err[512];
    int rc = mgmt_call_quiet(m, "GET", "/api/ferry/alerts", NULL, 0, &list, &st, err, sizeof err);
    if (rc != MG_OK)
        return rc;
    if (st == 404) {
        json_decref(list);
        return no_alerts_api(m, st);
    }
    if (st < 200 || st >= 300 || !json_is_array(list)) {
        json_decref(list);
        if (st == 401)
            return mgmt_fail(m, MG_FAILED, "401 %s (check the user and password in --url or FERRY_URL)",
                             err[0] ? err : "not authorised");
        return mgmt_fail(m, MG_FAILED, "GET /api/ferry/alerts: %ld %s", st, err[0] ? err : "not a JSON list");
    }
    if (firing_only) {
        json_t *f = json_array();
        size_t i;
        json_t *a;
        json_array_foreach(list, i, a) {
            if (strcmp(jstr(a, "state", ""), "firing") == 0)
                json_array_append(f, a);
        }
        json_decref(list);
        list = f;
    }
    if (m->json) {
        mgmt_print_json(list);
        json_decref(list);
        return MG_OK;
    }
    static const char *const heads[] = {"name", "state", "value", "rule", "since", "webhook", NULL};
    table *t = table_new(heads, "llrlll");
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) {
        char d[32], since[64], val[32];
        int firing = strcmp(jstr(a, "state", ""), "firing") == 0;
        const json_t *v = json_object_get(a, "value");
        if (json_is_number(v))
            snprintf(val, sizeof val, "%g", json_number_value(v));
        else
            snprintf(val, sizeof val, "-");
        fmt_since(json_object_get(a, "since"), since, sizeof since);
        table_row(t);
        table_cell(t, "%s", jstr(a, "name", "?"));
        table_cell(t, "%s", firing ? "FIRING" : jstr(a, "state", "?"));
        table_cell(t, "%s", val);
        table_cell(t, "%s%s %s %s %g for %s", strcmp(jstr(a, "vhost", "/"), "/") ? jstr(a, "vhost", "") : "",
                   jstr(a, "queue", "?"), jstr(a, "metric", "?"), jstr(a, "op", "?"), jnum(a, "threshold", 0),
                   fmt_dur(jnum(a, "for_seconds", 0), d, sizeof d));
        table_cell(t, "%s", since);
        table_cell(t, "%s", jstr(a, "webhook", "-"));
    }
    if (table_rows(t))
        table_print(t, stdout, 0);
    else
        puts(firing_only ? "no alert is firing" : "no alerts");
    table_free(t);
    json_decref(list);
    return MG_OK;
}

int mgmt_alerts_main(int argc, char **argv) {
    mgmt m = {.cmd = "alerts", .usage = alerts_usage};
    int firing = 0;
    const char *queue = NULL, *metric = NULL, *op = NULL, *webhook = NULL;
    double threshold = NAN;
    long for_ms = 0;
    const mopt opts[] = {{"--firing", MO_FLAG, &firing, 0, 0},
                         {"--queue", MO_STR, &queue, 0, 0},
                         {"--metric", MO_STR, &metric, 0, 0},
                         {"--op", MO_STR, &op, 0, 0},
                         {"--threshold", MO_DOUBLE, &threshold, 0, 0},
                         {"--for", MO_DUR_MS, &for_ms, 0, 1L << 40},
                         {"--webhook", MO_STR, &webhook, 0, 0},
                         {NULL, 0, NULL, 0, 0}};
    const char *pos[2];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 0, 2, &npos);
    if (rc >= 0)
        return rc;
    const char *sub = npos ? pos[0] : "list";
    int is_set = strcmp(sub, "set") == 0, is_delete = strcmp(sub, "delete") == 0;
    if (strcmp(sub, "list") == 0) {
        if (npos > 1)
            rc = mgmt_usage_error(&m, "unexpected argument '%s'", pos[1]);
        else if (queue || metric || op || webhook || !isnan(threshold) || for_ms)
            rc = mgmt_usage_error(&m, "--queue, --metric, --op, --threshold, --for and --webhook are for 'set'");
        else
            rc = alerts_list(&m, firing);
        mgmt_free(&m);
        return rc;
    }
    if (!is_set && !is_delete) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "unknown subcommand '%s' (list, set or delete)", sub);
    }
    if (npos < 2 || !*pos[1]) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "%s needs the alert's NAME", sub);
    }
    char path[1024], en[768];
    snprintf(path, sizeof path, "/api/ferry/alerts/%s", mgmt_esc(pos[1], en, sizeof en));
    json_t *body = NULL;
    if (is_set) {
        const char *missing = !queue ? "--queue" : !metric ? "--metric" : !op ? "--op" : isnan(threshold) ? "--threshold" : NULL;
        int known = 0;
        for (int i = 0; metric && metrics[i]; i++)
            known |= strcmp(metric, metrics[i]) == 0;
        if (missing)
            rc = mgmt_usage_error(&m, "set needs %s", missing);
        else if (!known)
            rc = mgmt_usage_error(&m, "--metric must be messages, messages_ready, messages_unacknowledged, "
                                      "oldest_message_age_seconds, consumers or dead_letters; got '%s'",
                                  metric);
        else if (strcmp(op, ">") != 0 && strcmp(op, "<") != 0)
            rc = mgmt_usage_error(&m, "--op must be '>' or '<', got '%s'", op);
        if (rc >= 0) {
            mgmt_free(&m);
            return rc;
        }
        body = json_pack("{s:s, s:s, s:s, s:s}", "vhost", mgmt_vhost(&m), "queue", queue, "metric", metric, "op", op);
        if (threshold == floor(threshold) && fabs(threshold) < 9e15)
            json_object_set_new(body, "threshold", json_integer((json_int_t)threshold));
        else
            json_object_set_new(body, "threshold", json_real(threshold));
        if (for_ms % 1000 == 0)
            json_object_set_new(body, "for_seconds", json_integer(for_ms / 1000));
        else
            json_object_set_new(body, "for_seconds", json_real((double)for_ms / 1000));
        if (webhook)
            json_object_set_new(body, "webhook", json_string(webhook));
    } else if (queue || metric || op || webhook || !isnan(threshold) || for_ms) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "delete takes only the alert's NAME");
    }
    long st = 0;
    rc = mgmt_call(&m, is_set ? "PUT" : "DELETE", path, body, NULL, &st);
    if (rc == MG_OK && m.json) {
        json_t *o = json_pack("{s:s, s:s}", "name", pos[1], "result", is_set ? "set" : "deleted");
        mgmt_print_json(o);
        json_decref(o);
    } else if (rc == MG_OK) {
        printf("alert '%s' %s\n", pos[1], is_set ? "set" : "deleted");
    } else if (st == 404 && is_set) {
        fprintf(stderr, "ferry alerts: (a 404 here means a broker without Ferry's alerts API, e.g. RabbitMQ)\n");
    }
    json_decref(body);
    mgmt_free(&m);
    return rc;
}
