/* mgmt_list.c — `ferry queues`, `ferry exchanges`, `ferry connections`: one GET each,
 * printed as a table (or, with --json, the API's objects unchanged, so scripts see exactly
 * the fields RabbitMQ's management API documents).
 *
 * The queue list adds Ferry's backlog fields from GET /api/ferry/queues (the age of the
 * oldest message, dead letters by reason, retries, delayed messages pending) to each queue
 * object; a broker without them (RabbitMQ) shows "-" for the age. */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "mgmt.h"

/* Keeps the elements of `list` whose "name" matches `re` (NULL keeps all). */
static json_t *filter_names(json_t *list, const regex_t *re) {
    if (!re || !json_is_array(list))
        return list;
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        if (regexec(re, jstr(v, "name", ""), 0, NULL, 0) == 0)
            json_array_append(out, v);
    }
    json_decref(list);
    return out;
}

static const char *g_sort; /* qsort has no context argument */
static int g_sort_desc;

static int cmp_field(const void *a, const void *b) {
    const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
    const json_t *vx = jpath(x, g_sort), *vy = jpath(y, g_sort);
    int r;
    if (json_is_number(vx) || json_is_number(vy)) {
        double dx = json_is_number(vx) ? json_number_value(vx) : -1;
        double dy = json_is_number(vy) ? json_number_value(vy) : -1;
        r = dx < dy ? -1 : dx > dy;
    } else {
        r = strcmp(json_is_string(vx) ? json_string_value(vx) : "", json_is_string(vy) ? json_string_value(vy) : "");
    }
    return g_sort_desc ? -r : r;
}

/* Sorts a JSON array in place by a dotted field path; numbers largest first. */
static void sort_list(json_t *list, const char *field) {
    if (!field || !json_is_array(list))
        return;
    size_t n = json_array_size(list);
    json_t **v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(list, i));
    g_sort = field;
    /* Numbers (depths, rates) read best largest first; names alphabetically. */
    g_sort_desc = 0;
    for (size_t i = 0; i < n && !g_sort_desc; i++)
        if (json_is_number(jpath(v[i], field)))
            g_sort_desc = 1;
    qsort(v, n, sizeof *v, cmp_field);
    json_array_clear(list);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, v[i]);
    free(v);
}

/* GET path (…/{vhost} appended when --vhost is set), filtered by --name and sorted. */
static int fetch_list(mgmt *m, const char *what, const char *name_re, const char *sort, json_t **out) {
    char path[1024], ev[768];
    regex_t re;
    if (name_re && regcomp(&re, name_re, REG_EXTENDED | REG_NOSUB) != 0)
        return mgmt_usage_error(m, "--name is not a valid regular expression: '%s'", name_re);
    if (m->vhost)
        snprintf(path, sizeof path, "/api/%s/%s", what, mgmt_esc(m->vhost, ev, sizeof ev));
    else
        snprintf(path, sizeof path, "/api/%s", what);
    json_t *list = NULL;
    int rc = mgmt_call(m, "GET", path, NULL, &list, NULL);
    if (rc == MG_OK && !json_is_array(list)) {
        json_decref(list);
        list = NULL;
        rc = mgmt_fail(m, MG_FAILED, "GET %s: the broker's reply is not a JSON list", path);
    }
    if (rc == MG_OK && strcmp(what, "queues") == 0)
        mgmt_merge_ferry_queues(m, list);
    if (rc == MG_OK) {
        list = filter_names(list, name_re ? &re : NULL);
        sort_list(list, sort);
    }
    if (name_re)
        regfree(&re);
    *out = list;
    return rc;
}

static const char queues_usage[] =
    "usage: ferry queues [--vhost V] [--name REGEX] [--sort FIELD] [--json] [--url URL]\n"
    "\n"
    "Lists queues: depth (ready + unacked), unacked, consumers, the age of the oldest message,\n"
    "and the publish / deliver / ack rates per second over the last 5 s.\n"
    "\n"
    "  --vhost V       only this vhost (default: all)\n"
    "  --name REGEX    only queues whose name matches (POSIX extended regex)\n"
    "  --sort FIELD    sort by an API field, numbers largest first (messages,\n"
    "                  messages_unacknowledged, consumers, oldest_message_age_seconds,\n"
    "                  message_stats.publish_details.rate, name...)\n"
    "  --json          the API's queue objects as a JSON list\n"
    "  --url URL       http://user:pass@host:15672 (else FERRY_URL, else http://guest:guest@127.0.0.1:15672);\n"
    "                  an amqp:// URL means the same user and host on port 15672\n"
    "  --http-port N   the management port, overriding the URL's\n"
    "\n"
    "Exit status: 0 ok, 1 the broker refused (e.g. bad credentials), 2 bad usage,\n"
    "3 the broker cannot be reached.\n";

int mgmt_queues_main(int argc, char **argv) {
    mgmt m = {.cmd = "queues", .usage = queues_usage};
    const char *name_re = NULL, *sort = NULL;
    const mopt opts[] = {{"--name", MO_STR, &name_re, 0, 0}, {"--sort", MO_STR, &sort, 0, 0}, {NULL, 0, NULL, 0, 0}};
    const char *pos[1];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 0, 0, &npos);
    if (rc >= 0)
        return rc;
    json_t *list = NULL;
    rc = fetch_list(&m, "queues", name_re, sort, &list);
    if (rc == MG_OK && m.json) {
        mgmt_print_json(list);
    } else if (rc == MG_OK) {
        static const char *const heads[] = {"vhost", "name",  "type",  "messages", "ready", "unacked", "consumers",
                                            "oldest", "in/s", "out/s", "ack/s",    NULL};
        table *t = table_new(heads, "lllrrrrrrrr");
        size_t i;
        json_t *q;
        json_array_foreach(list, i, q) {
            char a[32], b[32], c[32], d[32], e[32], f[32], g[32], h[32];
            table_row(t);
            table_cell(t, "%s", jstr(q, "vhost", "-"));
            table_cell(t, "%s", jstr(q, "name", "-"));
            table_cell(t, "%s", jstr(q, "type", "classic"));
            table_cell(t, "%s", fmt_count(q, "messages", a, sizeof a));
            table_cell(t, "%s", fmt_count(q, "messages_ready", b, sizeof b));
            table_cell(t, "%s", fmt_count(q, "messages_unacknowledged", c, sizeof c));
            table_cell(t, "%s", fmt_count(q, "consumers", d, sizeof d));
            table_cell(t, "%s", fmt_dur(jnum(q, "oldest_message_age_seconds", -1), e, sizeof e));
            table_cell(t, "%s", fmt_rate(jnum(q, "message_stats.publish_details.rate", 0), f, sizeof f));
            table_cell(t, "%s", fmt_rate(jnum(q, "message_stats.deliver_get_details.rate", 0), g, sizeof g));
            table_cell(t, "%s", fmt_rate(jnum(q, "message_stats.ack_details.rate", 0), h, sizeof h));
        }
        if (table_rows(t))
            table_print(t, stdout, 0);
        else
            fputs("no queues\n", stdout);
        table_free(t);
    }
    json_decref(list);
    mgmt_free(&m);
    return rc;
}

static const char exchanges_usage[] =
    "usage: ferry exchanges [--vhost V] [--name REGEX] [--sort FIELD] [--json] [--url URL]\n"
    "\n"
    "Lists exchanges: type, flags (D durable, AD auto-delete, I internal), and the rates of\n"
    "messages in (published to it) and out (routed on) per second.\n"
    "\n"
    "  --vhost V       only this vhost (default: all)\n"
    "  --name REGEX    only exchanges whose name matches (POSIX extended regex)\n"
    "  --sort FIELD    sort by an API field (name, type, message_stats.publish_in_details.rate...)\n"
    "  --json          the API's exchange objects as a JSON list\n"
    "  --url URL, --http-port N   as for ferry queues\n"
    "\n"
    "Exit status: 0 ok, 1 the broker refused, 2 bad usage, 3 the broker cannot be reached.\n";

int mgmt_exchanges_main(int argc, char **argv) {
    mgmt m = {.cmd = "exchanges", .usage = exchanges_usage};
    const char *name_re = NULL, *sort = NULL;
    const mopt opts[] = {{"--name", MO_STR, &name_re, 0, 0}, {"--sort", MO_STR, &sort, 0, 0}, {NULL, 0, NULL, 0, 0}};
    const char *pos[1];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 0, 0, &npos);
    if (rc >= 0)
        return rc;
    json_t *list = NULL;
    rc = fetch_list(&m, "exchanges", name_re, sort, &list);
    if (rc == MG_OK && m.json) {
        mgmt_print_json(list);
    } else if (rc == MG_OK) {
        static const char *const heads[] = {"vhost", "name", "type", "flags", "in/s", "out/s", NULL};
        table *t = table_new(heads, "llllrr");
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x) {
            char a[32], b[32], flags[16] = "";
            const char *name = jstr(x, "name", "-");
            if (jbool(x, "durable", 0))
                strcat(flags, "D ");
            if (jbool(x, "auto_delete", 0))
                strcat(flags, "AD ");
            if (jbool(x, "internal", 0))
                strcat(flags, "I ");
            size_t fl = strlen(flags);
            if (fl)
                flags[fl - 1] = 0;
            table_row(t);
            table_cell(t, "%s", jstr(x, "vhost", "-"));
            table_cell(t, "%s", *name ? name : "(AMQP default)");
            table_cell(t, "%s", jstr(x, "type", "-"));
            table_cell(t, "%s", flags);
            table_cell(t, "%s", fmt_rate(jnum(x, "message_stats.publish_in_details.rate", 0), a, sizeof a));
            table_cell(t, "%s", fmt_rate(jnum(x, "message_stats.publish_out_details.rate", 0), b, sizeof b));
        }
        if (table_rows(t))
            table_print(t, stdout, 0);
        else
            fputs("no exchanges\n", stdout);
        table_free(t);
    }
    json_decref(list);
    mgmt_free(&m);
    return rc;
}

static const char connections_usage[] =
    "usage: ferry connections [--vhost V] [--name REGEX] [--sort FIELD] [--json] [--url URL]\n"
    "\n"
    "Lists client connections: user, vhost, client address, client library, channels, state,\n"
    "and bytes received / sent per second.\n"
    "\n"
    "  --vhost V       only this vhost (default: all)\n"
    "  --name REGEX    only connections whose name matches (\"127.0.0.1:50000 -> 127.0.0.1:5672\")\n"
    "  --sort FIELD    sort by an API field (channels, recv_oct_details.rate, user...)\n"
    "  --json          the API's connection objects as a JSON list\n"
    "  --url URL, --http-port N   as for ferry queues\n"
    "\n"
    "Exit status: 0 ok, 1 the broker refused, 2 bad usage, 3 the broker cannot be reached.\n";

int mgmt_connections_main(int argc, char **argv) {
    mgmt m = {.cmd = "connections", .usage = connections_usage};
    const char *name_re = NULL, *sort = NULL;
    const mopt opts[] = {{"--name", MO_STR, &name_re, 0, 0}, {"--sort", MO_STR, &sort, 0, 0}, {NULL, 0, NULL, 0, 0}};
    const char *pos[1];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 0, 0, &npos);
    if (rc >= 0)
        return rc;
    json_t *list = NULL;
    rc = fetch_list(&m, "connections", name_re, sort, &list);
    if (rc == MG_OK && m.json) {
        mgmt_print_json(list);
    } else if (rc == MG_OK) {
        static const char *const heads[] = {"user",     "vhost", "peer",   "client", "channels",
                                            "state", "recv B/s", "send B/s", NULL};
        table *t = table_new(heads, "llllrlrr");
        size_t i;
        json_t *c;
        json_array_foreach(list, i, c) {
            char a[32], b[32], ch[32];
            const char *product = jstr(c, "client_properties.product", NULL);
            const char *version = jstr(c, "client_properties.version", NULL);
            table_row(t);
            table_cell(t, "%s", jstr(c, "user", "-"));
            table_cell(t, "%s", jstr(c, "vhost", "-"));
            table_cell(t, "%s:%.0f", jstr(c, "peer_host", "?"), jnum(c, "peer_port", 0));
            if (product)
                table_cell(t, "%s%s%s", product, version ? " " : "", version ? version : "");
            else
                table_cell(t, "-");
            table_cell(t, "%s", fmt_count(c, "channels", ch, sizeof ch));
            table_cell(t, "%s", jstr(c, "state", "-"));
            table_cell(t, "%s", fmt_rate(jnum(c, "recv_oct_details.rate", 0), a, sizeof a));
            table_cell(t, "%s", fmt_rate(jnum(c, "send_oct_details.rate", 0), b, sizeof b));
        }
        if (table_rows(t))
            table_print(t, stdout, 0);
        else
            fputs("no connections\n", stdout);
        table_free(t);
    }
    json_decref(list);
    mgmt_free(&m);
    return rc;
}
