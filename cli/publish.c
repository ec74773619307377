/* publish.c — `ferry publish`: one message, published with confirms through libferry's
 * reliable publisher; exit 0 only once the broker confirmed it. With --event the message is
 * an event envelope (include/ferry/envelope.h). Inside a `ferry worker` job the correlation
 * id comes from FERRY_CORRELATION_ID and the causation id from FERRY_MESSAGE_ID, so what a
 * job publishes stays in its conversation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_url.h"
#include "ferry/envelope.h"
#include "ferry/ferry.h"

static const char usage[] =
    "usage: ferry publish [--uri URI] [--exchange X] [--routing-key K] [--body TEXT | stdin]\n"
    "                     [--header k=v]... [--property name=value]... [--mandatory] [--timeout 10s] [--json]\n"
    "       ferry publish --event TYPE --source S [--data JSON] [--id ID] [--schema-version N]\n"
    "                     [--aggregate-id A --sequence N] [--subject S] [--exchange X] [--routing-key K] ...\n"
    "\n"
    "  --uri URI              amqp://user:pass@host:port/vhost (else FERRY_URL, else amqp://guest:guest@127.0.0.1:5672/)\n"
    "  --exchange X           exchange to publish to (default: the default exchange \"\")\n"
    "  --routing-key K        routing key (for the default exchange: the queue name)\n"
    "  --body TEXT            the body (default: read stdin to its end)\n"
    "  --header k=v           a string header (repeatable)\n"
    "  --property name=value  an AMQP property: content_type, content_encoding, message_id, correlation_id,\n"
    "                         reply_to, expiration, type, user_id, app_id, delivery_mode (1|2), priority, timestamp\n"
    "  --mandatory            fail (exit 1) when no queue takes the message\n"
    "  --transient            delivery_mode 1 (default: persistent, 2)\n"
    "  --timeout D            how long to wait for the confirm, reconnecting if needed (default 10s)\n"
    "  --event TYPE           write the event envelope: type TYPE, a fresh id (or --id), time now\n"
    "  --source S             the event's source (required with --event)\n"
    "  --data JSON            the event's data (checked to be JSON; default: stdin)\n"
    "  --json                 print {\"confirmed\":true,\"message_id\":...} instead of nothing\n"
    "\n"
    "Environment: FERRY_CORRELATION_ID becomes correlation_id, FERRY_MESSAGE_ID the event's causation id\n"
    "(both set by `ferry worker` for its jobs). Exit 0 confirmed, 1 refused (nack, unroutable, no such\n"
    "exchange, timeout), 2 bad usage, 3 cannot reach the broker.\n";

static char *read_all(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    char *b = malloc(cap + 1);
    while (b) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
    }
    if (b)
        b[n] = 0;
    *len = n;
    return b;
}

static int bad(const char *msg, const char *arg) {
    fprintf(stderr, "ferry publish: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

int publish_main(int argc, char **argv) {
    const char *uri_flag = NULL, *exchange = "", *rk = "", *body = NULL, *event = NULL, *source = NULL,
               *data = NULL, *id = NULL, *subject = NULL, *aggregate = NULL;
    int64_t timeout_ms = 10000, schema = 0, seq = 0;
    int mandatory = 0, transient = 0, json = 0;
    const char *headers[64], *props[32];
    int nh = 0, np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV()                                                                                                        \
    do {                                                                                                               \
        if (!v)                                                                                                        \
            return bad("missing value for", a);                                                                        \
        i++;                                                                                                           \
    } while (0)
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(a, "--uri") == 0) {
            NEEDV();
            uri_flag = v;
        } else if (strcmp(a, "--exchange") == 0) {
            NEEDV();
            exchange = v;
        } else if (strcmp(a, "--routing-key") == 0) {
            NEEDV();
            rk = v;
        } else if (strcmp(a, "--body") == 0) {
            NEEDV();
            body = v;
        } else if (strcmp(a, "--header") == 0) {
            NEEDV();
            if (!strchr(v, '=') || v[0] == '=')
                return bad("--header wants k=v, got", v);
            if (nh == 64)
                return bad("too many --header", NULL);
            headers[nh++] = v;
        } else if (strcmp(a, "--property") == 0) {
            NEEDV();
            if (!strchr(v, '=') || v[0] == '=')
                return bad("--property wants name=value, got", v);
            if (np == 32)
                return bad("too many --property", NULL);
            props[np++] = v;
        } else if (strcmp(a, "--mandatory") == 0) {
            mandatory = 1;
        } else if (strcmp(a, "--transient") == 0) {
            transient = 1;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--timeout") == 0) {
            NEEDV();
            if (ferry_parse_duration(v, &timeout_ms) < 0 || timeout_ms <= 0 || timeout_ms > 86400000)
                return bad("--timeout wants a duration like 10s, got", v);
        } else if (strcmp(a, "--event") == 0) {
            NEEDV();
            event = v;
        } else if (strcmp(a, "--source") == 0) {
            NEEDV();
            source = v;
        } else if (strcmp(a, "--data") == 0) {
            NEEDV();
            data = v;
        } else if (strcmp(a, "--id") == 0) {
            NEEDV();
            id = v;
        } else if (strcmp(a, "--subject") == 0) {
            NEEDV();
            subject = v;
        } else if (strcmp(a, "--aggregate-id") == 0) {
            NEEDV();
            aggregate = v;
        } else if (strcmp(a, "--schema-version") == 0 || strcmp(a, "--sequence") == 0) {
            NEEDV();
            char *end;
            long long n = strtoll(v, &end, 10);
            if (!*v || *end || n <= 0)
                return bad(strcmp(a, "--sequence") == 0 ? "--sequence wants a positive integer, got"
                                                         : "--schema-version wants a positive integer, got",
                           v);
            if (strcmp(a, "--sequence") == 0)
                seq = n;
            else
                schema = n;
        } else {
            return bad("unknown flag", a);
        }
    }
    if (event && !source)
        return bad("--event needs --source", NULL);
    if (!event && (source || data || subject || aggregate || schema || seq || id))
        return bad("--source, --data, --id, --subject, --aggregate-id, --schema-version and --sequence go with --event",
                   NULL);
    if (event && body)
        return bad("--event takes its body from --data, not --body", NULL);
    if (seq && !aggregate)
        return bad("--sequence needs --aggregate-id", NULL);

    char *input = NULL;
    size_t input_len = 0;
    if ((event && !data) || (!event && !body)) {
        input = read_all(stdin, &input_len);
        if (!input)
            return bad("cannot read stdin", NULL);
    }
    const char *corr = getenv("FERRY_CORRELATION_ID");
    const char *cause = getenv("FERRY_MESSAGE_ID");
    if (corr && !*corr)
        corr = NULL;
    if (cause && !*cause)
        cause = NULL;

    ferry_message *m = NULL;
    int rc;
    if (event) {
        ferry_event e = {0};
        e.type = event;
        e.source = source;
        e.id = id;
        e.subject = subject;
        e.schema_version = schema;
        e.aggregate_id = aggregate;
        e.sequence = seq;
        e.correlation_id = corr;
        e.causation_id = cause;
        e.data = data ? data : input;
        if (e.data && !*e.data)
            e.data = NULL;
        rc = ferry_event_to_message(&e, &m);
        if (rc == FERRY_EJSON) {
            free(input);
            return bad("--data is not JSON", NULL);
        }
        if (rc < 0) {
            free(input);
            return bad("cannot build the event:", ferry_strerror(rc));
        }
    } else {
        m = ferry_message_new();
        if (!m || ferry_message_set_body(m, body ? body : input, body ? strlen(body) : input_len) < 0) {
            free(input);
            ferry_message_free(m);
            return bad("out of memory", NULL);
        }
        if (corr)
            ferry_message_set_property(m, "correlation_id", corr);
    }
    free(input);
    for (int i = 0; i < nh; i++) {
        char k[256];
        const char *eq = strchr(headers[i], '=');
        snprintf(k, sizeof k, "%.*s", (int)(eq - headers[i]), headers[i]);
        if (ferry_message_set_header_str(m, k, eq + 1) < 0) {
            ferry_message_free(m);
            return bad("bad --header", headers[i]);
        }
    }
    for (int i = 0; i < np; i++) {
        char k[64];
        const char *eq = strchr(props[i], '=');
        snprintf(k, sizeof k, "%.*s", (int)(eq - props[i]), props[i]);
        if (ferry_message_set_property(m, k, eq + 1) < 0) {
            ferry_message_free(m);
            return bad("bad --property (unknown name or bad value):", props[i]);
        }
    }
    if (transient && !ferry_message_property(m, "delivery_mode"))
        ferry_message_set_property(m, "delivery_mode", "1");

    char uri[1024];
    cli_amqp_uri(uri_flag, uri, sizeof uri);
    ferry_publisher_opts po;
    ferry_publisher_opts_init(&po);
    po.mandatory = mandatory;
    ferry_conn_opts co;
    ferry_conn_opts_init(&co);
    co.connection_name = "ferry publish";
    ferry_publisher *p = NULL;
    rc = ferry_publisher_new(&p, uri, &co, &po);
    if (rc < 0) {
        fprintf(stderr, "ferry publish: %s: %s\n",
                rc == FERRY_EINVAL ? "bad --uri" : rc == FERRY_EAUTH ? "the broker refused the login" : "cannot reach the broker",
                uri);
        ferry_message_free(m);
        return rc == FERRY_EINVAL ? 2 : rc == FERRY_EAUTH ? 1 : 3;
    }
    rc = ferry_publish(p, exchange, rk, m, (int)timeout_ms);
    const char *mid = ferry_message_property(m, "message_id");
    if (rc == 0) {
        if (json)
            printf("{\"confirmed\":true,\"message_id\":%s%s%s}\n", mid ? "\"" : "", mid ? mid : "null", mid ? "\"" : "");
    } else {
        const char *detail = ferry_conn_last_error(ferry_publisher_conn(p));
        fprintf(stderr, "ferry publish: not confirmed: %s%s%s\n", ferry_strerror(rc),
                rc == FERRY_EREFUSED && *detail ? ": " : "", rc == FERRY_EREFUSED ? detail : "");
        if (json)
            printf("{\"confirmed\":false,\"error\":\"%s\"}\n", ferry_strerror(rc));
    }
    ferry_publisher_free(p);
    ferry_message_free(m);
    return rc == 0 ? 0 : 1;
}
