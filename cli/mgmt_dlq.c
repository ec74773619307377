/* mgmt_dlq.c — `ferry dlq list|peek|redrive|purge`: ferryd's dead-letter tools
 * (/api/ferry/dead-letters).
 *
 * list shows the dead-letter queues (where queues' dead-letter exchanges route) with their
 * depth and the counts by reason (rejected, expired, maxlen, delivery_limit) of the queues
 * feeding them; peek shows messages with the x-death record that says
 * why and where each one died; redrive moves all or N of them back to the queue they died in;
 * purge drops them. RabbitMQ has no dead-letter API: there list still works (from the
 * topology, without counts) and the others exit 1 saying so. */
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
    "  list             the dead-letter queues (where queues' dead-letter exchanges route), their\n"
    "                   depth, the queues feeding them and what those dead-lettered, by reason\n"
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
    /* RabbitMQ answers any /api/ferry path with a 404 too. */
    if (st == 404)
        return mgmt_fail(m, MG_FAILED, "%s %s: 404 %s (no such queue or vhost; or a broker without Ferry's "
                                       "dead-letter API: RabbitMQ has none)",
                         method, path, err[0] ? err : "not found");
    return mgmt_fail(m, MG_FAILED, "%s %s: %ld %s", method, path, st, err[0] ? err : "error");
}

/* The dead-letter exchange and routing key of a queue: its x-arguments, else its policy. */
static const char *dlx_of(const json_t *q, const char **rk) {
    const char *x = jstr(q, "arguments.x-dead-letter-exchange", NULL);
    *rk = jstr(q, "arguments.x-dead-letter-routing-key", NULL);
    if (!x) {
        x = jstr(q, "effective_policy_definition.dead-letter-exchange", NULL);
        *rk = jstr(q, "effective_policy_definition.dead-letter-routing-key", NULL);
    }
    return x;
}

/* Adds source queue `src` to the dead-letter queue `dlq` of `rows` (keyed vhost\x01name). */
static void add_source(json_t *rows, const json_t *byname, const char *vhost, const char *dlq, const json_t *src) {
    char key[1024];
    snprintf(key, sizeof key, "%s\x01%s", vhost, dlq);
    json_t *row = json_object_get(rows, key);
    if (!row) {
        const json_t *q = json_object_get(byname, key);
        if (!q)
            return; /* bound to something that is not a queue we listed */
        row = json_pack("{s:s, s:s, s:O, s:[], s:{}}", "vhost", vhost, "queue", dlq, "messages",
                        json_object_get(q, "messages") ? json_object_get(q, "messages") : json_null(), "sources",
                        "dead_lettered");
        json_object_set_new(rows, key, row);
    }
    json_array_append_new(json_object_get(row, "sources"), json_string(jstr(src, "name", "")));
    const char *why;
    json_t *n;
    json_object_foreach((json_t *)jpath(src, "dead_lettered"), why, n) {
        json_t *sum = json_object_get(json_object_get(row, "dead_lettered"), why);
        json_int_t add = json_is_integer(n) ? json_integer_value(n) : 0;
        if (sum)
            json_integer_set(sum, json_integer_value(sum) + add);
        else
            json_object_set_new(json_object_get(row, "dead_lettered"), why, json_integer(add));
    }
}

/* The dead-letter queues: every queue that a queue's dead-letter exchange (argument or
 * policy) routes to, with its depth, the queues feeding it and, on ferryd, how many messages
 * those queues dead-lettered by reason. Built from the topology (queues and bindings), so it
 * works on RabbitMQ too (without the counts). */
static int dlq_list(mgmt *m) {
    char qpath[1024], bpath[1024], ev[768];
    if (m->vhost) {
        snprintf(qpath, sizeof qpath, "/api/queues/%s", mgmt_esc(m->vhost, ev, sizeof ev));
        snprintf(bpath, sizeof bpath, "/api/bindings/%s", ev);
    } else {
        snprintf(qpath, sizeof qpath, "/api/queues");
        snprintf(bpath, sizeof bpath, "/api/bindings");
    }
    json_t *queues = NULL, *bindings = NULL;
    int rc = mgmt_call(m, "GET", qpath, NULL, &queues, NULL);
    if (rc == MG_OK)
        rc = mgmt_call(m, "GET", bpath, NULL, &bindings, NULL);
    if (rc == MG_OK && (!json_is_array(queues) || !json_is_array(bindings)))
        rc = mgmt_fail(m, MG_FAILED, "the broker's queue or binding list is not a JSON list");
    if (rc != MG_OK) {
        json_decref(queues);
        json_decref(bindings);
        return rc;
    }
    mgmt_merge_ferry_queues(m, queues);
    json_t *byname = json_object(), *rows = json_object();
    char key[1024];
    size_t i, j;
    json_t *q, *bd;
    json_array_foreach(queues, i, q) {
        snprintf(key, sizeof key, "%s\x01%s", jstr(q, "vhost", ""), jstr(q, "name", ""));
        json_object_set(byname, key, q);
    }
    json_array_foreach(queues, i, q) {
        const char *rk, *x = dlx_of(q, &rk), *vh = jstr(q, "vhost", "/");
        if (!x)
            continue;
        if (!*x) { /* the default exchange: the routing key names the queue */
            if (rk)
                add_source(rows, byname, vh, rk, q);
            continue;
        }
        json_array_foreach(bindings, j, bd) {
            if (strcmp(jstr(bd, "source", ""), x) == 0 && strcmp(jstr(bd, "vhost", ""), vh) == 0 &&
                strcmp(jstr(bd, "destination_type", ""), "queue") == 0)
                add_source(rows, byname, vh, jstr(bd, "destination", ""), q);
        }
    }
    json_t *list = json_array();
    const char *k;
    json_t *row;
    json_object_foreach(rows, k, row) json_array_append(list, row);
    json_decref(rows);
    json_decref(byname);
    json_decref(queues);
    json_decref(bindings);
    if (m->json) {
        mgmt_print_json(list);
        json_decref(list);
        return MG_OK;
    }
    static const char *const heads[] = {"vhost", "queue", "messages", "from queues", "dead-lettered by reason",
                                        NULL};
    table *t = table_new(heads, "llrll");
    json_array_foreach(list, i, row) {
        char n[32], from[512] = "", reasons[512] = "";
        size_t len = 0;
        json_t *v;
        json_array_foreach(json_object_get(row, "sources"), j, v) {
            if (len < sizeof from)
                len += (size_t)snprintf(from + len, sizeof from - len, "%s%s", len ? ", " : "", json_string_value(v));
        }
        len = 0;
        json_object_foreach(json_object_get(row, "dead_lettered"), k, v) {
            if (json_integer_value(v) && len < sizeof reasons)
                len += (size_t)snprintf(reasons + len, sizeof reasons - len, "%s%s %lld", len ? ", " : "", k,
                                        (long long)json_integer_value(v));
        }
        table_row(t);
        table_cell(t, "%s", jstr(row, "vhost", "-"));
        table_cell(t, "%s", jstr(row, "queue", "-"));
        table_cell(t, "%s", fmt_count(row, "messages", n, sizeof n));
        table_cell(t, "%s", from);
        table_cell(t, "%s", reasons[0] ? reasons : json_object_size(json_object_get(row, "dead_lettered")) ? "none" : "-");
    }
    if (table_rows(t))
        table_print(t, stdout, 0);
    else
        puts("no dead-letter queues (no queue has a dead-letter exchange that routes to a queue)");
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
        const json_t *msgs = json_is_object(reply) ? json_object_get(reply, "items") : reply;
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
            printf("purged %s dead letter(s) of '%s'\n",
                   json_is_number(jpath(reply, "purged")) ? fmt_count(reply, "purged", ev, sizeof ev) : "the", pos[1]);
        }
    }
    json_decref(reply);
    mgmt_free(&m);
    return rc;
}
