/* ferry.c — the `ferry` command line: dispatches to one subcommand per file.
 *
 * One line per command in the table below; each command lives in its own file (bench.c; the
 * management commands in mgmt_*.c). */
#include <stdio.h>
#include <string.h>

#include "amqp_url.h"
#include "bench.h"
#include "mgmt.h"
#include "outbox_cmd.h"

static const char usage[] = "usage: ferry <command> [options]\n"
                            "\n"
                            "commands:\n"
                            "  bench      load-test an AMQP 0-9-1 broker (ferry bench --help)\n"
                            "  publish    publish one message or event, with confirms (ferry publish --help)\n"
                            "  worker     run a command per message, with retries and dead letters (ferry worker --help)\n"
                            "  bench        load-test an AMQP 0-9-1 broker (ferry bench --help)\n"
                            "  queues       list queues: depth, unacked, consumers, oldest age, rates\n"
                            "  exchanges    list exchanges\n"
                            "  connections  list client connections\n"
                            "  get          fetch (peek at) messages of a queue\n"
                            "  consume      consume messages of a queue and print them\n"
                            "  purge        empty a queue\n"
                            "  dlq          dead letters: list, peek, redrive, purge\n"
                            "  alerts       backlog alerts: list, set, delete\n"
                            "  top          live view of rates, queues and alerts\n"
                            "  definitions  export or import the broker's definitions\n"
                            "  schedules    list the broker-held cron schedules (x-ferry-cron)\n"
                            "  streams      list streams: size, first and last offsets, named consumers' lag\n"
                            "  outbox       the transactional outbox: schema, relay (ferry outbox --help)\n"
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
    if (strcmp(cmd, "queues") == 0)
        return mgmt_queues_main(argc - 1, argv + 1);
    if (strcmp(cmd, "exchanges") == 0)
        return mgmt_exchanges_main(argc - 1, argv + 1);
    if (strcmp(cmd, "connections") == 0)
        return mgmt_connections_main(argc - 1, argv + 1);
    if (strcmp(cmd, "get") == 0)
        return mgmt_get_main(argc - 1, argv + 1);
    if (strcmp(cmd, "consume") == 0)
        return mgmt_consume_main(argc - 1, argv + 1);
    if (strcmp(cmd, "purge") == 0)
        return mgmt_purge_main(argc - 1, argv + 1);
    if (strcmp(cmd, "dlq") == 0)
        return mgmt_dlq_main(argc - 1, argv + 1);
    if (strcmp(cmd, "alerts") == 0)
        return mgmt_alerts_main(argc - 1, argv + 1);
    if (strcmp(cmd, "top") == 0)
        return mgmt_top_main(argc - 1, argv + 1);
    if (strcmp(cmd, "definitions") == 0)
        return mgmt_definitions_main(argc - 1, argv + 1);
    if (strcmp(cmd, "outbox") == 0)
        return outbox_main(argc - 1, argv + 1);
    if (strcmp(cmd, "schedules") == 0)
        return mgmt_schedules_main(argc - 1, argv + 1);
    if (strcmp(cmd, "streams") == 0)
        return mgmt_streams_main(argc - 1, argv + 1);
    fprintf(stderr, "ferry: unknown command '%s' (see ferry --help)\n", cmd);
    return 2;
}
