/* tzfile.h — UTC offsets of an IANA time zone, read from the system's tz database
 * (/usr/share/zoneinfo, or $TZDIR) without touching the process's TZ.
 *
 * Why not localtime_r under setenv("TZ"): TZ is process-wide state; setting it on the loop
 * thread races with every other thread that reads the environment or local time (the
 * writer, the HTTP thread, libraries), and glibc's localtime_r does not even re-read TZ
 * without tzset(). A zone here is a value: the TZif file's transitions (RFC 8536) and its
 * footer's POSIX TZ rule for instants past the last transition, answered by a pure
 * function. tests/unit/test_cron.c compares it with glibc's localtime_r for many zones
 * over 1900-2100. Base layer: knows no broker type. */
#ifndef FERRY_TZFILE_H
#define FERRY_TZFILE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tzone tzone;

/* Loads zone `name` (an IANA name such as "Europe/Berlin"; "" or "UTC" give UTC). NULL with a
 * message in err if the name is not a zone name, or its file is missing or unreadable. The
 * file read is small and done once per zone by the caller's cache. */
tzone *tz_load(const char *name, char *err, size_t errlen);
/* Parses TZif bytes (tests, fuzzing). */
tzone *tz_parse(const uint8_t *p, size_t n, char *err, size_t errlen);
/* A zone from a POSIX TZ string alone ("CET-1CEST,M3.5.0,M10.5.0/3"); NULL if malformed. */
tzone *tz_posix(const char *s);
void tz_free(tzone *z);
/* Seconds east of UTC in force at instant t (Unix seconds). */
int32_t tz_offset(const tzone *z, int64_t t);
/* The first instant after t at which the offset may change (INT64_MAX: never). */
int64_t tz_next_change(const tzone *z, int64_t t);

#endif
