/* mgmt_streams.c — `ferry streams`: the stream queues (x-queue-type stream) of a ferryd, read
 * from GET /api/queues[/{vhost}] with the management commands' shared flags, URL rules and
 * exit codes (mgmt.h): each stream's size, segments, first and last offsets, consumers, and
 * each named consumer (x-ferry-offset-name) with its stored offset and lag. */
#include <stdio.h>
#include <string.h>

#include "mgmt.h"

static const char streams_usage[] =
    "usage: ferry streams [--vhost V] [--json] [--url URL] [--http-port N]\n"
    "\n"
    "Lists the streams (queues with x-queue-type stream): vhost, name, size on disk, segment\n"
    "files, first and last offsets, consumers; then every named consumer (x-ferry-offset-name)\n"
    "with the offset the broker keeps for it, its lag (events committed after that offset) and\n"
    "whether a consumer uses the name now.\n"
    "\n"
    "  --vhost V       only this vhost (default: all)\n"
    "  --json          the streams' queue objects (with their \"stream\" field) as a JSON list\n"
    "  --url URL       http://user:pass@host:15672 (else FERRY_URL, else "
    "http://guest:guest@127.0.0.1:15672);\n"
    "                  an amqp:// URL means the same user and host on port 15672\n"
    "  --http-port N   the management port, overriding the URL's\n"
    "\n"
    "Exit status: 0 ok, 1 the broker refused (bad credentials, unknown vhost), 2 bad usage,\n"
    "3 the broker cannot be reached.\n";

static void offset_cell(table *t, const json_t *s, const char *key) {
    const json_t *v = json_object_get(s, key);
    if (json_is_integer(v))
        table_cell(t, "%lld", (long long)json_integer_value(v));
    else
        table_cell(t, "-");
}

int mgmt_streams_main(int argc, char **argv) {
    mgmt m = {.cmd = "streams", .usage = streams_usage};
    const mopt opts[] = {{NULL, 0, NULL, 0, 0}};
    const char *pos[1];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 0, 0, &npos);
    if (rc >= 0)
        return rc;
    char path[1024], ev[768];
    if (m.vhost)
        snprintf(path, sizeof path, "/api/queues/%s", mgmt_esc(m.vhost, ev, sizeof ev));
    else
        snprintf(path, sizeof path, "/api/queues");
    json_t *list = NULL;
    long status = 0;
    rc = mgmt_call(&m, "GET", path, NULL, &list, &status);
    if (rc == MG_OK && !json_is_array(list))
        rc = mgmt_fail(&m, MG_FAILED, "GET %s: the broker's reply is not a JSON list", path);
    json_t *streams = json_array();
    if (rc == MG_OK) {
        size_t i;
        json_t *q;
        json_array_foreach(list, i, q) {
            if (strcmp(jstr(q, "type", ""), "stream") == 0)
                json_array_append(streams, q);
        }
    }
    if (rc == MG_OK && m.json) {
        mgmt_print_json(streams);
    } else if (rc == MG_OK) {
        static const char *const heads[] = {"vhost", "stream", "size",      "segments",
                                            "first", "last",   "consumers", NULL};
        static const char *const nheads[] = {"vhost",  "stream", "named consumer", "offset", "lag",
                                             "in use", NULL};
        table *t = table_new(heads, "llrrrrr"), *n = table_new(nheads, "lllrrl");
        size_t i, k;
        json_t *q, *c;
        json_array_foreach(streams, i, q) {
            const json_t *s = json_object_get(q, "stream");
            char size[32];
            table_row(t);
            table_cell(t, "%s", jstr(q, "vhost", "-"));
            table_cell(t, "%s", jstr(q, "name", "-"));
            table_cell(t, "%s", s ? fmt_bytes(jnum(s, "bytes", 0), size, sizeof size) : "-");
            table_cell(t, "%.0f", s ? jnum(s, "segments", 0) : 0);
            offset_cell(t, s, "first_offset");
            offset_cell(t, s, "last_offset");
            table_cell(t, "%.0f", jnum(q, "consumers", 0));
            json_array_foreach(json_object_get(s, "named_consumers"), k, c) {
                table_row(n);
                table_cell(n, "%s", jstr(q, "vhost", "-"));
                table_cell(n, "%s", jstr(q, "name", "-"));
                table_cell(n, "%s", jstr(c, "name", "-"));
                table_cell(n, "%.0f", jnum(c, "offset", 0));
                table_cell(n, "%.0f", jnum(c, "lag", 0));
                table_cell(n, "%s", jbool(c, "active", 0) ? "yes" : "no");
            }
        }
        if (table_rows(t)) {
            table_print(t, stdout, 0);
            if (table_rows(n)) {
                fputs("\n", stdout);
                table_print(n, stdout, 0);
            }
        } else {
            fputs("no streams\n", stdout);
        }
        table_free(t);
        table_free(n);
    }
    json_decref(streams);
    json_decref(list);
    mgmt_free(&m);
    return rc;
}
