/* outbox_check.h — validation shared by the two insert functions and the relay. */
#ifndef FERRY_OUTBOX_CHECK_H
#define FERRY_OUTBOX_CHECK_H

#include "ferry/outbox.h"

/* NULL when the event can become an AMQP message, else the reason. */
const char *outbox_check_event(const ferry_outbox_event *ev);
/* NULL when json is a JSON object, else the reason. */
const char *outbox_check_headers(const char *json);

#endif
