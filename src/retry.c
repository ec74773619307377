/* retry.c — x-retry-delays: native retry with back-off, without retry queues.
 *
 * RabbitMQ needs a topology for this (a retry queue per delay, x-message-ttl and a
 * dead-letter exchange pointing back). Here a queue declared with x-retry-delays, e.g.
 * [1000, 5000, 30000], takes back a message a consumer rejected or nacked without requeue:
 * after the n-th rejection it returns to the same queue (at the tail, as a new publish)
 * delays[n-1] ms later, with an x-retry-count header of n. A message rejected once more
 * after the last delay is dead-lettered as usual (reason rejected, x-death). The count
 * lives in the message's own header, so it survives restarts with the message; the wait
 * is an entry in the broker's delayed heap (delayed.c). */
#include "broker.h"

#include "util.h"

int retry_schedule(queue *q, message *m) {
    int64_t done = 0;
    props_view pv;
    fval v;
    if (props_parse((slice){msg_props(m), m->props_len}, &pv) == 0 && pv.headers.n &&
        table_get(pv.headers, "x-retry-count", &v) && fval_is_int(&v) && v.i > 0)
        done = v.i;
    if ((uint64_t)done >= q->nretry)
        return 0;
    message *n = message_set_int_header(m, "x-retry-count", 'l', done + 1);
    delayed_to_queue(q->b, q, n, (uint64_t)q->retry_delays[done]);
    q->cnt.retries++, q->b->cnt.retries++;
    message_unref(n);
    return 1;
}
