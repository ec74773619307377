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

#endif
