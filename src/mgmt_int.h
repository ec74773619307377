/* mgmt_int.h — what the loop-side files of the management API share (mgmt.c, mgmt_api.c,
 * mgmt_ferry.c, metrics.c, alerts.c). Everything here runs on the loop thread. */
#ifndef FERRY_MGMT_INT_H
#define FERRY_MGMT_INT_H

#include <jansson.h>
#include <pthread.h>

#include "auth.h"
#include "broker.h"
#include "mgmt.h"
#include "mgmt_json.h"
#include "mgmt_stats.h"

struct alerts;

typedef struct mgmt {
    broker *b;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mgmt_req *todo, *todo_tail; /* under mu: posted by HTTP threads */
    int stopping;               /* under mu */
    int efd;
    io_handler io;
    mgmt_req *active;           /* loop: requests handled over several turns */
    loop_timer tick;
    rate_hist overview;         /* the overview's counters, one sample a second */
    stats_round round;          /* the queues' and exchanges' sampling, a slice a turn */
    uint64_t started_ms;
    char node[128];             /* "ferry@<hostname>" */
    struct alerts *alerts;
} mgmt;

/* The logged-in user of a request (set by mgmt.c before a handler runs). */
typedef struct mctx {
    broker *b;
    mgmt *m;
    mgmt_req *r;
    user *u;
    int admin, monitoring, policymaker; /* tags */
} mctx;

int has_tag(const user *u, const char *tag);
/* May this user see objects of vhost vh? (administrator, monitoring: every vhost) */
int can_see_vhost(mctx *x, const vhost *vh);
/* The vhost named by segment i (404 answer and NULL if missing or not visible). */
vhost *seg_vhost(mctx *x, int i);
const char *qs(mgmt_req *r, const char *k);
/* A JSON body (400 answer and NULL if it is not a JSON object). */
json_t *body_json(mctx *x);
/* Boolean fields as RabbitMQ takes them: true/false or "true"/"false" (rabbitmqadmin). */
int jbool(json_t *o, const char *k, int dflt);
/* Integers also as strings. -1 if malformed, 1 if absent (*out = dflt), 0 if read. */
int jint(json_t *o, const char *k, int64_t dflt, int64_t *out);
void finish(mgmt *m, mgmt_req *r);
void ok_204(mgmt_req *r);

/* mgmt_api.c: the RabbitMQ-compatible endpoints. 0 if the route was found. */
int api_route(mctx *x);
json_t *queue_json(mctx *x, queue *q, int detail);
/* mgmt_stream.c: a stream queue's fields in its JSON, and the ferry_stream_* metrics. */
void stream_queue_json(queue *q, json_t *o);
void stream_metrics(broker *b, buf *o);
json_t *overview_json(mctx *x);
/* mgmt_ferry.c: /api/ferry/... */
int ferry_route(mctx *x);
/* mgmt_schedules.c: /api/ferry/schedules[/{vhost}] (broker-held cron) */
int schedules_route(mctx *x);
/* metrics.c */
void metrics_text(broker *b, mgmt *m, int per_object, buf *out);
/* alerts.c */
void alerts_init(mgmt *m);
void alerts_free(mgmt *m);
void alerts_tick(mgmt *m);
int alerts_route(mctx *x);
size_t alerts_firing(mgmt *m);
/* a queue's value of an alert metric ("messages", ...); -1 if unknown metric */
double queue_metric(queue *q, const char *metric, uint64_t now_mono);

#endif
