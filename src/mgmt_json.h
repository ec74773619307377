/* mgmt_json.h — AMQP values as management-API JSON and back (mgmt_json.c). */
#ifndef FERRY_MGMT_JSON_H
#define FERRY_MGMT_JSON_H

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "buf.h"
#include "wire.h"

json_t *mj_table(slice t);
/* A message's basic properties (flags + list) as RabbitMQ's "properties" object. */
json_t *mj_props(slice raw);
/* JSON properties as flags + list (appended to out): 0, or -1 with a message in err. */
int mj_to_props(json_t *o, buf *out, char *err, size_t errlen);
/* RabbitMQ's time format: "2026-12-03T09:33:04.333+00:00" (null for 0). */
json_t *mj_time(uint64_t wall_ms);
json_t *mj_rate(double r);
/* A binding's properties_key, as RabbitMQ forms it (the routing key quoted; "~" and a hash
 * of the arguments when there are any), and whether a URL's segment names it. */
void mj_props_key(const char *key, size_t klen, const uint8_t *args, size_t alen, char *out, size_t n);
int mj_props_key_matches(const char *pk, const char *seg);
/* URL-quotes s (quote_plus). */
void mj_quote(const char *s, char *out, size_t n);
/* Sets name: v and name_details: {rate} on o. */
void mj_stat(json_t *o, const char *name, uint64_t v, double rate);

#endif
