/* worker.c — ferry_worker: one thread owns the connection (rabbitmq-c is not thread-safe)
 * and N handler threads run jobs.
 *
 * The connection thread (ferry_worker_run) reads frames: a delivery becomes a job on the
 * todo list (or a dead letter at once when its schema version is not accepted); finished
 * jobs come back on the done list (the handler threads wake the loop through a pipe) and are
 * settled: ack; nack for ferryd's native retry; or a copy published with confirms (retry
 * queue, dead-letter queue, reply) whose confirm then acks the original — so a message is
 * never acked before what replaces it is safely with the broker. Publishes go on their own
 * confirm channel (FC_CH_PUB), deliveries and acks on FC_CH_CONSUME. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ferry/envelope.h"
#include "ferry/worker.h"
#include "internal.h"

struct ferry_job {
    ferry_worker *w;
    ferry_message *m;
    uint64_t tag, gen;
    int attempt;
    int result;
    char failure[160];
    void *reply;
    size_t reply_len;
    int has_reply;
    ferry_job *next;
};

typedef struct pend {
    uint64_t seq, tag;
} pend;

struct ferry_worker {
    ferry_conn *c;
    ferry_worker_opts o;
    char *queue, *dlq, *queue_type;
    int64_t *delays;
    int64_t *schemas;
    ferry_handler handler;
    void *arg;
    int mode;
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ferry_job *todo, *todo_tail, *done, *done_tail;
    int quit_threads;
    int wake[2];
    volatile sig_atomic_t stop_flag;
    int stopping;
    int running; /* jobs handed to threads and not settled (connection thread's count) */
    uint64_t consume_gen, pub_gen, next_seq;
    pend *pend;
    size_t npend, cappend;
};

void ferry_worker_opts_init(ferry_worker_opts *o) {
    memset(o, 0, sizeof *o);
    o->concurrency = 1;
}

static void wlog(ferry_worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wlog(ferry_worker *w, const char *fmt, ...) {
    if (!w->o.log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    w->o.log(w->o.log_arg, line);
}

const ferry_message *ferry_job_message(const ferry_job *j) { return j ? j->m : NULL; }
int ferry_job_attempt(const ferry_job *j) { return j ? j->attempt : 0; }

int ferry_job_set_reply(ferry_job *j, const void *body, size_t len) {
    if (!j || (len && !body))
        return FERRY_EINVAL;
    void *b = malloc(len ? len : 1);
    if (!b)
        return FERRY_ENOMEM;
    if (len)
        memcpy(b, body, len);
    free(j->reply);
    j->reply = b;
    j->reply_len = len;
    j->has_reply = 1;
    return 0;
}

int ferry_job_set_failure(ferry_job *j, const char *reason) {
    if (!j || !reason)
        return FERRY_EINVAL;
    snprintf(j->failure, sizeof j->failure, "%s", reason);
    return 0;
}

static void job_free(ferry_job *j) {
    if (!j)
        return;
    ferry_message_free(j->m);
    free(j->reply);
    free(j);
}

int ferry_worker_retry_mode(const ferry_worker *w) { return w ? w->mode : 0; }

/* "200ms", "5s", "1m": the retry queue's name suffix */
static void fmt_delay(int64_t ms, char *buf, size_t n) {
    if (ms && ms % 3600000 == 0)
        snprintf(buf, n, "%lldh", (long long)(ms / 3600000));
    else if (ms && ms % 60000 == 0)
        snprintf(buf, n, "%lldm", (long long)(ms / 60000));
    else if (ms && ms % 1000 == 0)
        snprintf(buf, n, "%llds", (long long)(ms / 1000));
    else
        snprintf(buf, n, "%lldms", (long long)ms);
}

static void retry_queue_name(ferry_worker *w, int64_t ms, char *buf, size_t n) {
    char d[32];
    fmt_delay(ms, d, sizeof d);
    snprintf(buf, n, "%s.retry.%s", w->queue, d);
}

/* Declares q with args; a queue that exists with other arguments (406) is used as it is.
 * Returns 1 if declared with exactly these arguments, 0 if it existed otherwise. */
static int declare_or_use(ferry_worker *w, const char *q, const char *args) {
    int rc = ferry_conn_declare_queue(w->c, q, args);
    if (rc == 0)
        return 1;
    if (rc != FERRY_EREFUSED)
        return rc;
    wlog(w, "queue %s exists with other arguments (%s); using it as it is", q, ferry_conn_last_error(w->c));
    rc = ferry_conn_queue_exists(w->c, q);
    return rc == 1 ? 0 : rc < 0 ? rc : FERRY_EREFUSED;
}

static int declare_topology(ferry_worker *w) {
    char args[4096], qt[96] = "";
    if (w->queue_type)
        snprintf(qt, sizeof qt, ",\"x-queue-type\":\"%s\"", w->queue_type);
    snprintf(args, sizeof args, "{%s}", qt[0] ? qt + 1 : "");
    int rc = declare_or_use(w, w->dlq, args);
    if (rc < 0)
        return rc;
    int native = ferry_conn_has_capability(w->c, "x-retry-delays") && w->o.nretry > 0;
    char delays[2048] = "";
    if (native) {
        size_t off = 0;
        off += (size_t)snprintf(delays + off, sizeof delays - off, ",\"x-retry-delays\":[");
        for (size_t i = 0; i < w->o.nretry && off < sizeof delays - 32; i++)
            off += (size_t)snprintf(delays + off, sizeof delays - off, "%s%lld", i ? "," : "", (long long)w->delays[i]);
        snprintf(delays + off, sizeof delays - off, "]");
    }
    snprintf(args, sizeof args, "{\"x-dead-letter-exchange\":\"\",\"x-dead-letter-routing-key\":\"%s\"%s%s}", w->dlq,
             delays, qt);
    rc = declare_or_use(w, w->queue, args);
    if (rc < 0)
        return rc;
    if (native && rc == 0)
        native = 0; /* an existing queue without our delays: retry through queues */
    w->mode = native ? FERRY_RETRY_NATIVE : FERRY_RETRY_QUEUES;
    if (!native)
        for (size_t i = 0; i < w->o.nretry; i++) {
            char name[512];
            retry_queue_name(w, w->delays[i], name, sizeof name);
            snprintf(args, sizeof args,
                     "{\"x-message-ttl\":%lld,\"x-dead-letter-exchange\":\"\",\"x-dead-letter-routing-key\":\"%s\"%s}",
                     (long long)w->delays[i], w->queue, qt);
            if ((rc = declare_or_use(w, name, args)) < 0)
                return rc;
        }
    return 0;
}

static void *thread_main(void *arg) {
    ferry_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->todo && !w->quit_threads)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->todo)
            break;
        ferry_job *j = w->todo;
        w->todo = j->next;
        if (!w->todo)
            w->todo_tail = NULL;
        pthread_mutex_unlock(&w->mu);
        j->next = NULL;
        j->result = w->handler(j, w->arg);
        pthread_mutex_lock(&w->mu);
        if (w->done_tail)
            w->done_tail->next = j;
        else
            w->done = j;
        w->done_tail = j;
        char b = 'j';
        ssize_t r = write(w->wake[1], &b, 1); /* the pipe is non-blocking; a full pipe wakes anyway */
        (void)r;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int ferry_worker_new(ferry_worker **out, const char *uri, const ferry_conn_opts *copts,
                     const ferry_worker_opts *wopts, ferry_handler handler, void *arg) {
    if (!out || !uri || !wopts || !wopts->queue || !*wopts->queue || !handler || wopts->concurrency < 0 ||
        wopts->prefetch < 0 || wopts->concurrency > 1024 || wopts->prefetch > 65535 ||
        (wopts->nretry && !wopts->retry_delays_ms) || (wopts->nschema && !wopts->schema_versions))
        return FERRY_EINVAL;
    for (size_t i = 0; i < wopts->nretry; i++)
        if (wopts->retry_delays_ms[i] < 0 || wopts->retry_delays_ms[i] > 0xffffffffLL)
            return FERRY_EINVAL;
    ferry_worker *w = calloc(1, sizeof *w);
    if (!w)
        return FERRY_ENOMEM;
    w->o = *wopts;
    if (w->o.concurrency == 0)
        w->o.concurrency = 1;
    if (w->o.prefetch == 0)
        w->o.prefetch = w->o.concurrency;
    w->handler = handler;
    w->arg = arg;
    w->wake[0] = w->wake[1] = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->queue = strdup(wopts->queue);
    size_t ql = strlen(wopts->queue);
    w->dlq = malloc(ql + 6);
    if (w->dlq) {
        if (wopts->dead_letter_queue && *wopts->dead_letter_queue) {
            free(w->dlq);
            w->dlq = strdup(wopts->dead_letter_queue);
        } else {
            memcpy(w->dlq, wopts->queue, ql);
            memcpy(w->dlq + ql, ".dead", 6);
        }
    }
    w->queue_type = wopts->queue_type ? strdup(wopts->queue_type) : NULL;
    w->delays = calloc(wopts->nretry + 1, sizeof *w->delays);
    w->schemas = calloc(wopts->nschema + 1, sizeof *w->schemas);
    int rc = 0;
    if (!w->queue || !w->dlq || !w->delays || !w->schemas || (wopts->queue_type && !w->queue_type))
        rc = FERRY_ENOMEM;
    if (rc == 0) {
        if (wopts->nretry)
            memcpy(w->delays, wopts->retry_delays_ms, wopts->nretry * sizeof *w->delays);
        if (wopts->nschema)
            memcpy(w->schemas, wopts->schema_versions, wopts->nschema * sizeof *w->schemas);
        if (pipe2(w->wake, O_NONBLOCK | O_CLOEXEC) < 0)
            rc = FERRY_ESYS;
    }
    if (rc == 0)
        rc = ferry_conn_open(&w->c, uri, copts);
    if (rc == 0)
        rc = declare_topology(w);
    if (rc < 0) {
        ferry_worker_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void ferry_worker_stop(ferry_worker *w) {
    if (!w)
        return;
    w->stop_flag = 1;
    char b = 's';
    ssize_t r = write(w->wake[1], &b, 1);
    (void)r;
}

/* Channels for this connection generation: confirm mode for publishes, qos + consume. */
static int setup_channels(ferry_worker *w) {
    ferry_conn *c = w->c;
    int rc;
    if (w->pub_gen != c->generation || !c->ch_open[FC_CH_PUB]) {
        if ((rc = fc_channel(c, FC_CH_PUB)) < 0)
            return rc;
        amqp_confirm_select(c->st, FC_CH_PUB);
        if ((rc = fc_reply_error(c, amqp_get_rpc_reply(c->st), FC_CH_PUB, "confirm.select")) < 0)
            return rc;
        w->pub_gen = c->generation;
        w->next_seq = 1;
        w->npend = 0;
    }
    if (!w->stopping && (w->consume_gen != c->generation || !c->ch_open[FC_CH_CONSUME])) {
        if ((rc = fc_channel(c, FC_CH_CONSUME)) < 0)
            return rc;
        amqp_basic_qos(c->st, FC_CH_CONSUME, 0, (uint16_t)w->o.prefetch, 0);
        if ((rc = fc_reply_error(c, amqp_get_rpc_reply(c->st), FC_CH_CONSUME, "basic.qos")) < 0)
            return rc;
        amqp_basic_consume(c->st, FC_CH_CONSUME, amqp_cstring_bytes(w->queue), amqp_cstring_bytes("ferry-worker"), 0,
                           0, 0, amqp_empty_table);
        if ((rc = fc_reply_error(c, amqp_get_rpc_reply(c->st), FC_CH_CONSUME, "basic.consume")) < 0)
            return rc;
        w->consume_gen = c->generation;
        wlog(w, "consuming %s (prefetch %d, concurrency %d, retries %s)", w->queue, w->o.prefetch, w->o.concurrency,
             w->mode == FERRY_RETRY_NATIVE ? "x-retry-delays" : "retry queues");
    }
    return 0;
}

static void settle_original(ferry_worker *w, uint64_t tag, int ok) {
    if (!w->c->st)
        return;
    if (ok)
        amqp_basic_ack(w->c->st, FC_CH_CONSUME, tag, 0);
    else
        amqp_basic_reject(w->c->st, FC_CH_CONSUME, tag, 1); /* back to the queue: try later */
}

/* Publishes m on the confirm channel; the original (tag) is acked when the broker confirms. */
static int publish_then_ack(ferry_worker *w, const char *exchange, const char *rk, const ferry_message *m,
                            uint64_t tag) {
    if (w->npend == w->cappend) {
        size_t nc = w->cappend ? w->cappend * 2 : 64;
        pend *np = realloc(w->pend, nc * sizeof *np);
        if (!np)
            return FERRY_ENOMEM;
        w->pend = np;
        w->cappend = nc;
    }
    int rc = fp_basic_publish(w->c, FC_CH_PUB, exchange, rk, 0, m);
    if (rc < 0)
        return rc;
    w->pend[w->npend].seq = w->next_seq++;
    w->pend[w->npend].tag = tag;
    w->npend++;
    return 0;
}

static void on_confirm(ferry_worker *w, uint64_t seq, int multiple, int ok) {
    size_t k = 0;
    for (size_t i = 0; i < w->npend; i++) {
        if (w->pend[i].seq == seq || (multiple && w->pend[i].seq < seq))
            settle_original(w, w->pend[i].tag, ok);
        else
            w->pend[k++] = w->pend[i];
    }
    w->npend = k;
}

/* The x-death entry RabbitMQ writes when a consumer rejects a message of queue Q without
 * requeue; an existing entry for (Q, rejected) has its count raised and moves to the front. */
static int add_x_death(ferry_worker *w, ferry_message *m) {
    amqp_pool_t *pool = &m->pool;
    const amqp_field_value_t *old = fm_header(m, "x-death");
    int nold = old && old->kind == AMQP_FIELD_KIND_ARRAY ? old->value.array.num_entries : 0;
    amqp_field_value_t *arr = amqp_pool_alloc(pool, (size_t)(nold + 1) * sizeof *arr);
    amqp_table_entry_t *e = amqp_pool_alloc(pool, 6 * sizeof *e);
    if (!arr || !e)
        return FERRY_ENOMEM;
    int64_t count = 1;
    int k = 1;
    size_t ql = strlen(w->queue);
    for (int i = 0; i < nold; i++) {
        const amqp_field_value_t *d = &old->value.array.entries[i];
        int same = 0;
        if (d->kind == AMQP_FIELD_KIND_TABLE) {
            int qmatch = 0, rmatch = 0;
            int64_t c = 0;
            for (int j = 0; j < d->value.table.num_entries; j++) {
                const amqp_table_entry_t *te = &d->value.table.entries[j];
                const amqp_bytes_t *kb = &te->key;
                if (kb->len == 5 && memcmp(kb->bytes, "queue", 5) == 0 && te->value.value.bytes.len == ql &&
                    memcmp(te->value.value.bytes.bytes, w->queue, ql) == 0)
                    qmatch = 1;
                if (kb->len == 6 && memcmp(kb->bytes, "reason", 6) == 0 && te->value.value.bytes.len == 8 &&
                    memcmp(te->value.value.bytes.bytes, "rejected", 8) == 0)
                    rmatch = 1;
                if (kb->len == 5 && memcmp(kb->bytes, "count", 5) == 0 && te->value.kind == AMQP_FIELD_KIND_I64)
                    c = te->value.value.i64;
            }
            same = qmatch && rmatch;
            if (same)
                count = c + 1;
        }
        if (!same)
            arr[k++] = *d;
    }
    const char *ex = m->exchange ? m->exchange : "";
    const char *rk = m->routing_key ? m->routing_key : w->queue;
    amqp_field_value_t *rks = amqp_pool_alloc(pool, sizeof *rks);
    if (!rks)
        return FERRY_ENOMEM;
    rks->kind = AMQP_FIELD_KIND_UTF8;
    rks->value.bytes = fm_pool_str(m, rk);
    e[0].key = amqp_cstring_bytes("count");
    e[0].value.kind = AMQP_FIELD_KIND_I64;
    e[0].value.value.i64 = count;
    e[1].key = amqp_cstring_bytes("reason");
    e[1].value.kind = AMQP_FIELD_KIND_UTF8;
    e[1].value.value.bytes = amqp_cstring_bytes("rejected");
    e[2].key = amqp_cstring_bytes("queue");
    e[2].value.kind = AMQP_FIELD_KIND_UTF8;
    e[2].value.value.bytes = fm_pool_str(m, w->queue);
    e[3].key = amqp_cstring_bytes("time");
    e[3].value.kind = AMQP_FIELD_KIND_TIMESTAMP;
    e[3].value.value.u64 = (uint64_t)time(NULL);
    e[4].key = amqp_cstring_bytes("exchange");
    e[4].value.kind = AMQP_FIELD_KIND_UTF8;
    e[4].value.value.bytes = fm_pool_str(m, ex);
    e[5].key = amqp_cstring_bytes("routing-keys");
    e[5].value.kind = AMQP_FIELD_KIND_ARRAY;
    e[5].value.value.array.num_entries = 1;
    e[5].value.value.array.entries = rks;
    arr[0].kind = AMQP_FIELD_KIND_TABLE;
    arr[0].value.table.num_entries = 6;
    arr[0].value.table.entries = e;
    amqp_field_value_t v;
    v.kind = AMQP_FIELD_KIND_ARRAY;
    v.value.array.num_entries = k;
    v.value.array.entries = arr;
    int rc = fm_set_header_value(m, "x-death", v);
    if (rc == 0 && !fm_header(m, "x-first-death-queue")) {
        rc = ferry_message_set_header_str(m, "x-first-death-queue", w->queue);
        if (rc == 0)
            rc = ferry_message_set_header_str(m, "x-first-death-reason", "rejected");
        if (rc == 0)
            rc = ferry_message_set_header_str(m, "x-first-death-exchange", ex);
    }
    return rc;
}

static int dead_letter(ferry_worker *w, const ferry_message *orig, uint64_t tag, const char *reason) {
    ferry_message *m = ferry_message_copy(orig);
    if (!m)
        return FERRY_ENOMEM;
    int rc = ferry_message_set_header_str(m, FERRY_H_FAILURE, reason);
    if (rc == 0)
        rc = add_x_death(w, m);
    if (rc == 0) {
        wlog(w, "dead-lettering %s to %s: %s", ferry_message_property(m, "message_id") ?: "(no message_id)", w->dlq,
             reason);
        rc = publish_then_ack(w, "", w->dlq, m, tag);
    }
    ferry_message_free(m);
    return rc;
}

static int retry_later(ferry_worker *w, ferry_job *j) {
    int64_t d = w->delays[j->attempt - 1];
    wlog(w, "retrying %s in %lld ms (attempt %d failed: %s)", ferry_message_property(j->m, "message_id") ?: "(no id)",
         (long long)d, j->attempt, j->failure);
    if (w->mode == FERRY_RETRY_NATIVE) {
        amqp_basic_nack(w->c->st, FC_CH_CONSUME, j->tag, 0, 0);
        return 0;
    }
    ferry_message *m = ferry_message_copy(j->m);
    if (!m)
        return FERRY_ENOMEM;
    char name[512];
    retry_queue_name(w, d, name, sizeof name);
    int rc = ferry_message_set_header_int(m, FERRY_H_ATTEMPT, j->attempt);
    if (rc == 0)
        rc = publish_then_ack(w, "", name, m, j->tag);
    ferry_message_free(m);
    return rc;
}

static int reply(ferry_worker *w, ferry_job *j) {
    const char *to = ferry_message_property(j->m, "reply_to");
    if (!to || !j->has_reply) {
        amqp_basic_ack(w->c->st, FC_CH_CONSUME, j->tag, 0);
        return 0;
    }
    ferry_message *r = ferry_message_new();
    if (!r)
        return FERRY_ENOMEM;
    const char *corr = ferry_message_property(j->m, "correlation_id");
    int rc = ferry_message_set_body(r, j->reply, j->reply_len);
    if (rc == 0 && corr)
        rc = ferry_message_set_property(r, "correlation_id", corr);
    if (rc == 0)
        rc = publish_then_ack(w, "", to, r, j->tag);
    ferry_message_free(r);
    return rc;
}

/* A finished job: settle its message (only if it came on this connection: otherwise the
 * broker has already put it back and will deliver it again). */
static int finish(ferry_worker *w, ferry_job *j) {
    w->running--;
    if (j->gen != w->consume_gen || !w->c->st) {
        wlog(w, "a job finished after its connection was lost; its message is delivered again");
        return 0;
    }
    if (!j->failure[0])
        snprintf(j->failure, sizeof j->failure, "%s", j->result == FERRY_RETRY ? "retry" : "handler failed");
    switch (j->result) {
    case FERRY_OK:
        return reply(w, j);
    case FERRY_RETRY:
        if ((size_t)j->attempt <= w->o.nretry)
            return retry_later(w, j);
        return dead_letter(w, j->m, j->tag, j->failure);
    default:
        return dead_letter(w, j->m, j->tag, j->failure);
    }
}

static int attempt_of(const ferry_message *m) {
    int64_t a = 0, b = 0;
    ferry_message_header_int(m, FERRY_H_RETRY_COUNT, &a);
    ferry_message_header_int(m, FERRY_H_ATTEMPT, &b);
    int64_t n = (a > b ? a : b);
    if (n < 0)
        n = 0;
    if (n > 1000000)
        n = 1000000;
    return (int)n + 1;
}

static int schema_ok(ferry_worker *w, const ferry_message *m) {
    if (!w->o.nschema)
        return 1;
    int64_t v;
    if (ferry_event_schema_version(m, &v) < 0)
        return 0;
    for (size_t i = 0; i < w->o.nschema; i++)
        if (w->schemas[i] == v)
            return 1;
    return 0;
}

static int on_delivery(ferry_worker *w, amqp_frame_t *f) {
    amqp_basic_deliver_t *d = f->payload.method.decoded;
    uint64_t tag = d->delivery_tag;
    int redelivered = d->redelivered;
    amqp_bytes_t ex = amqp_bytes_malloc_dup(d->exchange), rk = amqp_bytes_malloc_dup(d->routing_key);
    amqp_message_t msg;
    amqp_rpc_reply_t r = amqp_read_message(w->c->st, FC_CH_CONSUME, &msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        amqp_bytes_free(ex);
        amqp_bytes_free(rk);
        return fc_reply_error(w->c, r, FC_CH_CONSUME, "reading a delivery");
    }
    ferry_message *m = NULL;
    int rc = fm_from_parts(&m, &msg.properties, msg.body, ex, rk, redelivered);
    amqp_destroy_message(&msg);
    amqp_bytes_free(ex);
    amqp_bytes_free(rk);
    if (rc < 0)
        return rc;
    if (w->stopping) {
        amqp_basic_reject(w->c->st, FC_CH_CONSUME, tag, 1);
        ferry_message_free(m);
        return 0;
    }
    if (!schema_ok(w, m)) {
        rc = dead_letter(w, m, tag, "unknown_schema_version");
        ferry_message_free(m);
        return rc;
    }
    ferry_job *j = calloc(1, sizeof *j);
    if (!j) {
        ferry_message_free(m);
        amqp_basic_reject(w->c->st, FC_CH_CONSUME, tag, 1);
        return 0;
    }
    j->w = w;
    j->m = m;
    j->tag = tag;
    j->gen = w->consume_gen;
    j->attempt = attempt_of(m);
    pthread_mutex_lock(&w->mu);
    if (w->todo_tail)
        w->todo_tail->next = j;
    else
        w->todo = j;
    w->todo_tail = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    w->running++;
    return 0;
}

/* Reads and applies every frame that is ready (waiting up to wait_ms for the first). */
static int read_frames(ferry_worker *w, int wait_ms) {
    for (int n = 0; n < 256; n++) {
        amqp_frame_t f;
        struct timeval tv = {n ? 0 : wait_ms / 1000, n ? 0 : (wait_ms % 1000) * 1000};
        int s = amqp_simple_wait_frame_noblock(w->c->st, &f, &tv);
        if (s == AMQP_STATUS_TIMEOUT)
            return 0;
        if (s != AMQP_STATUS_OK)
            return fc_status_error(w->c, s, "reading");
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        int rc = fc_handle_close_frame(w->c, &f);
        if (rc < 0) {
            wlog(w, "broker closed %s: %s", rc == FERRY_ECLOSED ? "the connection" : "a channel",
                 ferry_conn_last_error(w->c));
            return rc;
        }
        switch (f.payload.method.id) {
        case AMQP_BASIC_DELIVER_METHOD:
            if ((rc = on_delivery(w, &f)) < 0)
                return rc;
            break;
        case AMQP_BASIC_ACK_METHOD: {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            on_confirm(w, a->delivery_tag, a->multiple, 1);
            break;
        }
        case AMQP_BASIC_NACK_METHOD: {
            amqp_basic_nack_t *a = f.payload.method.decoded;
            on_confirm(w, a->delivery_tag, a->multiple, 0);
            break;
        }
        case AMQP_BASIC_CANCEL_METHOD: /* the queue was deleted: consume again (redeclared) */
            wlog(w, "the broker cancelled the consumer of %s", w->queue);
            return FERRY_ECLOSED;
        default:
            break;
        }
        if (!amqp_frames_enqueued(w->c->st) && !amqp_data_in_buffer(w->c->st))
            return 0;
    }
    return 0;
}

static void drain_pipe(int fd) {
    char b[256];
    while (read(fd, b, sizeof b) > 0) {
    }
}

/* Unstarted jobs go back to the queue (requeue) when the worker stops. */
static void requeue_unstarted(ferry_worker *w) {
    pthread_mutex_lock(&w->mu);
    ferry_job *j = w->todo;
    w->todo = w->todo_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    while (j) {
        ferry_job *n = j->next;
        if (w->c->st && j->gen == w->consume_gen)
            amqp_basic_reject(w->c->st, FC_CH_CONSUME, j->tag, 1);
        w->running--;
        job_free(j);
        j = n;
    }
}

int ferry_worker_run(ferry_worker *w) {
    if (!w || w->threads)
        return FERRY_EINVAL;
    w->threads = calloc((size_t)w->o.concurrency, sizeof *w->threads);
    if (!w->threads)
        return FERRY_ENOMEM;
    for (int i = 0; i < w->o.concurrency; i++) {
        if (pthread_create(&w->threads[i], NULL, thread_main, w) != 0)
            break;
        w->nthreads++;
    }
    if (w->nthreads == 0)
        return FERRY_ESYS;
    int rc = 0;
    for (;;) {
        if (w->c->st)
            amqp_maybe_release_buffers(w->c->st);
        if (w->stop_flag && !w->stopping) {
            w->stopping = 1;
            wlog(w, "stopping: no new jobs; waiting for %d running", w->running);
            if (w->c->st && w->consume_gen == w->c->generation && w->c->ch_open[FC_CH_CONSUME]) {
                amqp_basic_cancel(w->c->st, FC_CH_CONSUME, amqp_cstring_bytes("ferry-worker"));
                /* cancel-ok comes back through read_frames; deliveries before it are requeued */
            }
            requeue_unstarted(w);
        }
        /* finished jobs */
        pthread_mutex_lock(&w->mu);
        ferry_job *done = w->done;
        w->done = w->done_tail = NULL;
        pthread_mutex_unlock(&w->mu);
        while (done) {
            ferry_job *n = done->next;
            int frc = finish(w, done);
            if (frc < 0 && frc != FERRY_ENOMEM)
                fc_lost(w->c, NULL);
            job_free(done);
            done = n;
        }
        if (w->stopping && w->running == 0 && (w->npend == 0 || !w->c->st))
            break;
        if (!w->c->st) {
            if (w->stopping) { /* nothing left to settle on a lost connection: wait for jobs */
                struct pollfd p = {w->wake[0], POLLIN, 0};
                poll(&p, 1, 200);
                drain_pipe(w->wake[0]);
                continue;
            }
            wlog(w, "connection lost (%s); reconnecting", ferry_conn_last_error(w->c));
            w->npend = 0; /* their originals come back from the broker */
            rc = ferry_conn_reconnect(w->c, ferry_now_ms() + 1000);
            if (rc == 0)
                rc = declare_topology(w);
            if (rc < 0) {
                fc_lost(w->c, NULL);
                drain_pipe(w->wake[0]);
                continue;
            }
            wlog(w, "reconnected");
        }
        if ((rc = setup_channels(w)) < 0) {
            wlog(w, "setting up channels: %s (%s)", ferry_strerror(rc), ferry_conn_last_error(w->c));
            fc_lost(w->c, NULL);
            continue;
        }
        int buffered = amqp_frames_enqueued(w->c->st) || amqp_data_in_buffer(w->c->st);
        struct pollfd p[2] = {{w->wake[0], POLLIN, 0}, {amqp_get_sockfd(w->c->st), POLLIN, 0}};
        int pr = buffered ? 1 : poll(p, 2, 1000);
        if (pr < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            drain_pipe(w->wake[0]);
        if (buffered || p[1].revents) {
            rc = read_frames(w, 0);
            if (rc < 0 && rc != FERRY_ETIMEDOUT && rc != FERRY_ENOMEM)
                fc_lost(w->c, NULL);
        }
    }
    pthread_mutex_lock(&w->mu);
    w->quit_threads = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    w->threads = NULL;
    w->nthreads = 0;
    wlog(w, "stopped");
    return 0;
}

void ferry_worker_free(ferry_worker *w) {
    if (!w)
        return;
    ferry_job *lists[2] = {w->todo, w->done};
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            ferry_job *n = lists[i]->next;
            job_free(lists[i]);
            lists[i] = n;
        }
    ferry_conn_close(w->c);
    if (w->wake[0] >= 0)
        close(w->wake[0]);
    if (w->wake[1] >= 0)
        close(w->wake[1]);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->queue);
    free(w->dlq);
    free(w->queue_type);
    free(w->delays);
    free(w->schemas);
    free(w->pend);
    free(w);
}
