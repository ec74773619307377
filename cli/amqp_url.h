/* amqp_url.h — the AMQP URI every AMQP `ferry` command uses (worker, publish): --uri, else
 * FERRY_URL when amqp(s)://, else an http(s):// FERRY_URL turned into amqp://user:pass@host:5672/,
 * else amqp://guest:guest@127.0.0.1:5672/. */
#ifndef FERRY_CLI_AMQP_URL_H
#define FERRY_CLI_AMQP_URL_H
#include <stddef.h>

/* Fills buf with the URI to use; flag is --uri's value or NULL. */
void cli_amqp_uri(const char *flag, char *buf, size_t n);

int publish_main(int argc, char **argv);
int worker_main(int argc, char **argv);

#endif
