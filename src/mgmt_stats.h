/* mgmt_stats.h — rate history and publish-time marks (mgmt_stats.c). */
#ifndef FERRY_MGMT_STATS_H
#define FERRY_MGMT_STATS_H

#include <stdint.h>

#include "broker.h"

/* What a queue's rates are kept for (RabbitMQ's message_stats names and the depth gauges). */
enum {
    R_PUBLISH, R_DELIVER, R_DELIVER_NO_ACK, R_GET, R_GET_NO_ACK, R_GET_EMPTY, R_ACK, R_REDELIVER, R_DELIVER_GET,
    R_MESSAGES, R_READY, R_UNACKED, R_N
};

#define RATE_SAMPLES 6 /* one a second: the oldest is 5 s old */
typedef struct rate_hist {
    struct rsample {
        uint64_t t;
        uint64_t v[R_N];
    } s[RATE_SAMPLES];
    int i, n;
} rate_hist;

struct pmark {
    uint64_t seq, ms; /* messages from seq on were published at ms (monotonic) or later */
};

typedef struct qstats {
    struct pmark *marks;
    size_t head, nmarks, cap;
    uint64_t last_mark_slot;
    rate_hist rates;
} qstats;

qstats *qstats_get(queue *q);
void hist_push(rate_hist *h, uint64_t t, const uint64_t *v);
/* Per second over the samples held (up to 5 s). */
double hist_rate(const rate_hist *h, int k);
double qstats_rate(queue *q, int k);
/* Records every queue's counters (the 1 s tick). */
void mgmt_stats_sample(broker *b, uint64_t now);

#endif
