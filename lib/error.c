/* error.c — ferry_strerror and the duration parser shared by the library and the CLI
 * ("250ms", "5s", "30m", "1h": the spelling every ferry command uses). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

const char *ferry_strerror(int err) {
    switch (err) {
    case FERRY_OK: return "ok";
    case FERRY_RETRY: return "retry";
    case FERRY_FAIL: return "fail";
    case FERRY_EINVAL: return "invalid argument";
    case FERRY_ENOMEM: return "out of memory";
    case FERRY_ECONNECT: return "cannot reach the broker";
    case FERRY_EAUTH: return "login refused";
    case FERRY_ECLOSED: return "connection lost";
    case FERRY_ETIMEDOUT: return "timed out";
    case FERRY_ENACK: return "broker nacked the message";
    case FERRY_EUNROUTABLE: return "message unroutable (returned)";
    case FERRY_EREFUSED: return "broker refused (channel closed)";
    case FERRY_EPROTO: return "protocol error";
    case FERRY_EJSON: return "bad JSON";
    case FERRY_ENOTFOUND: return "not found";
    case FERRY_ESTOPPED: return "stopped";
    case FERRY_ESYS: return "system call failed";
    case FERRY_EDB: return "database error";
    default: return "unknown error";
    }
}

int ferry_parse_duration(const char *s, int64_t *ms) {
    if (!s || !*s || !ms)
        return FERRY_EINVAL;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    if (*s < '0' || *s > '9')
        return FERRY_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return FERRY_EINVAL;
    int64_t mul;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else if (strcmp(end, "d") == 0)
        mul = 86400000;
    else
        return FERRY_EINVAL;
    if (v > (unsigned long long)(INT64_MAX / mul))
        return FERRY_EINVAL;
    *ms = (int64_t)v * mul;
    return 0;
}

int ferry_parse_durations(const char *s, int64_t **out, size_t *n) {
    if (!s || !out || !n)
        return FERRY_EINVAL;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int64_t *v = calloc(cap, sizeof *v);
    char *copy = strdup(s);
    if (!v || !copy) {
        free(v);
        free(copy);
        return FERRY_ENOMEM;
    }
    size_t k = 0;
    int rc = 0;
    if (*s) {
        char *save = NULL;
        char *tok = copy;
        /* strtok would skip empty items ("1s,,2s"); those are errors */
        for (char *p = copy;; p++) {
            if (*p == ',' || *p == 0) {
                int last = *p == 0;
                *p = 0;
                if ((rc = ferry_parse_duration(tok, &v[k])) < 0)
                    break;
                k++;
                if (last)
                    break;
                tok = p + 1;
            }
        }
        (void)save;
    }
    free(copy);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}
