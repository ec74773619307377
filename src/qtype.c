/* qtype.c — queue types: x-queue-type classic and quorum.
 *
 * Ferry has one queue implementation; the type decides which arguments a queue accepts and
 * a few behaviours, so that applications written for RabbitMQ (which declare quorum queues)
 * run unchanged and can move to a RabbitMQ cluster later. Which arguments and properties a
 * type accepts is checked on declare with the other argument rules (args.c). As RabbitMQ
 * 3.10+ does it:
 *   - a quorum queue adds x-delivery-count to every delivery and dead-letters a message
 *     returned more than x-delivery-limit times (reason delivery_limit); its default limit
 *     is 20, as in RabbitMQ 4.
 * Streams (x-queue-type stream) are queues too (is_stream): stream.c keeps their log and
 * consumers, and the queue's FIFO stays empty. */
#include "broker.h"

#include <stdlib.h>

#include "util.h"

#define QUORUM_DEFAULT_DELIVERY_LIMIT 20 /* RabbitMQ 4.0 */

int qtype_is_quorum(slice args) {
    fval v;
    return table_get(args, "x-queue-type", &v) && fval_is_str(&v) && slice_eqs(v.s, "quorum");
}

void qtype_init(queue *q, slice args) {
    fval v;
    q->quorum = (uint8_t)qtype_is_quorum(args);
    q->is_stream = (uint8_t)stream_is(args);
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
