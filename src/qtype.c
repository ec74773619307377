/* qtype.c — queue types: x-queue-type classic and quorum.
 *
 * Ferry has one queue implementation; the type decides which arguments a queue accepts and
 * a few behaviours, so that applications written for RabbitMQ (which declare quorum queues)
 * run unchanged and can move to a RabbitMQ cluster later. As RabbitMQ 3.10+ does it:
 *   - an argument RabbitMQ knows but the type does not support is refused (406, "invalid
 *     arg 'x-max-priority' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue"),
 *     an argument RabbitMQ does not know is ignored;
 *   - a quorum queue must be durable, not exclusive, not auto-delete (checked in that order);
 *   - a quorum queue adds x-delivery-count to every delivery and dead-letters a message
 *     returned more than x-delivery-limit times (reason delivery_limit); its default limit
 *     is 20, as in RabbitMQ 4.
 * Streams (x-queue-type stream) do not exist yet and are refused as an unsupported type. */
#include "broker.h"

#include <stdlib.h>

#include "util.h"

#define QUORUM_DEFAULT_DELIVERY_LIMIT 20 /* RabbitMQ 4.0 */

/* The queue arguments RabbitMQ knows; one letter per type says whether it is supported:
 * c = classic, q = quorum. */
static const struct {
    const char *name;
    const char *types;
} known_args[] = {
    {"x-expires", "cq"},
    {"x-message-ttl", "cq"},
    {"x-dead-letter-exchange", "cq"},
    {"x-dead-letter-routing-key", "cq"},
    {"x-max-length", "cq"},
    {"x-max-length-bytes", "cq"},
    {"x-max-in-memory-length", "q"},
    {"x-max-in-memory-bytes", "q"},
    {"x-max-priority", "c"},
    {"x-overflow", "cq"},
    {"x-queue-mode", "c"},
    {"x-queue-version", "c"},
    {"x-single-active-consumer", "cq"},
    {"x-queue-type", "cq"},
    {"x-quorum-initial-group-size", "q"},
    {"x-max-age", ""},
    {"x-stream-max-segment-size-bytes", ""},
    {"x-initial-cluster-size", ""},
    {"x-queue-leader-locator", "q"},
    {"x-queue-master-locator", "c"},
    {"x-delivery-limit", "q"},
    {"x-dead-letter-strategy", "q"},
};

static int is_quorum(slice args) {
    fval v;
    return table_get(args, "x-queue-type", &v) && fval_is_str(&v) && slice_eqs(v.s, "quorum");
}

/* Ferry's own arguments (RabbitMQ ignores them): x-retry-delays, a list of at most 64
 * delays in ms; x-deduplication-window, a positive number of ms. */
static int ferry_args_check(channel *ch, slice name, slice args) {
    fval v;
    if (table_get(args, "x-retry-delays", &v)) {
        int ok = v.type == 'A';
        size_t n = 0;
        if (ok) {
            rd r = rd_make(v.s.p, v.s.n);
            fval e;
            int rc;
            while (ok && (rc = array_next(&r, &e)) == 1)
                ok = fval_is_int(&e) && e.i >= 0 && e.i <= 365LL * 86400 * 1000 && ++n <= 64;
        }
        if (!ok) {
            channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DECLARE,
                                "invalid arg 'x-retry-delays' for queue '%.*s' in vhost '/': expected a list of at "
                                "most 64 delays in milliseconds (integers from 0 to one year)",
                                (int)name.n, (const char *)name.p);
            return -1;
        }
    }
    if (table_get(args, "x-deduplication-window", &v) && (!fval_is_int(&v) || v.i <= 0)) {
        channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DECLARE,
                            "invalid arg 'x-deduplication-window' for queue '%.*s' in vhost '/': expected a "
                            "positive integer (milliseconds)",
                            (int)name.n, (const char *)name.p);
        return -1;
    }
    return 0;
}

int qtype_check_declare(channel *ch, slice name, int durable, int exclusive, int auto_delete, slice args) {
    int quorum = is_quorum(args);
    char type = quorum ? 'q' : 'c';
    const char *tname = quorum ? "rabbit_quorum_queue" : "rabbit_classic_queue";
    /* The client's arguments in their order: the first unsupported one is named. */
    rd r = rd_make(args.p, args.n);
    slice k;
    fval v;
    while (table_next(&r, &k, &v) == 1) {
        for (size_t i = 0; i < ARRAY_LEN(known_args); i++) {
            if (!slice_eqs(k, known_args[i].name) || strchr(known_args[i].types, type))
                continue;
            channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DECLARE,
                                "invalid arg '%s' for queue '%.*s' in vhost '/' of queue type %s", known_args[i].name,
                                (int)name.n, (const char *)name.p, tname);
            return -1;
        }
    }
    if (ferry_args_check(ch, name, args) < 0)
        return -1;
    if (!quorum)
        return 0;
    const char *prop = auto_delete ? "auto-delete" : exclusive ? "exclusive-owner" : !durable ? "non-durable" : NULL;
    if (prop) {
        channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DECLARE, "invalid property '%s' for queue '%.*s' in vhost '/'",
                            prop, (int)name.n, (const char *)name.p);
        return -1;
    }
    return 0;
}

void qtype_init(queue *q, slice args) {
    fval v;
    q->quorum = (uint8_t)is_quorum(args);
    q->delivery_limit = q->quorum ? QUORUM_DEFAULT_DELIVERY_LIMIT : -1;
    /* RabbitMQ 4: a negative limit means no limit. */
    if (table_get(args, "x-delivery-limit", &v) && fval_is_int(&v))
        q->delivery_limit = v.i < 0 ? -1 : v.i;
    if (table_get(args, "x-deduplication-window", &v) && fval_is_int(&v) && v.i > 0)
        q->dedup_window = v.i;
    q->sac = table_get(args, "x-single-active-consumer", &v) && v.type == 't' && v.i;
    if (table_get(args, "x-retry-delays", &v) && v.type == 'A') {
        rd r = rd_make(v.s.p, v.s.n);
        fval e;
        while (array_next(&r, &e) == 1) {
            q->retry_delays = xrealloc(q->retry_delays, (q->nretry + 1) * sizeof *q->retry_delays);
            q->retry_delays[q->nretry++] = e.i;
        }
    }
}
