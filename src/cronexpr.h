/* cronexpr.h — cron expressions: parsing and the next tick in a time zone.
 *
 * Five fields (minute hour day-of-month month day-of-week) or six with seconds first, as
 * common cron writes them: '*', numbers, ranges a-b, lists a,b,c, steps (star/n, a-b/n, a/n)
 * (a to the field's end), month names jan-dec and day names sun-sat (any case), 7 also
 * Sunday, and the macros @yearly @annually @monthly @weekly @daily @midnight @hourly.
 * As in Vixie cron, when both day fields are restricted (neither starts with '*') a day
 * matches if either does.
 *
 * Ticks are the instants whose local wall time (in the schedule's zone) matches. At a
 * daylight-saving change (cronie's rule): local times skipped by a spring-forward gap fire
 * once, at the change itself (cronie runs skipped jobs at once), and a local time repeated
 * by a fall-back fires once (its first occurrence) unless the hour field is '*', in which
 * case both occurrences are real ticks (an every-few-seconds schedule keeps going through
 * the repeated hour). Base layer: knows no broker type. */
#ifndef FERRY_CRONEXPR_H
#define FERRY_CRONEXPR_H

#include <stddef.h>
#include <stdint.h>

#include "tzfile.h"

#define CRON_MAX_LEN 256 /* longer expressions are refused */

typedef struct cron_spec {
    uint64_t sec, min; /* bit i: i matches (0..59) */
    uint32_t hour;     /* 0..23 */
    uint32_t mday;     /* 1..31 */
    uint16_t mon;      /* 1..12 */
    uint8_t wday;      /* 0..6, Sunday 0 */
    uint8_t dom_star, dow_star, hour_star; /* the field started with '*' */
} cron_spec;

/* Parses s (n bytes). 0, or -1 with a message naming the problem in err. */
int cron_parse(const char *s, size_t n, cron_spec *out, char *err, size_t errlen);
/* The first tick strictly after `after` (Unix seconds) in zone z (NULL: UTC); -1 if there
 * is none in the next 10 years (Feb 30, say). */
int64_t cron_next(const cron_spec *c, const tzone *z, int64_t after);
/* The last tick at or before `now` and after `after`; -1 if none. A schedule that was down
 * across several ticks fires once, for this one. */
int64_t cron_last_between(const cron_spec *c, const tzone *z, int64_t after, int64_t now);

#endif
