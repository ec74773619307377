/* mgmt_dlq.c — `ferry dlq list|peek|redrive|purge`: ferryd's dead-letter tools
 * (/api/ferry/dead-letters).
 *
 * list shows the queues that hold dead letters with their counts by reason (rejected,
 * expired, maxlen, delivery_limit); peek shows messages with the x-death record that says
 * why and where each one died; redrive moves all or N of them back to the queue they died in;
 * purge drops them. RabbitMQ has no such API: there these commands exit 1 saying so. */
#include <stdlib.h>
#include <string.h>

#include "mgmt.h"

static const char dlq_usage[] =
    "usage: ferry dlq list [--vhost V] [--json] [--url URL]\n"
    "       ferry dlq peek QUEUE [--count N] [--vhost V] [--json]\n"
    "       ferry dlq redrive QUEUE [--count N] [--vhost V] [--json]\n"
    "       ferry dlq purge QUEUE [--vhost V] [--json]\n"
    "\n"
    "Dead letters: messages rejected, expired, dropped by a length limit or past their delivery\n"
    "limit, and routed to a dead-letter queue.\n"
    "\n"
    "  list             the queues holding dead letters, with counts by reason\n"
    "  peek QUEUE       show dead letters of QUEUE (a dead-letter queue) and why each one died;\n"
    "                   they stay where they are\n"
    "  redrive QUEUE    move dead letters of QUEUE back to the queue each one died in\n"
    "  purge QUEUE      delete the dead letters of QUEUE\n"
    "\n"
    "  --count N        peek: how many (default 10); redrive: at most N (default all)\n"
    "  --vhost V        the vhost (list: default all; others: default /)\n"
    "  --json           the API's reply as JSON\n"
    "  --url URL, --http-port N   as for ferry queues\n"
    "\n"
    "Exit status: 0 ok, 1 the broker refused (no such queue, bad credentials, a broker without\n"
    "dead-letter tools), 2 bad usage, 3 the broker cannot be reached.\n";

/* One request to /api/ferry/...: MG_OK with the reply, or the exit code, printed. */
static int ferry_call(mgmt *m, const char *method, const char *path, json_t *body, json_t **out) {
    long st = 0;
    char err[512];
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int rc = mgmt_call_quiet(m, method, path, text, text ? strlen(text) : 0, out, &st, err, sizeof err);
    free(text);
    if (rc != MG_OK)
        return rc;
    if (st >= 200 && st < 300)
        return MG_OK;
    if (out) {
        json_decref(*out);
        *out = NULL;
    }
    if (st == 401)
        return mgmt_fail(m, MG_FAILED, "401 %s (check the user and password in --url or FERRY_URL)",
                         err[0] ? err : "not authorised");
    /* RabbitMQ answers any /api/ferry path with a 404 "Not Found" page. */
    if (st == 404 && (!err[0] || strstr(err, "Not Found") || strstr(err, "not_found")) &&
        strncmp(path, "/api/ferry/dead-letters/", 24) != 0)
        return mgmt_fail(m, MG_FAILED, "this broker has no dead-letter API (%s: 404; RabbitMQ has none)", path);
    return mgmt_fail(m, MG_FAILED, "%s %s: %ld %s", method, path, st, err[0] ? err : "error");
}

static int dlq_list(mgmt *m) {
    char path[1024], ev[768];
    if (m->vhost)
        snprintf(path, sizeof path, "/api/ferry/dead-letters/%s", mgmt_esc(m->vhost, ev, sizeof ev));
    else
        snprintf(path, sizeof path, "/api/ferry/dead-letters");
    json_t *list = NULL;
    int rc = ferry_call(m, "GET", path, NULL, &list);
    if (rc != MG_OK)
        return rc;
    if (!json_is_array(list)) {
        json_decref(list);
        return mgmt_fail(m, MG_FAILED, "GET %s: the reply is not a JSON list", path);
    }
    if (m->json) {
        mgmt_print_json(list);
        json_decref(list);
        return MG_OK;
    }
    static const char *const heads[] = {"vhost", "queue", "messages", "by reason", NULL};
    table *t = table_new(heads, "llrl");
    size_t i;
    json_t *q;
    json_array_foreach(list, i, q) {
        char n[32], reasons[512] = "";
        size_t len = 0;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)jpath(q, "by_reason"), k, v) {
            if (len < sizeof reasons)
                len += (size_t)snprintf(reasons + len, sizeof reasons - len, "%s%s %.0f", len ? ", " : "", k,
                                        json_number_value(v));
        }
        table_row(t);
        table_cell(t, "%s", jstr(q, "vhost", "-"));
        table_cell(t, "%s", jstr(q, "queue", jstr(q, "name", "-")));
        table_cell(t, "%s", fmt_count(q, "messages", n, sizeof n));
        table_cell(t, "%s", reasons[0] ? reasons : "-");
    }
    if (table_rows(t))
        table_print(t, stdout, 0);
    else
        puts("no dead letters");
    table_free(t);
    json_decref(list);
    return MG_OK;
}

int mgmt_dlq_main(int argc, char **argv) {
    mgmt m = {.cmd = "dlq", .usage = dlq_usage};
    long count = 0;
    const mopt opts[] = {{"--count", MO_LONG, &count, 1, 1L << 40}, {NULL, 0, NULL, 0, 0}};
    const char *pos[2];
    int npos, rc = mgmt_init(&m, argc, argv, opts, pos, 1, 2, &npos);
    if (rc >= 0)
        return rc;
    const char *sub = pos[0];
    if (strcmp(sub, "list") == 0) {
        if (npos > 1)
            rc = mgmt_usage_error(&m, "list takes no QUEUE (use peek QUEUE)");
        else if (count)
            rc = mgmt_usage_error(&m, "--count is for peek and redrive");
        else
            rc = dlq_list(&m);
        mgmt_free(&m);
        return rc;
    }
    int peek = strcmp(sub, "peek") == 0, redrive = strcmp(sub, "redrive") == 0, purge = strcmp(sub, "purge") == 0;
    if (!peek && !redrive && !purge) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "unknown subcommand '%s' (list, peek, redrive or purge)", sub);
    }
    if (npos < 2) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "%s needs a QUEUE", sub);
    }
    if (purge && count) {
        mgmt_free(&m);
        return mgmt_usage_error(&m, "--count is for peek and redrive");
    }
    char path[2048], ev[768], eq[768];
    int n = snprintf(path, sizeof path, "/api/ferry/dead-letters/%s/%s", mgmt_esc(mgmt_vhost(&m), ev, sizeof ev),
                     mgmt_esc(pos[1], eq, sizeof eq));
    json_t *reply = NULL;
    if (peek) {
        snprintf(path + n, sizeof path - (size_t)n, "?count=%ld", count ? count : 10);
        rc = ferry_call(&m, "GET", path, NULL, &reply);
        const json_t *msgs = json_is_object(reply) ? json_object_get(reply, "messages") : reply;
        if (rc == MG_OK && !json_is_array(msgs))
            rc = mgmt_fail(&m, MG_FAILED, "GET %s: the reply has no list of messages", path);
        if (rc == MG_OK && m.json) {
            mgmt_print_json(reply);
        } else if (rc == MG_OK) {
            size_t i;
            json_t *msg;
            json_array_foreach(msgs, i, msg) mgmt_print_message(msg, (int)i + 1, stdout);
            if (!json_array_size(msgs))
                printf("no dead letters in queue '%s'\n", pos[1]);
        }
    } else if (redrive) {
        snprintf(path + n, sizeof path - (size_t)n, "/redrive");
        json_t *body = count ? json_pack("{s:I}", "count", (json_int_t)count) : json_object();
        rc = ferry_call(&m, "POST", path, body, &reply);
        json_decref(body);
        if (rc == MG_OK && m.json)
            mgmt_print_json(reply ? reply : json_object());
        else if (rc == MG_OK)
            printf("redrove %s dead letter(s) from '%s'\n",
                   json_is_number(jpath(reply, "redriven")) ? fmt_count(reply, "redriven", ev, sizeof ev) : "the",
                   pos[1]);
    } else {
        rc = ferry_call(&m, "DELETE", path, NULL, &reply);
        if (rc == MG_OK && m.json) {
            json_t *o = reply ? json_incref(reply)
                              : json_pack("{s:s, s:s, s:b}", "vhost", mgmt_vhost(&m), "queue", pos[1], "purged", 1);
            mgmt_print_json(o);
            json_decref(o);
        } else if (rc == MG_OK) {
            printf("purged the dead letters of '%s'\n", pos[1]);
        }
    }
    json_decref(reply);
    mgmt_free(&m);
    return rc;
}
