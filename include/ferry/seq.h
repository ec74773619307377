/* seq.h — per-aggregate sequence gap detection for consumers of events that carry
 * cloudEvents:aggregateid and cloudEvents:sequence (envelope.h): each aggregate's events are
 * numbered 1, 2, 3, ...; the tracker says whether an event is the next one, a duplicate (or
 * an old one: at-least-once delivery), or comes after a gap (events missing or reordered).
 * In memory, for one consumer; ferry_seq_set restores a position kept elsewhere. */
#ifndef FERRY_SEQ_H
#define FERRY_SEQ_H

#include "ferry/ferry.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_SEQ_NEXT 0      /* the expected one: the aggregate moves on */
#define FERRY_SEQ_DUPLICATE 1 /* already seen (sequence below the expected one): nothing changes */
#define FERRY_SEQ_GAP 2       /* later than expected: *missing_from..*missing_to were not seen;
                                 the aggregate moves on past this event */

typedef struct ferry_seq ferry_seq;

ferry_seq *ferry_seq_new(void); /* NULL when out of memory */
void ferry_seq_free(ferry_seq *s);

/* Checks event number seq (>= 1) of aggregate: FERRY_SEQ_NEXT, _DUPLICATE or _GAP (then
 * missing_from/missing_to, if not NULL, get the missing range), or FERRY_EINVAL. An
 * aggregate not seen before expects 1. */
int ferry_seq_check(ferry_seq *s, const char *aggregate, int64_t seq, int64_t *missing_from, int64_t *missing_to);

/* The same for a message's envelope headers; FERRY_ENOTFOUND if it has no aggregate id or
 * sequence. */
int ferry_seq_check_message(ferry_seq *s, const ferry_message *m, int64_t *missing_from, int64_t *missing_to);

/* The sequence expected next for aggregate (1 if unseen); set it (e.g. from a database). */
int64_t ferry_seq_expected(const ferry_seq *s, const char *aggregate);
int ferry_seq_set(ferry_seq *s, const char *aggregate, int64_t next_expected);

#ifdef __cplusplus
}
#endif
#endif
