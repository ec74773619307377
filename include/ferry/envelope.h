/* envelope.h — the event envelope: CloudEvents attributes mapped onto AMQP properties and
 * headers, so any AMQP client can read them and libferry / `ferry publish --event` write
 * them the same way. The mapping (README, "Event envelope"):
 *
 *   CloudEvents        AMQP
 *   id                 message_id property
 *   type               type property
 *   source             header cloudEvents:source
 *   specversion        header cloudEvents:specversion ("1.0")
 *   time               timestamp property (seconds) + header cloudEvents:time (RFC 3339, ms)
 *   datacontenttype    content_type property (application/json)
 *   subject            header cloudEvents:subject
 *   schemaversion      header cloudEvents:schemaversion (integer)
 *   correlationid      correlation_id property
 *   causationid        header cloudEvents:causationid
 *   aggregateid        header cloudEvents:aggregateid
 *   sequence           header cloudEvents:sequence (integer, per aggregate, from 1)
 *   data               the body (JSON) */
#ifndef FERRY_ENVELOPE_H
#define FERRY_ENVELOPE_H

#include "ferry/ferry.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_H_SOURCE "cloudEvents:source"
#define FERRY_H_SPECVERSION "cloudEvents:specversion"
#define FERRY_H_TIME "cloudEvents:time"
#define FERRY_H_SUBJECT "cloudEvents:subject"
#define FERRY_H_SCHEMA_VERSION "cloudEvents:schemaversion"
#define FERRY_H_CAUSATION_ID "cloudEvents:causationid"
#define FERRY_H_AGGREGATE_ID "cloudEvents:aggregateid"
#define FERRY_H_SEQUENCE "cloudEvents:sequence"

/* What an event is made of; fields left 0/NULL are not written (id and time are filled in). */
typedef struct ferry_event {
    const char *id;             /* NULL: a random UUID (v4) */
    const char *type;           /* required, e.g. "order.placed" */
    const char *source;         /* required, e.g. "/orders" */
    int64_t time_ms;            /* Unix ms; 0: now */
    const char *subject;
    int64_t schema_version;     /* 0: not set */
    const char *correlation_id;
    const char *causation_id;
    const char *aggregate_id;
    int64_t sequence;           /* 0: not set */
    const char *data;           /* JSON text (checked with jansson); NULL: no body */
    const char *data_content_type; /* NULL: application/json */
} ferry_event;

/* Builds a message carrying e. FERRY_EINVAL (no type/source, a negative number),
 * FERRY_EJSON (data is not JSON). */
int ferry_event_to_message(const ferry_event *e, ferry_message **out);

/* The envelope of m as one CloudEvents JSON object (structured mode: specversion, id, type,
 * source, time, subject, datacontenttype, schemaversion, correlationid, causationid,
 * aggregateid, sequence, data), malloc'd text. FERRY_EJSON if the body is not JSON (then
 * data_base64 is not attempted: libferry envelopes carry JSON). */
int ferry_event_json(const ferry_message *m, char **out);

/* Schema version of m: 0 and *version set, or FERRY_ENOTFOUND / FERRY_EINVAL. */
int ferry_event_schema_version(const ferry_message *m, int64_t *version);

/* A random UUID v4 into buf (37 bytes). */
int ferry_uuid(char buf[37]);

#ifdef __cplusplus
}
#endif
#endif
