/* mgmt.h — the management API: how the HTTP thread (http.c) asks the loop thread (mgmt.c
 * and the mgmt_*.c handlers) and gets an answer.
 *
 * The HTTP thread never reads broker state. For each API request it fills an mgmt_req
 * (method, the URL's decoded path segments, query, body, credentials), posts it to the
 * mailbox and waits on the request's condition. The loop thread hears the mailbox's eventfd,
 * handles each request within a per-turn budget (a big list is copied over several turns),
 * and hands back a JSON value (or text) and a status. JSON values are built on the loop only
 * from small objects; big lists (queues) come back as flat snapshots that the HTTP thread
 * turns into JSON, sorts and pages. */
#ifndef FERRY_MGMT_H
#define FERRY_MGMT_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct broker;

enum { HM_GET = 1, HM_PUT = 2, HM_POST = 4, HM_DELETE = 8, HM_HEAD = 16 };

#define MGMT_MAX_SEGS 8

typedef struct mgmt_req {
    /* in (HTTP thread) */
    int method;                  /* HM_* */
    char *seg[MGMT_MAX_SEGS];    /* decoded path segments after /api/ (seg[0] = "queues") */
    int nseg;
    json_t *query;               /* query parameters: name -> string */
    char *body;                  /* request body (NUL-terminated) */
    size_t body_len;
    char user[256];
    char *pass;
    int loopback;                /* the peer is a loopback address */
    int pw_checked;              /* the HTTP thread checked pass against check_hash: it matched */
    int metrics;                 /* 1: /metrics, 2: /metrics/per-object (no auth, text answer) */
    int amqp;                    /* out: the HTTP thread does it over AMQP (http_amqp.c) */
    char *location;              /* out: a Location header (a new binding) */
    int want_snap;               /* GET /api/queues: 1 = take a new snapshot (else the cache is fresh) */
    uint64_t snap_gen;           /* in: the cached snapshot's queue generation; out: the snapshot's */
    int qlist;                   /* out: the loop routed it as a queue list */
    struct qsnaps *snap;         /* out: the snapshot (http_queues.c takes it) */
    /* out (loop thread) */
    int status;
    json_t *json;                /* the answer (owned by the request) */
    char *text;                  /* or a text answer (metrics), malloc'd */
    size_t text_len;
    char *persist_alerts;        /* alerts.c: new alert definitions for the HTTP thread to write */
    int need_check;              /* the password must be checked against check_hash (off the loop) */
    int check_alg;
    uint8_t *check_hash;
    size_t check_hash_len;
    int is_admin;                /* the user's tags as the loop saw them (for list filtering) */
    /* loop-side state of a request handled over several turns */
    void *cont;
    void (*cont_fn)(struct broker *b, struct mgmt_req *r);
    int done;
    struct mgmt_req *next;
} mgmt_req;

/* ---- loop side (mgmt.c) ---- */

/* Starts the HTTP servers (http.c) and the loop side: the mailbox, the 1 s statistics tick,
 * alerts. 0, or -1 with a message logged (a busy port). */
int mgmt_start(struct broker *b);
/* Stops the HTTP threads, answers what waits with 503, frees the loop side. */
void mgmt_stop(struct broker *b);

/* Posts a request to the loop and waits for its answer (HTTP thread). */
void mgmt_call(mgmt_req *r);
void mgmt_req_clear(mgmt_req *r);
/* The node name ("ferry@<hostname>"). */
const char *mgmt_node(struct broker *b);

/* Sets a RabbitMQ error answer: {"error": error, "reason": reason}. */
void mgmt_error(mgmt_req *r, int status, const char *error, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- http.c ---- */
int http_start(struct broker *b, char *err, size_t errlen);
void http_stop(void);
/* The data directory's alerts file path (alerts persisted by the HTTP thread). */
extern char http_alerts_path[600];

#endif
