/* http_int.h — what the HTTP thread's files share (http.c, http_amqp.c). */
#ifndef FERRY_HTTP_INT_H
#define FERRY_HTTP_INT_H

#include "mgmt.h"

/* Where the HTTP thread reaches this broker over AMQP (a loopback listen address). */
extern char http_amqp_host[64];
extern int http_amqp_port;
/* Does r (routed by the loop with r->amqp set) as an AMQP client, logged in as r's user. */
void http_amqp(mgmt_req *r);
void ok_204(mgmt_req *r);
/* GET /api/queues from a snapshot (http_queues.c). key: the user and vhost filter; url: the
 * path and query (the last answer's text is reused for the same url within the second).
 * 0: *text is the JSON answer; 1: *text is every queue's JSON, still to be shaped (columns,
 * another sort key); -1: r's error is set; -2: no snapshot (ask the loop again). */
typedef struct qblob {
    int refs;         /* under http_queues.c's lock */
    struct qblob *gz; /* its text gzipped, made on the first request taking gzip (holds a ref) */
    size_t len;
    char data[];
} qblob;
qblob *qblob_new(const void *p, size_t n);
void qblob_unref(void *b);
/* b's gzipped text (a new reference), made once per text: NULL if zlib failed. */
qblob *qblob_gzip(qblob *b);
/* data gzipped (malloc'd, *out_len set), or NULL if zlib failed (http.c). */
char *http_gzip(const char *data, size_t len, size_t *out_len);
int http_queue_list(mgmt_req *r, const char *key, const char *url, const char *node, qblob **text);
/* Is the cached snapshot for key less than a second old? */
int http_queues_fresh(const char *key, uint64_t *gen);
void http_queues_cache_clear(void);
extern char http_node[128];

#endif
