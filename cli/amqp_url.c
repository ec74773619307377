/* amqp_url.c — which broker an AMQP command talks to (see amqp_url.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_url.h"

void cli_amqp_uri(const char *flag, char *buf, size_t n) {
    const char *env = getenv("FERRY_URL");
    if (flag && *flag) {
        snprintf(buf, n, "%s", flag);
    } else if (env && (strncmp(env, "amqp://", 7) == 0 || strncmp(env, "amqps://", 8) == 0)) {
        snprintf(buf, n, "%s", env);
    } else if (env && (strncmp(env, "http://", 7) == 0 || strncmp(env, "https://", 8) == 0)) {
        /* same user and host, AMQP's port */
        const char *rest = strstr(env, "://") + 3;
        size_t hl = strcspn(rest, "/");
        char auth_host[512];
        snprintf(auth_host, sizeof auth_host, "%.*s", (int)hl, rest);
        char *at = strrchr(auth_host, '@');
        char *host = at ? at + 1 : auth_host;
        if (host[0] == '[') { /* [v6]:port */
            char *close = strchr(host, ']');
            if (close)
                close[1] = 0;
        } else {
            char *colon = strchr(host, ':');
            if (colon)
                *colon = 0;
        }
        if (at) {
            *at = 0;
            snprintf(buf, n, "amqp://%s@%s:5672/", auth_host, host);
        } else {
            snprintf(buf, n, "amqp://guest:guest@%s:5672/", host);
        }
    } else {
        snprintf(buf, n, "amqp://guest:guest@127.0.0.1:5672/");
    }
}
