/* ferry.c — the `ferry` command line: dispatches to one subcommand per file.
 *
 * Only `bench` exists so far; publish, consume, queues, dead letters and the outbox relay
 * will join it here. */
#include <stdio.h>
#include <string.h>

#include "amqp_url.h"
#include "bench.h"

static const char usage[] = "usage: ferry <command> [options]\n"
                            "\n"
                            "commands:\n"
                            "  bench      load-test an AMQP 0-9-1 broker (ferry bench --help)\n"
                            "  publish    publish one message or event, with confirms (ferry publish --help)\n"
                            "  worker     run a command per message, with retries and dead letters (ferry worker --help)\n"
                            "\n"
                            "ferry --help shows this text.\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "bench") == 0)
        return bench_main(argc - 1, argv + 1);
    if (strcmp(cmd, "publish") == 0)
        return publish_main(argc - 1, argv + 1);
    if (strcmp(cmd, "worker") == 0)
        return worker_main(argc - 1, argv + 1);
    fprintf(stderr, "ferry: unknown command '%s' (see ferry --help)\n", cmd);
    return 2;
}
