/* util.c — allocation, clocks and the stderr logger. */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int log_level = LOG_INFO;

static void oom(size_t n) {
    fprintf(stderr, "ferryd: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        oom(n * sz);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrndup(const char *s, size_t n) {
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* Test seam: while nonzero, the clocks read this (ms) instead of the system's, so an
 * in-process driver (fuzz/fuzz_conn.c) decides when time passes and a run repeats exactly.
 * Only that driver sets it; ferryd never does. */
uint64_t fake_clock_ms;

uint64_t now_ms(void) {
    if (fake_clock_ms)
        return fake_clock_ms;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t now_us(void) {
    if (fake_clock_ms)
        return fake_clock_ms * 1000;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t wall_seconds(void) { return fake_clock_ms ? fake_clock_ms / 1000 : (uint64_t)time(NULL); }

uint64_t wall_ms(void) {
    if (fake_clock_ms)
        return fake_clock_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int log_json;
_Thread_local const char *log_correlation_id;

/* Appends s to out (capacity n, used *len) as the inside of a JSON string. */
static void json_escape(char *out, size_t n, size_t *len, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p && *len + 7 < n; p++) {
        if (*p == '"' || *p == '\\') {
            out[(*len)++] = '\\';
            out[(*len)++] = (char)*p;
        } else if (*p < 0x20) {
            *len += (size_t)snprintf(out + *len, n - *len, "\\u%04x", *p);
        } else {
            out[(*len)++] = (char)*p;
        }
    }
    out[*len] = 0;
}

void logf_(int level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warning", "error"};
    if (level < log_level)
        return;
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (log_json) { /* --log-format json: one object per line, written with one call */
        char out[4400];
        size_t n = (size_t)snprintf(out, sizeof out, "{\"time\":\"%s.%03dZ\",\"level\":\"%s\",\"msg\":\"", ts,
                                    (int)(now.tv_nsec / 1000000), names[level]);
        json_escape(out, sizeof out - 64, &n, line);
        if (log_correlation_id) {
            n += (size_t)snprintf(out + n, sizeof out - n, "\",\"correlation_id\":\"");
            json_escape(out, sizeof out - 8, &n, log_correlation_id);
        }
        snprintf(out + n, sizeof out - n, "\"}\n");
        fputs(out, stderr);
        return;
    }
    if (log_correlation_id)
        fprintf(stderr, "%s.%03dZ [%s] %s (correlation-id %s)\n", ts, (int)(now.tv_nsec / 1000000), names[level], line,
                log_correlation_id);
    else
        fprintf(stderr, "%s.%03dZ [%s] %s\n", ts, (int)(now.tv_nsec / 1000000), names[level], line);
}

void log_json_line(const char *json) {
    if (log_json) {
        fprintf(stderr, "%s\n", json);
        return;
    }
    logf_(LOG_INFO, "%s", json);
}
