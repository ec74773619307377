/* broker.c — the broker as a whole: built-in exchanges, the name maps, the loop batch.
 *
 * Work that benefits from batching is deferred to the end of each loop batch
 * (after_batch): queues marked dirty deliver to their consumers, channels in confirm mode
 * send one (multiple) basic.ack for everything routed in the batch, and every connection
 * with output writes it with one write(). */
#include "broker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "auth.h"
#include "memacct.h"
#include "tls.h"
#include "persist.h"
#include "storeio.h"
#include "util.h"

#define TICK_MS 250
#define DEADLETTER_BUDGET 512 /* dead letters routed per loop turn */ /* heartbeats go out every half interval, so at least 2 ticks per second */

exchange *broker_exchange(vhost *vh, slice name) { return map_get(&vh->exchanges, (const char *)name.p, name.n); }

queue *broker_queue(vhost *vh, slice name) { return map_get(&vh->queues, (const char *)name.p, name.n); }

void broker_add_exchange(exchange *x) { map_put(&x->vh->exchanges, x->name, x->name_len, x); }

void broker_add_queue(queue *q) {
    map_put(&q->vh->queues, q->name, q->name_len, q);
    q->b->cnt.queue_created++;
}

void broker_remove_exchange(exchange *x) {
    if (x->type == EX_DELAYED)
        cron_exchange_removed(x);
    map_del(&x->vh->exchanges, x->name, x->name_len);
    persist_exchange(x->b->store, x, 0);
    exchange_free(x);
}

void broker_remove_queue(queue *q) {
    vhost *vh = q->vh;
    if (map_get(&vh->queues, q->name, q->name_len) == q) {
        map_del(&vh->queues, q->name, q->name_len);
        q->b->cnt.queue_deleted++;
        persist_queue(q->b->store, q, 0);
        queue_unref(q); /* the map's reference */
    }
}

void broker_each_queue(broker *b, void (*fn)(void *ctx, queue *q), void *ctx) {
    size_t i = 0, k;
    map_entry *e, *f;
    while (map_iter(&b->vhosts, &i, &e)) {
        vhost *vh = e->val;
        k = 0;
        while (map_iter(&vh->queues, &k, &f))
            fn(ctx, f->val);
    }
}

void broker_route_add(broker *b, queue *q) {
    if (b->nroute == b->caproute) {
        b->caproute = b->caproute ? b->caproute * 2 : 16;
        b->route_out = xrealloc(b->route_out, b->caproute * sizeof *b->route_out);
    }
    b->route_out[b->nroute++] = q;
}

void broker_random_name(char *out, size_t n) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    uint8_t rnd[64];
    if (n > sizeof rnd)
        n = sizeof rnd;
    if (getrandom(rnd, n, 0) != (ssize_t)n) {
        for (size_t i = 0; i < n; i++)
            rnd[i] = (uint8_t)(now_us() >> (i % 8));
    }
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[rnd[i] & 63];
    out[n] = 0;
}

size_t broker_enqueue_routed(broker *b, message *m, int *rejected) {
    size_t k = 0, ns = 0;
    if (b->nroute > b->scratch_cap) {
        b->scratch_cap = b->nroute * 2;
        b->scratch_qids = xrealloc(b->scratch_qids, b->scratch_cap * sizeof *b->scratch_qids);
        b->scratch_seqs = xrealloc(b->scratch_seqs, b->scratch_cap * sizeof *b->scratch_seqs);
    }
    for (size_t i = 0; i < b->nroute; i++) {
        queue *q = b->route_out[i];
        if (q->is_stream) { /* appended to its own log (stream.c), never queued */
            stream_publish(q, m);
            continue;
        }
        int accepted = queue_accepts(q, m);
        if (accepted < 0) {
            *rejected = 1;
            continue;
        }
        if (accepted > 0) /* a duplicate (x-deduplication-window): confirmed, not stored */
            continue;
        b->route_out[k++] = q;
        if (m->persistent && q->qid && b->store) {
            b->scratch_qids[ns] = q->qid;
            b->scratch_seqs[ns++] = q->next_seq;
        }
    }
    /* One record for the body, naming every durable queue and the place it takes there. */
    if (ns) {
        persist_publish(b->store, m, b->scratch_qids, b->scratch_seqs, (int)ns);
        for (size_t i = 0; i < k; i++)
            if (b->route_out[i]->dedup_window > 0 && b->route_out[i]->qid)
                dedup_stored(b->route_out[i], m->seg);
    }
    for (size_t i = 0; i < k; i++)
        queue_publish(b->route_out[i], m);
    return k;
}

void broker_store_synced(broker *b, uint64_t gen, int ok) {
    channel **pp = &b->store_waiters;
    while (*pp) {
        channel *ch = *pp;
        channel_store_synced(ch, gen, ok);
        if (!ch->ncwait && !ch->tx_wait_gen && ch->wait.kind == CW_NONE) {
            *pp = ch->next_waiter;
            ch->in_waiters = 0;
        } else {
            pp = &ch->next_waiter;
        }
    }
    deadletter_synced(b, gen, ok);
    cron_synced(b, gen, ok);
    stream_synced(b);
    compact_run(b);
}

void broker_meta_synced(broker *b, uint64_t gen, int ok) {
    for (channel *ch = b->store_waiters; ch; ch = ch->next_waiter)
        channel_meta_synced(ch, gen, ok);
}

void broker_paged_in(broker *b, queue *q) {
    for (channel *ch = b->store_waiters; ch; ch = ch->next_waiter)
        channel_paged_in(ch, q);
}

void broker_set_alarm(broker *b, int which, int on) {
    int before = b->alarms;
    b->alarms = on ? (b->alarms | which) : (b->alarms & ~which);
    if (!before == !b->alarms)
        return;
    log_warn("resource alarm %s (%s): publishers are %s", b->alarms ? "set" : "cleared",
             which == ALARM_DISK ? "disk" : "memory", b->alarms ? "blocked" : "unblocked");
    if (which == ALARM_MEMORY && on) { /* what holds the memory, for the operator */
        char parts[512];
        size_t n = 0;
        for (int k = 0; k < MEM_NKINDS && n < sizeof parts; k++)
            n += (size_t)snprintf(parts + n, sizeof parts - n, "%s%s %llu", k ? ", " : "", memacct_name(k),
                                  (unsigned long long)memacct_get(k));
        log_warn("memory: %llu bytes, over the watermark of %llu (%s)", (unsigned long long)memacct_total(),
                 (unsigned long long)b->cfg.memory_high_watermark, parts);
    }
    for (conn *c = b->conns; c; c = c->next)
        conn_set_blocked(c, b->alarms != 0);
}

/* Message memory is over --memory-budget: deep queues move bodies far from their head to
 * the log (queue_page_out), a bounded amount per loop batch, until it is under again. */
static void page_out_one(void *ctx, queue *q) {
    broker *b = ctx;
    if (message_bytes() > b->cfg.memory_budget)
        queue_page_out(q, 16384);
}
static void page_out(broker *b) { broker_each_queue(b, page_out_one, b); }

static int after_batch(void *ud) {
    broker *b = ud;
    /* Connections whose input budget ran out get their next budget, once per batch. */
    if (b->backlog)
        conn_backlog_run(b);
    /* The memory alarm is raised within the batch that crosses the watermark (a flood must
     * not overshoot it by a second of publishes); it is cleared by the tick, at most once a
     * second, so that publishers near the line are not blocked and unblocked every batch. */
    if (memacct_total() > b->cfg.memory_high_watermark)
        broker_set_alarm(b, ALARM_MEMORY, 1);
    /* Flushing can wake consumers (a drained socket) and dispatching can produce output:
     * repeat until nothing is pending, so that no work waits for an unrelated event. Dead
     * letters get a budget per turn (they can make more dead letters); the rest keep the
     * loop from waiting, as the input backlog does. */
    size_t dl_budget = DEADLETTER_BUDGET;
    while ((b->dl_head && dl_budget) || b->dirty || b->confirms || b->flush) {
        store_kick(b->store); /* records of this batch start their fsync at once */
        dl_budget -= deadletter_flush(b, dl_budget);
        while (b->dirty) {
            queue *q = b->dirty;
            b->dirty = q->next_dirty;
            q->dirty = 0;
            if (!q->deleted)
                queue_dispatch(q);
            queue_unref(q);
        }
        while (b->confirms) {
            channel *ch = b->confirms;
            b->confirms = ch->next_confirm;
            ch->in_confirms = 0;
            channel_send_confirms(ch);
        }
        while (b->flush) {
            conn *c = b->flush;
            b->flush = c->next_flush;
            conn_flush(c);
        }
    }
    if (message_bytes() > b->cfg.memory_budget)
        page_out(b);
    store_kick(b->store);
    while (b->dead) {
        conn *c = b->dead;
        b->dead = c->next_dead;
        conn_free(c);
    }
    if (b->stopping)
        loop_stop(b->loop);
    return b->backlog != NULL || b->dl_head != NULL;
}

static void tick(loop_timer *t) {
    broker *b = (broker *)((char *)t - offsetof(broker, tick));
    uint64_t now = loop_now_ms(b->loop);
    for (conn *c = b->conns, *next; c; c = next) {
        next = c->next;
        conn_tick(c, now);
    }
    sio_check_powercut();
    if (++b->ticks % 4 == 0) { /* once a second */
        broker_set_alarm(b, ALARM_DISK, store_tick(b->store));
        compact_run(b);
        stream_tick(b);
        broker_set_alarm(b, ALARM_MEMORY, memacct_total() > b->cfg.memory_high_watermark);
    }
    loop_timer_arm(b->loop, &b->tick, now + TICK_MS);
}

static void on_signal(io_handler *h, uint32_t events) {
    (void)events;
    broker *b = (broker *)((char *)h - offsetof(broker, sig_io));
    struct signalfd_siginfo si;
    if (read(b->sig_fd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGHUP) { /* reload the TLS certificate and key for new connections */
            char err[1500];
            if (!b->tls)
                log_info("received SIGHUP: no TLS certificate to reload");
            else if (tls_server_reload(b->tls, err, sizeof err) < 0)
                log_error("received SIGHUP: TLS reload failed, the old certificate stays: %s", err);
            else
                log_info("received SIGHUP: TLS certificate and key reloaded (%s); new connections get them",
                         b->cfg.tls_cert);
            return;
        }
        log_info("received signal %u, shutting down", si.ssi_signo);
        b->stopping = 1;
    }
}

/* ---- recovery: the store hands back what it finds (recover.h); the broker builds its
 * objects and is the one writer of its name maps ---- */

/* A durable exchange from meta.log (an unknown type, or a name already taken, is skipped). */
static void rec_exchange(void *ctx, slice vhname, slice name, uint8_t type, uint8_t flags, slice args) {
    broker *b = ctx;
    vhost *vh = vhost_get(b, vhname);
    if (type > EX_DELAYED || broker_exchange(vh, name))
        return;
    exchange *x = exchange_new(vh, name, type, flags & 1, (flags >> 1) & 1, (flags >> 2) & 1, args);
    fval dt;
    int sub;
    if (type == EX_DELAYED && table_get(args, "x-delayed-type", &dt) && fval_is_str(&dt) &&
        exchange_type_parse(dt.s, &sub) == 0 && sub != EX_DELAYED)
        x->subtype = sub; /* as exchange.declare set it */
    broker_add_exchange(x);
}

static void rec_exchange_delete(void *ctx, slice vhname, slice name) {
    broker *b = ctx;
    vhost *vh = vhost_find(b, vhname);
    exchange *x = vh ? broker_exchange(vh, name) : NULL;
    if (x && !x->builtin)
        broker_remove_exchange(x);
}

/* A durable queue from meta.log; a later definition of the same name replaces the earlier. */
static void rec_queue(void *ctx, uint32_t qid, slice vhname, slice name, uint8_t flags, slice args) {
    broker *b = ctx;
    vhost *vh = vhost_get(b, vhname);
    queue *old = broker_queue(vh, name);
    if (old)
        queue_delete(old);
    queue *q = queue_new(vh, name, 1, 0, flags & 1, NULL, args);
    q->qid = qid;
    broker_add_queue(q);
}

struct qid_find {
    uint32_t qid;
    queue *q;
};
static void find_qid(void *ctx, queue *q) {
    struct qid_find *f = ctx;
    if (q->qid == f->qid)
        f->q = q;
}

static void rec_queue_delete(void *ctx, uint32_t qid) {
    broker *b = ctx;
    struct qid_find f = {qid, NULL};
    broker_each_queue(b, find_qid, &f);
    if (f.q)
        queue_delete(f.q);
}

static void rec_binding(void *ctx, int add, slice vhname, slice src, int to_exchange, slice dst, slice key,
                        slice args) {
    broker *b = ctx;
    vhost *vh = vhost_find(b, vhname);
    if (!vh)
        return;
    exchange *x = broker_exchange(vh, src);
    queue *q = to_exchange ? NULL : broker_queue(vh, dst);
    exchange *dx = to_exchange ? broker_exchange(vh, dst) : NULL;
    if (!x || (!q && !dx))
        return;
    binding *bd = binding_find(x, q, dx, key, args);
    if (add && !bd)
        binding_add(x, q, dx, key, args);
    else if (!add && bd)
        binding_remove(bd);
}

struct rec_add {
    void (*add)(void *rc, const rqueue *info);
    void *rc;
};
static void rec_queue_add(void *ctx, queue *q) {
    struct rec_add *ra = ctx;
    if (q->qid)
        ra->add(ra->rc, &(rqueue){q->qid, q, q->dedup_window, q->max_bytes < 0});
}

static void rec_queues(void *ctx, void (*add)(void *rc, const rqueue *info), void *rc) {
    struct rec_add ra = {add, rc};
    broker_each_queue(ctx, rec_queue_add, &ra);
}

static void rec_dedup(void *ctx, void *q, const message *m, uint64_t at, uint32_t seg) {
    (void)ctx;
    dedup_restore(q, m, at, seg);
}

/* A recovered copy goes to the end of its queue, its TTL counted from its publish time. */
static void rec_copy(void *ctx, void *qp, const rcopy *c) {
    (void)ctx;
    queue *q = qp;
    uint64_t now_wall = wall_ms(), now_mono = now_ms();
    /* expires_at holds the publish time (wall ms) until the TTL is known */
    qmsg qm = {.seq = c->seq, .expires_at = c->published, .stored = 1, .deliveries = c->deliveries};
    if (c->m) {
        qm.m = c->m; /* takes the reference */
    } else {
        qm.loc = c->loc;
        qm.paged = PAGED_OUT;
        qm.pg_size = pg_size_encode(c->reclen);
        qm.returns = c->priority; /* its level, until the queue takes it (queue_recover) */
    }
    qstats_recovered(q, c->seq, c->published);
    int64_t ttl = q->message_ttl, mttl = qm.paged ? -1 : qm.m->ttl;
    if (mttl >= 0 && (ttl < 0 || mttl < ttl))
        ttl = mttl;
    if (ttl >= 0) {
        uint64_t due = qm.expires_at + (uint64_t)ttl;
        qm.expires_at = due > now_wall ? now_mono + (due - now_wall) : 1;
    } else {
        qm.expires_at = 0;
    }
    /* Each delivery before the restart ended in a return (explicit, or the crash). */
    if (q->delivery_limit >= 0)
        qm.returns = qm.deliveries;
    if (c->maybe_delivered && !qm.deliveries) /* after a crash: redelivered, not a return */
        qm.deliveries = 1;
    queue_recover(q, qm);
}

static void rec_next_seq(void *ctx, void *qp, uint64_t next) {
    (void)ctx;
    queue *q = qp;
    q->next_seq = MAX(q->next_seq, next);
}

static int rec_delayed(void *ctx, uint64_t sid, uint64_t due, slice vhname, slice xname, void *qp, message *m,
                       uint32_t seg) {
    broker *b = ctx;
    vhost *vh = vhname.n ? vhost_find(b, vhname) : b->vh_default;
    exchange *x = xname.p && vh ? broker_exchange(vh, xname) : NULL;
    queue *q = xname.p ? NULL : qp;
    if (!x && !q)
        return 0;
    if (q)
        q->refs++;
    delayed_restore(b, (delayed_entry){due, 0, m, x, q, sid, seg});
    return 1;
}

static const recover_sink broker_recovery = {
    .defs = {rec_exchange, rec_exchange_delete, rec_queue, rec_queue_delete, rec_binding, access_recover, cron_recover},
    .queues = rec_queues,
    .dedup = rec_dedup,
    .copy = rec_copy,
    .next_seq = rec_next_seq,
    .delayed = rec_delayed,
};

int broker_init(broker *b, const config *cfg) {
    memset(b, 0, sizeof *b);
    b->cfg = *cfg;
    /* Block the signals we read from a signalfd before any thread starts (the store's
     * writer inherits the mask), so that only the loop ever sees them. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    b->sig_fd = -1;
    b->loop = loop_new();
    if (!b->loop)
        return -1;
    map_init(&b->vhosts);
    map_init(&b->reply_to);
    b->access = xcalloc(1, sizeof *b->access);
    access_init(b->access);
    b->access->rabbit_hashes = cfg->rabbit_password_hashes;
    b->vh_default = vhost_get(b, slice_str("/"));
    char err[1500];
    if (cfg->tls_cert[0]) { /* before recovery, so a bad certificate is reported at once */
        b->tls = tls_server_new(cfg->tls_cert, cfg->tls_key, cfg->tls_ca, cfg->tls_verify, err, sizeof err);
        if (!b->tls) {
            log_error("TLS: %s", err);
            return -1;
        }
    }
    if (persist_open(b, &broker_recovery, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    stream_recover_all(b);
    if (access_setup(b, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    cron_start(b);
    if (access_start(b->access, b->loop) != 0) {
        log_error("cannot start the password-check thread");
        return -1;
    }
    for (int t = 0; t < (b->tls ? 2 : 1); t++) {
        int port = t ? cfg->tls_port : cfg->port;
        for (int i = 0; i < cfg->nbind; i++) {
            if (listener_open(b, cfg->bind[i], port, t) < 0) {
                log_error("cannot listen on %s %sport %d: %s", cfg->bind[i], t ? "tls-" : "", port, strerror(errno));
                return -1;
            }
            log_info("listening for AMQP 0-9-1%s on %s%s%s:%d", t ? " over TLS (amqps)" : "",
                     strchr(cfg->bind[i], ':') ? "[" : "", cfg->bind[i], strchr(cfg->bind[i], ':') ? "]" : "", port);
        }
    }
    b->sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    b->sig_io.fn = on_signal;
    loop_add(b->loop, b->sig_fd, EPOLLIN, &b->sig_io);
    signal(SIGPIPE, SIG_IGN);
    b->tick.fn = tick;
    loop_timer_arm(b->loop, &b->tick, now_ms() + TICK_MS);
    loop_set_after_batch(b->loop, after_batch, b);
    return 0;
}

void broker_run(broker *b) { loop_run(b->loop); }

/* Closes every connection (320 CONNECTION_FORCED, as RabbitMQ on shutdown) and frees
 * everything, so that LeakSanitizer sees a clean exit. */
void broker_shutdown(broker *b) {
    for (conn *c = b->conns; c; c = c->next) {
        if (c->state == CONN_OPENED)
            conn_close_error(c, CONNECTION_FORCED, 0, "broker forced connection closure with reason 'shutdown'");
        conn_flush(c);
    }
    while (b->conns)
        conn_destroy(b->conns);
    after_batch(b);
    deadletter_drop_pending(b);
    deadletter_settle_all(b);
    cron_shutdown(b);
    stream_shutdown(b); /* named offsets saved with the last batch */
    /* Write what is pending; from here on, tearing down memory is not a deletion. */
    persist_close(b);
    vhost_free_all(b);
    after_batch(b);
    deadletter_drop_pending(b);
    delayed_free(b);
    cron_free(b);
    vhost_free_exchanges(b);
    map_free(&b->reply_to);
    if (b->access) {
        access_free(b->access);
        free(b->access);
        b->access = NULL;
    }
    for (int k = 0; k < b->nlisten; k++) {
        close(b->listen_fds[k]);
        free(b->listen_io[k]);
    }
    if (b->sig_fd >= 0)
        close(b->sig_fd);
    tls_server_free(b->tls);
    b->tls = NULL;
    free(b->route_out);
    free(b->route_xs);
    free(b->scratch_qids);
    free(b->scratch_seqs);
    loop_free(b->loop);
}
