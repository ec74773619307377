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
/* An exchange's publish_in (out = 0) or publish_out (out = 1) rate over 5 s. */
double xstats_rate(const exchange *x, int out);
/* A sampling round records every queue's and exchange's counters once (the 1 s tick starts
 * one), a slice a loop turn: 10,000 queues sampled in one turn stalled the loop for 1.3-2.7 ms
 * every second. The cursor is a slot of the vhost map and a slot of one of that vhost's maps,
 * valid while the map's gen is unchanged; a map rehashed between turns is walked again from its
 * start, and what was sampled less than half a second ago is skipped. Each sample carries its
 * own time, so a rate is exact whenever in the round its queue was sampled. */
typedef struct stats_round {
    int active;
    size_t vi;     /* slot of the vhost being walked */
    uint64_t vgen; /* the vhost map's gen when vi was set */
    int phase;     /* 0: that vhost's queues, 1: its exchanges */
    size_t k;      /* slot in that map */
    uint64_t mgen; /* that map's gen when k was set (0: not started) */
} stats_round;

void mgmt_stats_round_start(broker *b, stats_round *w);
/* Samples up to budget queues and exchanges of the round: 1 while it has more to do. */
int mgmt_stats_round_step(broker *b, stats_round *w, uint64_t now, size_t budget);

#endif
