/* util.h — small helpers every file uses: allocation that cannot return NULL, time, logging. */
#ifndef FERRY_UTIL_H
#define FERRY_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Out of memory is not recoverable for a broker mid-operation: log and abort. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
char *xstrndup(const char *s, size_t n);

/* Monotonic milliseconds / microseconds, and wall-clock seconds since the epoch. */
uint64_t now_ms(void);
uint64_t now_us(void);
uint64_t wall_seconds(void);
uint64_t wall_ms(void);
/* Nonzero: every clock above reads this instead (the fuzz target's deterministic time). */
extern uint64_t fake_clock_ms;

enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
extern int log_level;
/* --log-format json: each line is one JSON object {"time","level","msg"[,"correlation_id"]}. */
extern int log_json;
/* While set (by code logging about one message), log lines carry this correlation id. */
extern _Thread_local const char *log_correlation_id;
/* A line that is already a JSON object (alerts): as it is in json mode, as a message in text. */
void log_json_line(const char *json);
void logf_(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) do { if (log_level <= LOG_DEBUG) logf_(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) logf_(LOG_INFO, __VA_ARGS__)
#define log_warn(...) logf_(LOG_WARN, __VA_ARGS__)
#define log_error(...) logf_(LOG_ERROR, __VA_ARGS__)

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
