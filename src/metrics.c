/* metrics.c — /metrics in Prometheus's text format: rabbitmq_prometheus's metric names,
 * types and help texts (3.10, aggregated as its /metrics endpoint gives them; per queue at
 * /metrics/per-object), then Ferry's own ferry_* metrics: the oldest message's age, dead
 * letters by reason, retries, delayed messages pending, alerts firing, the store's fsync
 * latency and group-commit batch sizes.
 *
 * Built on the loop thread into a buffer the HTTP thread sends. Metrics RabbitMQ has and
 * Ferry has no counterpart for (Erlang's reductions, Raft, mnesia) are present with 0, so
 * dashboards and alert rules that name them find them. */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "memacct.h"
#include "mgmt_int.h"
#include "util.h"
#include "writer.h"

static const struct family {
    const char *name, *type, *help;
} families[] = {
    {"rabbitmq_alarms_file_descriptor_limit", "untyped", "is 1 if file descriptor limit alarm is in effect"},
    {"rabbitmq_alarms_free_disk_space_watermark", "untyped", "is 1 if free disk space watermark alarm is in effect"},
    {"rabbitmq_alarms_memory_used_watermark", "untyped", "is 1 if VM memory watermark alarm is in effect"},
    {"rabbitmq_auth_attempts_failed_total", "counter", "Total number of failed authentication attempts"},
    {"rabbitmq_auth_attempts_succeeded_total", "counter", "Total number of successful authentication attempts"},
    {"rabbitmq_auth_attempts_total", "counter", "Total number of authorization attempts"},
    {"rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info"},
    {"rabbitmq_channel_acks_uncommitted", "gauge", "Message acknowledgements in a transaction not yet committed"},
    {"rabbitmq_channel_consumers", "gauge", "Consumers on a channel"},
    {"rabbitmq_channel_get_ack_total", "counter", "Total number of messages fetched with basic.get in manual acknowledgement mode"},
    {"rabbitmq_channel_get_empty_total", "counter", "Total number of times basic.get operations fetched no message"},
    {"rabbitmq_channel_get_total", "counter", "Total number of messages fetched with basic.get in automatic acknowledgement mode"},
    {"rabbitmq_channel_messages_acked_total", "counter", "Total number of messages acknowledged by consumers"},
    {"rabbitmq_channel_messages_confirmed_total", "counter", "Total number of messages published into an exchange and confirmed on the channel"},
    {"rabbitmq_channel_messages_delivered_ack_total", "counter", "Total number of messages delivered to consumers in manual acknowledgement mode"},
    {"rabbitmq_channel_messages_delivered_total", "counter", "Total number of messages delivered to consumers in automatic acknowledgement mode"},
    {"rabbitmq_channel_messages_published_total", "counter", "Total number of messages published into an exchange on a channel"},
    {"rabbitmq_channel_messages_redelivered_total", "counter", "Total number of messages redelivered to consumers"},
    {"rabbitmq_channel_messages_unacked", "gauge", "Delivered but not yet acknowledged messages"},
    {"rabbitmq_channel_messages_uncommitted", "gauge", "Messages received in a transaction but not yet committed"},
    {"rabbitmq_channel_messages_unconfirmed", "gauge", "Published but not yet confirmed messages"},
    {"rabbitmq_channel_messages_unroutable_dropped_total", "counter", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"},
    {"rabbitmq_channel_messages_unroutable_returned_total", "counter", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable"},
    {"rabbitmq_channel_prefetch", "gauge", "Total limit of unacknowledged messages for all consumers on a channel"},
    {"rabbitmq_channel_process_reductions_total", "counter", "Total number of channel process reductions"},
    {"rabbitmq_channels", "gauge", "Channels currently open"},
    {"rabbitmq_channels_closed_total", "counter", "Total number of channels closed"},
    {"rabbitmq_channels_opened_total", "counter", "Total number of channels opened"},
    {"rabbitmq_connection_channels", "gauge", "Channels on a connection"},
    {"rabbitmq_connection_incoming_bytes_total", "counter", "Total number of bytes received on a connection"},
    {"rabbitmq_connection_incoming_packets_total", "counter", "Total number of packets received on a connection"},
    {"rabbitmq_connection_outgoing_bytes_total", "counter", "Total number of bytes sent on a connection"},
    {"rabbitmq_connection_outgoing_packets_total", "counter", "Total number of packets sent on a connection"},
    {"rabbitmq_connection_pending_packets", "gauge", "Number of packets waiting to be sent on a connection"},
    {"rabbitmq_connection_process_reductions_total", "counter", "Total number of connection process reductions"},
    {"rabbitmq_connections", "gauge", "Connections currently open"},
    {"rabbitmq_connections_closed_total", "counter", "Total number of connections closed or terminated"},
    {"rabbitmq_connections_opened_total", "counter", "Total number of connections opened"},
    {"rabbitmq_consumer_prefetch", "gauge", "Limit of unacknowledged messages for each consumer"},
    {"rabbitmq_consumers", "gauge", "Consumers currently connected"},
    {"rabbitmq_disk_space_available_bytes", "gauge", "Disk space available in bytes"},
    {"rabbitmq_disk_space_available_limit_bytes", "gauge", "Free disk space low watermark in bytes"},
    {"rabbitmq_erlang_gc_reclaimed_bytes_total", "counter", "Total number of bytes of memory reclaimed by Erlang garbage collector"},
    {"rabbitmq_erlang_gc_runs_total", "counter", "Total number of Erlang garbage collector runs"},
    {"rabbitmq_erlang_net_ticktime_seconds", "gauge", "Inter-node heartbeat interval"},
    {"rabbitmq_erlang_processes_limit", "gauge", "Erlang processes limit"},
    {"rabbitmq_erlang_processes_used", "gauge", "Erlang processes used"},
    {"rabbitmq_erlang_scheduler_context_switches_total", "counter", "Total number of Erlang scheduler context switches"},
    {"rabbitmq_erlang_scheduler_run_queue", "gauge", "Erlang scheduler run queue"},
    {"rabbitmq_erlang_uptime_seconds", "gauge", "Node uptime"},
    {"rabbitmq_global_consumers", "gauge", "Current number of consumers"},
    {"rabbitmq_global_messages_acknowledged_total", "counter", "Total number of messages acknowledged by consumers"},
    {"rabbitmq_global_messages_confirmed_total", "counter", "Total number of messages confirmed to publishers"},
    {"rabbitmq_global_messages_dead_lettered_confirmed_total", "counter", "Total number of messages dead-lettered and confirmed by target queues"},
    {"rabbitmq_global_messages_dead_lettered_delivery_limit_total", "counter", "Total number of messages dead-lettered due to delivery-limit exceeded"},
    {"rabbitmq_global_messages_dead_lettered_expired_total", "counter", "Total number of messages dead-lettered due to message TTL exceeded"},
    {"rabbitmq_global_messages_dead_lettered_maxlen_total", "counter", "Total number of messages dead-lettered due to overflow drop-head or reject-publish-dlx"},
    {"rabbitmq_global_messages_dead_lettered_rejected_total", "counter", "Total number of messages dead-lettered due to basic.reject or basic.nack"},
    {"rabbitmq_global_messages_delivered_consume_auto_ack_total", "counter", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment"},
    {"rabbitmq_global_messages_delivered_consume_manual_ack_total", "counter", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment"},
    {"rabbitmq_global_messages_delivered_get_auto_ack_total", "counter", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment"},
    {"rabbitmq_global_messages_delivered_get_manual_ack_total", "counter", "Total number of messages delivered to consumers using basic.get with manual acknowledgment"},
    {"rabbitmq_global_messages_delivered_total", "counter", "Total number of messages delivered to consumers"},
    {"rabbitmq_global_messages_get_empty_total", "counter", "Total number of times basic.get operations fetched no message"},
    {"rabbitmq_global_messages_received_confirm_total", "counter", "Total number of messages received from publishers expecting confirmations"},
    {"rabbitmq_global_messages_received_total", "counter", "Total number of messages received from publishers"},
    {"rabbitmq_global_messages_redelivered_total", "counter", "Total number of messages redelivered to consumers"},
    {"rabbitmq_global_messages_routed_total", "counter", "Total number of messages routed to queues or streams"},
    {"rabbitmq_global_messages_unroutable_dropped_total", "counter", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"},
    {"rabbitmq_global_messages_unroutable_returned_total", "counter", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable"},
    {"rabbitmq_global_publishers", "gauge", "Current number of publishers"},
    {"rabbitmq_identity_info", "untyped", "RabbitMQ node & cluster identity info"},
    {"rabbitmq_io_read_bytes_total", "counter", "Total number of I/O bytes read"},
    {"rabbitmq_io_read_ops_total", "counter", "Total number of I/O read operations"},
    {"rabbitmq_io_read_time_seconds_total", "counter", "Total I/O read time"},
    {"rabbitmq_io_reopen_ops_total", "counter", "Total number of times files have been reopened"},
    {"rabbitmq_io_seek_ops_total", "counter", "Total number of I/O seek operations"},
    {"rabbitmq_io_seek_time_seconds_total", "counter", "Total I/O seek time"},
    {"rabbitmq_io_sync_ops_total", "counter", "Total number of I/O sync operations"},
    {"rabbitmq_io_sync_time_seconds_total", "counter", "Total I/O sync time"},
    {"rabbitmq_io_write_bytes_total", "counter", "Total number of I/O bytes written"},
    {"rabbitmq_io_write_ops_total", "counter", "Total number of I/O write operations"},
    {"rabbitmq_io_write_time_seconds_total", "counter", "Total I/O write time"},
    {"rabbitmq_msg_store_read_total", "counter", "Total number of Message Store read operations"},
    {"rabbitmq_msg_store_write_total", "counter", "Total number of Message Store write operations"},
    {"rabbitmq_process_max_fds", "gauge", "Open file descriptors limit"},
    {"rabbitmq_process_max_tcp_sockets", "gauge", "Open TCP sockets limit"},
    {"rabbitmq_process_open_fds", "gauge", "Open file descriptors"},
    {"rabbitmq_process_open_tcp_sockets", "gauge", "Open TCP sockets"},
    {"rabbitmq_process_resident_memory_bytes", "gauge", "Memory used in bytes"},
    {"rabbitmq_queue_consumer_capacity", "gauge", "Consumer capacity"},
    {"rabbitmq_queue_consumer_utilisation", "gauge", "Same as consumer capacity"},
    {"rabbitmq_queue_consumers", "gauge", "Consumers on a queue"},
    {"rabbitmq_queue_disk_reads_total", "counter", "Total number of times queue read messages from disk"},
    {"rabbitmq_queue_disk_writes_total", "counter", "Total number of times queue wrote messages to disk"},
    {"rabbitmq_queue_head_message_timestamp", "gauge", "Timestamp of the first message in the queue, if any"},
    {"rabbitmq_queue_index_read_ops_total", "counter", "Total number of Queue Index read operations"},
    {"rabbitmq_queue_index_write_ops_total", "counter", "Total number of Queue Index write operations"},
    {"rabbitmq_queue_messages", "gauge", "Sum of ready and unacknowledged messages - total queue depth"},
    {"rabbitmq_queue_messages_bytes", "gauge", "Size in bytes of ready and unacknowledged messages"},
    {"rabbitmq_queue_messages_paged_out", "gauge", "Messages paged out to disk"},
    {"rabbitmq_queue_messages_paged_out_bytes", "gauge", "Size in bytes of messages paged out to disk"},
    {"rabbitmq_queue_messages_persistent", "gauge", "Persistent messages"},
    {"rabbitmq_queue_messages_persistent_bytes", "gauge", "Size in bytes of persistent messages"},
    {"rabbitmq_queue_messages_published_total", "counter", "Total number of messages published to queues"},
    {"rabbitmq_queue_messages_ram", "gauge", "Ready and unacknowledged messages stored in memory"},
    {"rabbitmq_queue_messages_ram_bytes", "gauge", "Size of ready and unacknowledged messages stored in memory"},
    {"rabbitmq_queue_messages_ready", "gauge", "Messages ready to be delivered to consumers"},
    {"rabbitmq_queue_messages_ready_bytes", "gauge", "Size in bytes of ready messages"},
    {"rabbitmq_queue_messages_ready_ram", "gauge", "Ready messages stored in memory"},
    {"rabbitmq_queue_messages_unacked", "gauge", "Messages delivered to consumers but not yet acknowledged"},
    {"rabbitmq_queue_messages_unacked_bytes", "gauge", "Size in bytes of all unacknowledged messages"},
    {"rabbitmq_queue_messages_unacked_ram", "gauge", "Unacknowledged messages stored in memory"},
    {"rabbitmq_queue_process_memory_bytes", "gauge", "Memory in bytes used by the Erlang queue process"},
    {"rabbitmq_queue_process_reductions_total", "counter", "Total number of queue process reductions"},
    {"rabbitmq_queues", "gauge", "Queues available"},
    {"rabbitmq_queues_created_total", "counter", "Total number of queues created"},
    {"rabbitmq_queues_declared_total", "counter", "Total number of queues declared"},
    {"rabbitmq_queues_deleted_total", "counter", "Total number of queues deleted"},
    {"rabbitmq_raft_entry_commit_latency_seconds", "gauge", "Time taken for a log entry to be committed"},
    {"rabbitmq_raft_log_commit_index", "gauge", "Raft log commit index"},
    {"rabbitmq_raft_log_last_applied_index", "gauge", "Raft log last applied index"},
    {"rabbitmq_raft_log_last_written_index", "gauge", "Raft log last written index"},
    {"rabbitmq_raft_log_snapshot_index", "gauge", "Raft log snapshot index"},
    {"rabbitmq_raft_term_total", "counter", "Current Raft term number"},
    {"rabbitmq_resident_memory_limit_bytes", "gauge", "Memory high watermark in bytes"},
    {"rabbitmq_schema_db_disk_tx_total", "counter", "Total number of Schema DB disk transactions"},
    {"rabbitmq_schema_db_ram_tx_total", "counter", "Total number of Schema DB memory transactions"},
};

typedef struct totals {
    uint64_t ready, unacked, consumers, queues, ready_bytes, published;
    double oldest_age_s;
    uint64_t delayed_retries;
} totals;

static void sum_queue(void *ctx, queue *q) {
    totals *t = ctx;
    t->ready += q->nready;
    t->unacked += q->unacked;
    t->consumers += q->nconsumers;
    t->ready_bytes += q->ready_bytes;
    t->published += q->cnt.publish;
    t->queues++;
    double age = (double)qstats_oldest_age_ms(q, now_ms()) / 1000.0;
    if (age > t->oldest_age_s)
        t->oldest_age_s = age;
}

static uint64_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t open_fds(void) {
    uint64_t n = 0;
    char path[64];
    for (int fd = 0; fd < 65536 && n < 1000000; fd++) { /* cheap enough once per scrape */
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (access(path, F_OK) == 0)
            n++;
        else if (fd > 1024 && fd > (int)n * 4)
            break;
    }
    return n;
}

/* The aggregated value of a rabbitmq_* family (0 where Ferry has no counterpart). */
static double value_of(broker *b, mgmt *m, const totals *t, const char *n) {
    (void)m;
    size_t nconn = 0, nch = 0;
    for (conn *c = b->conns; c; c = c->next)
        if (c->state == CONN_OPENED)
            nconn++, nch += c->open_channels;
#define IS(s) (strcmp(n, s) == 0)
    if (IS("rabbitmq_alarms_free_disk_space_watermark"))
        return (b->alarms & ALARM_DISK) != 0;
    if (IS("rabbitmq_alarms_memory_used_watermark"))
        return (b->alarms & ALARM_MEMORY) != 0;
    if (IS("rabbitmq_connections"))
        return (double)nconn;
    if (IS("rabbitmq_channels"))
        return (double)nch;
    if (IS("rabbitmq_connections_opened_total"))
        return (double)b->cnt.conn_created;
    if (IS("rabbitmq_connections_closed_total"))
        return (double)b->cnt.conn_closed;
    if (IS("rabbitmq_channels_opened_total"))
        return (double)b->cnt.chan_created;
    if (IS("rabbitmq_channels_closed_total"))
        return (double)b->cnt.chan_closed;
    if (IS("rabbitmq_queues"))
        return (double)t->queues;
    if (IS("rabbitmq_consumers") || IS("rabbitmq_global_consumers") || IS("rabbitmq_queue_consumers"))
        return (double)t->consumers;
    if (IS("rabbitmq_queue_messages_ready") || IS("rabbitmq_queue_messages_ready_ram"))
        return (double)t->ready;
    if (IS("rabbitmq_queue_messages_unacked") || IS("rabbitmq_queue_messages_unacked_ram"))
        return (double)t->unacked;
    if (IS("rabbitmq_queue_messages") || IS("rabbitmq_queue_messages_ram"))
        return (double)(t->ready + t->unacked);
    if (IS("rabbitmq_queue_messages_ready_bytes") || IS("rabbitmq_queue_messages_bytes") ||
        IS("rabbitmq_queue_messages_ram_bytes"))
        return (double)t->ready_bytes;
    if (IS("rabbitmq_queue_messages_published_total"))
        return (double)t->published;
    if (IS("rabbitmq_global_messages_received_total") || IS("rabbitmq_channel_messages_published_total"))
        return (double)b->cnt.publish;
    if (IS("rabbitmq_global_messages_confirmed_total") || IS("rabbitmq_channel_messages_confirmed_total"))
        return (double)b->cnt.confirm;
    if (IS("rabbitmq_global_messages_delivered_consume_manual_ack_total") ||
        IS("rabbitmq_channel_messages_delivered_ack_total"))
        return (double)b->cnt.deliver;
    if (IS("rabbitmq_global_messages_delivered_consume_auto_ack_total") ||
        IS("rabbitmq_channel_messages_delivered_total"))
        return (double)b->cnt.deliver_no_ack;
    if (IS("rabbitmq_global_messages_delivered_get_manual_ack_total") || IS("rabbitmq_channel_get_ack_total"))
        return (double)b->cnt.get;
    if (IS("rabbitmq_global_messages_delivered_get_auto_ack_total") || IS("rabbitmq_channel_get_total"))
        return (double)b->cnt.get_no_ack;
    if (IS("rabbitmq_global_messages_delivered_total"))
        return (double)(b->cnt.deliver + b->cnt.deliver_no_ack + b->cnt.get + b->cnt.get_no_ack);
    if (IS("rabbitmq_global_messages_get_empty_total") || IS("rabbitmq_channel_get_empty_total"))
        return (double)b->cnt.get_empty;
    if (IS("rabbitmq_global_messages_redelivered_total") || IS("rabbitmq_channel_messages_redelivered_total"))
        return (double)b->cnt.redeliver;
    if (IS("rabbitmq_global_messages_acknowledged_total") || IS("rabbitmq_channel_messages_acked_total"))
        return (double)b->cnt.ack;
    if (IS("rabbitmq_global_messages_unroutable_dropped_total") ||
        IS("rabbitmq_channel_messages_unroutable_dropped_total"))
        return (double)b->cnt.drop_unroutable;
    if (IS("rabbitmq_global_messages_unroutable_returned_total") ||
        IS("rabbitmq_channel_messages_unroutable_returned_total"))
        return (double)b->cnt.return_unroutable;
    if (IS("rabbitmq_global_messages_routed_total"))
        return (double)(b->cnt.publish - b->cnt.drop_unroutable - b->cnt.return_unroutable);
    if (IS("rabbitmq_global_messages_dead_lettered_rejected_total"))
        return (double)b->cnt.dead_lettered[DL_REJECTED];
    if (IS("rabbitmq_global_messages_dead_lettered_expired_total"))
        return (double)b->cnt.dead_lettered[DL_EXPIRED];
    if (IS("rabbitmq_global_messages_dead_lettered_maxlen_total"))
        return (double)b->cnt.dead_lettered[DL_MAXLEN];
    if (IS("rabbitmq_global_messages_dead_lettered_delivery_limit_total"))
        return (double)b->cnt.dead_lettered[DL_DELIVERY_LIMIT];
    if (IS("rabbitmq_process_resident_memory_bytes"))
        return (double)rss_bytes();
    if (IS("rabbitmq_resident_memory_limit_bytes"))
        return (double)b->cfg.memory_high_watermark;
    if (IS("rabbitmq_disk_space_available_limit_bytes"))
        return (double)b->cfg.disk_free_limit;
    if (IS("rabbitmq_disk_space_available_bytes")) {
        struct statvfs sv;
        return statvfs(b->cfg.data_dir, &sv) == 0 ? (double)sv.f_bavail * (double)sv.f_frsize : 0.0;
    }
    if (IS("rabbitmq_process_max_fds") || IS("rabbitmq_process_max_tcp_sockets")) {
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        return (double)rl.rlim_cur;
    }
    if (IS("rabbitmq_process_open_fds"))
        return (double)open_fds();
    if (IS("rabbitmq_process_open_tcp_sockets"))
        return (double)b->nconns;
    if (IS("rabbitmq_io_sync_ops_total"))
        return (double)__atomic_load_n(&wstats.fsync_count, __ATOMIC_RELAXED);
    if (IS("rabbitmq_io_sync_time_seconds_total"))
        return (double)__atomic_load_n(&wstats.fsync_sum_us, __ATOMIC_RELAXED) / 1e6;
    if (IS("rabbitmq_io_write_bytes_total"))
        return (double)__atomic_load_n(&wstats.batch_sum_bytes, __ATOMIC_RELAXED);
    if (IS("rabbitmq_io_write_ops_total"))
        return (double)__atomic_load_n(&wstats.batch_count, __ATOMIC_RELAXED);
    if (IS("rabbitmq_erlang_uptime_seconds"))
        return (double)(now_ms() - m->started_ms) / 1000.0;
    if (IS("rabbitmq_erlang_net_ticktime_seconds"))
        return 60;
#undef IS
    return 0;
}

static void head(buf *o, const char *name, const char *type, const char *help) {
    char line[600];
    int n = snprintf(line, sizeof line, "# TYPE %s %s\n# HELP %s %s\n", name, type, name, help);
    buf_put(o, line, (size_t)n);
}

static void val(buf *o, const char *name, const char *labels, double v) {
    char line[1200];
    int n;
    if (v == (double)(int64_t)v && v < 9e15 && v > -9e15)
        n = snprintf(line, sizeof line, "%s%s %lld\n", name, labels, (long long)v);
    else
        n = snprintf(line, sizeof line, "%s%s %.6f\n", name, labels, v);
    buf_put(o, line, (size_t)MIN((size_t)n, sizeof line - 1));
}

/* A label value with Prometheus's escapes. */
static void esc(char *out, size_t n, const char *s) {
    size_t k = 0;
    for (; *s && k + 3 < n; s++) {
        if (*s == '\\' || *s == '"') {
            out[k++] = '\\';
            out[k++] = *s;
        } else if (*s == '\n') {
            out[k++] = '\\';
            out[k++] = 'n';
        } else {
            out[k++] = *s;
        }
    }
    out[k] = 0;
}

static void histogram(buf *o, const char *name, const char *help, const uint64_t *b, const double *bounds, int nb,
                      uint64_t count, double sum) {
    head(o, name, "histogram", help);
    uint64_t cum = 0;
    char bn[160], lb[64];
    snprintf(bn, sizeof bn, "%s_bucket", name);
    for (int i = 0; i < nb; i++) {
        cum += __atomic_load_n(&b[i], __ATOMIC_RELAXED);
        snprintf(lb, sizeof lb, "{le=\"%g\"}", bounds[i]);
        val(o, bn, lb, (double)cum);
    }
    cum += __atomic_load_n(&b[nb], __ATOMIC_RELAXED);
    if (cum < count)
        cum = count; /* observations counted between the loads above */
    val(o, bn, "{le=\"+Inf\"}", (double)cum);
    snprintf(bn, sizeof bn, "%s_sum", name);
    val(o, bn, "", sum);
    snprintf(bn, sizeof bn, "%s_count", name);
    val(o, bn, "", (double)cum);
}

typedef struct perq {
    buf *o;
    int pass;
    uint64_t now;
} perq;

static void per_queue(void *ctx, queue *q) {
    perq *p = ctx;
    char vh[300], qn[600], lb[1000];
    esc(vh, sizeof vh, q->vh->name);
    esc(qn, sizeof qn, q->name);
    snprintf(lb, sizeof lb, "{vhost=\"%s\",queue=\"%s\"}", vh, qn);
    switch (p->pass) {
    case 0: val(p->o, "rabbitmq_queue_messages_ready", lb, (double)q->nready); break;
    case 1: val(p->o, "rabbitmq_queue_messages_unacked", lb, (double)q->unacked); break;
    case 2: val(p->o, "rabbitmq_queue_messages", lb, (double)(q->nready + q->unacked)); break;
    case 3: val(p->o, "rabbitmq_queue_consumers", lb, (double)q->nconsumers); break;
    case 4: val(p->o, "rabbitmq_queue_messages_published_total", lb, (double)q->cnt.publish); break;
    case 5: val(p->o, "ferry_queue_oldest_message_age_seconds", lb, (double)qstats_oldest_age_ms(q, p->now) / 1000.0); break;
    case 6: val(p->o, "ferry_queue_retries_total", lb, (double)q->cnt.retries); break;
    case 7: val(p->o, "ferry_queue_delayed_messages_pending", lb, (double)q->cnt.delayed_pending); break;
    default: {
        static const char *reasons[DL_NREASONS] = {"rejected", "expired", "maxlen", "delivery_limit"};
        for (int k = 0; k < DL_NREASONS; k++) {
            snprintf(lb, sizeof lb, "{vhost=\"%s\",queue=\"%s\",reason=\"%s\"}", vh, qn, reasons[k]);
            val(p->o, "ferry_queue_dead_lettered_total", lb, (double)q->cnt.dead_lettered[k]);
        }
    }
    }
}

void metrics_text(broker *b, mgmt *m, int per_object, buf *o) {
    totals t = {0};
    broker_each_queue(b, sum_queue, &t);
    for (size_t i = 0; i < ARRAY_LEN(families); i++) {
        const struct family *f = &families[i];
        static const char *per_queue_names[] = {"rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked",
                                                "rabbitmq_queue_messages", "rabbitmq_queue_consumers",
                                                "rabbitmq_queue_messages_published_total"};
        int pq = -1;
        for (int k = 0; k < 5; k++)
            if (strcmp(f->name, per_queue_names[k]) == 0)
                pq = k;
        head(o, f->name, f->type, f->help);
        if (per_object && pq >= 0) {
            perq p = {o, pq, now_ms()};
            broker_each_queue(b, per_queue, &p);
            continue;
        }
        if (strcmp(f->name, "rabbitmq_build_info") == 0) {
            val(o, f->name,
                "{rabbitmq_version=\"3.10.8\",prometheus_plugin_version=\"3.10.8\",prometheus_client_version=\"ferry\","
                "erlang_version=\"none\",ferry_version=\"" FERRY_VERSION "\"}",
                1);
            continue;
        }
        if (strcmp(f->name, "rabbitmq_identity_info") == 0) {
            char lb[600];
            snprintf(lb, sizeof lb, "{rabbitmq_node=\"%s\",rabbitmq_cluster=\"%s\",rabbitmq_cluster_permanent_id=\"%s\"}",
                     m->node, m->node, m->node);
            val(o, f->name, lb, 1);
            continue;
        }
        val(o, f->name, "", value_of(b, m, &t, f->name));
    }
    /* Ferry's own */
    head(o, "ferry_oldest_message_age_seconds", "gauge", "Age of the oldest ready message over all queues");
    val(o, "ferry_oldest_message_age_seconds", "", t.oldest_age_s);
    head(o, "ferry_messages_dead_lettered_total", "counter", "Messages dead-lettered, by reason");
    static const char *reasons[DL_NREASONS] = {"rejected", "expired", "maxlen", "delivery_limit"};
    for (int k = 0; k < DL_NREASONS; k++) {
        char lb[64];
        snprintf(lb, sizeof lb, "{reason=\"%s\"}", reasons[k]);
        val(o, "ferry_messages_dead_lettered_total", lb, (double)b->cnt.dead_lettered[k]);
    }
    head(o, "ferry_messages_retried_total", "counter", "Rejected messages scheduled again by x-retry-delays");
    val(o, "ferry_messages_retried_total", "", (double)b->cnt.retries);
    head(o, "ferry_delayed_messages_pending", "gauge", "Delayed messages (delayed exchanges and retries) not yet due");
    val(o, "ferry_delayed_messages_pending", "", (double)delayed_count(b));
    stream_metrics(b, o); /* mgmt_stream.c */
    head(o, "ferry_alerts_firing", "gauge", "Alerts (PUT /api/ferry/alerts) in the firing state");
    val(o, "ferry_alerts_firing", "", (double)alerts_firing(m));
    histogram(o, "ferry_store_fsync_seconds", "Time of each fdatasync of the message log (group commit)", wstats.fsync,
              wstat_fsync_bounds, WSTAT_FSYNC_BUCKETS, __atomic_load_n(&wstats.fsync_count, __ATOMIC_RELAXED),
              (double)__atomic_load_n(&wstats.fsync_sum_us, __ATOMIC_RELAXED) / 1e6);
    histogram(o, "ferry_store_batch_bytes", "Bytes written per group-commit batch", wstats.batch, wstat_batch_bounds,
              WSTAT_BATCH_BUCKETS, __atomic_load_n(&wstats.batch_count, __ATOMIC_RELAXED),
              (double)__atomic_load_n(&wstats.batch_sum_bytes, __ATOMIC_RELAXED));
    if (per_object) {
        static const char *names[][2] = {
            {"ferry_queue_oldest_message_age_seconds", "Age of the queue's oldest ready message"},
            {"ferry_queue_retries_total", "Messages of the queue scheduled again by x-retry-delays"},
            {"ferry_queue_delayed_messages_pending", "Retries of the queue waiting for their delay"},
            {"ferry_queue_dead_lettered_total", "Messages that left the queue as dead letters, by reason"}};
        for (int k = 0; k < 4; k++) {
            head(o, names[k][0], k == 1 || k == 3 ? "counter" : "gauge", names[k][1]);
            perq p = {o, 5 + k, now_ms()};
            broker_each_queue(b, per_queue, &p);
        }
    }
}
