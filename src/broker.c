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

#include "util.h"

#define TICK_MS 250 /* heartbeats go out every half interval, so at least 2 ticks per second */

exchange *broker_exchange(broker *b, slice name) { return map_get(&b->exchanges, (const char *)name.p, name.n); }

queue *broker_queue(broker *b, slice name) { return map_get(&b->queues, (const char *)name.p, name.n); }

void broker_remove_exchange(broker *b, exchange *x) {
    map_del(&b->exchanges, x->name, x->name_len);
    exchange_free(x);
}

void broker_remove_queue(broker *b, queue *q) {
    if (map_get(&b->queues, q->name, q->name_len) == q) {
        map_del(&b->queues, q->name, q->name_len);
        queue_unref(q); /* the map's reference */
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

static void add_builtin(broker *b, const char *name, int type) {
    exchange *x = exchange_new(b, slice_str(name), type, 1, 0, 0, (slice){NULL, 0});
    x->builtin = 1;
    map_put(&b->exchanges, x->name, x->name_len, x);
}

static void after_batch(void *ud) {
    broker *b = ud;
    /* Flushing can wake consumers (a drained socket) and dispatching can produce output:
     * repeat until nothing is pending, so that no work waits for an unrelated event. */
    while (b->dl_head || b->dirty || b->confirms || b->flush) {
        deadletter_flush(b);
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
    while (b->dead) {
        conn *c = b->dead;
        b->dead = c->next_dead;
        conn_free(c);
    }
    if (b->stopping)
        loop_stop(b->loop);
}

static void tick(loop_timer *t) {
    broker *b = (broker *)((char *)t - offsetof(broker, tick));
    uint64_t now = loop_now_ms(b->loop);
    for (conn *c = b->conns, *next; c; c = next) {
        next = c->next;
        conn_tick(c, now);
    }
    loop_timer_arm(b->loop, &b->tick, now + TICK_MS);
}

static void on_signal(io_handler *h, uint32_t events) {
    (void)events;
    broker *b = (broker *)((char *)h - offsetof(broker, sig_io));
    struct signalfd_siginfo si;
    if (read(b->sig_fd, &si, sizeof si) == sizeof si) {
        log_info("received signal %u, shutting down", si.ssi_signo);
        b->stopping = 1;
    }
}

int broker_init(broker *b, const config *cfg) {
    memset(b, 0, sizeof *b);
    b->cfg = *cfg;
    b->sig_fd = -1;
    b->loop = loop_new();
    if (!b->loop)
        return -1;
    map_init(&b->exchanges);
    map_init(&b->queues);
    map_init(&b->reply_to);
    /* The default exchange and the amq.* exchanges exist in every vhost (spec 3.1.3). */
    add_builtin(b, "", EX_DIRECT);
    add_builtin(b, "amq.direct", EX_DIRECT);
    add_builtin(b, "amq.fanout", EX_FANOUT);
    add_builtin(b, "amq.topic", EX_TOPIC);
    add_builtin(b, "amq.headers", EX_HEADERS);
    add_builtin(b, "amq.match", EX_HEADERS);
    for (int i = 0; i < cfg->nbind; i++) {
        if (listener_open(b, cfg->bind[i], cfg->port) < 0) {
            log_error("cannot listen on %s port %d: %s", cfg->bind[i], cfg->port, strerror(errno));
            return -1;
        }
        log_info("listening for AMQP 0-9-1 on %s%s%s:%d", strchr(cfg->bind[i], ':') ? "[" : "", cfg->bind[i],
                 strchr(cfg->bind[i], ':') ? "]" : "", cfg->port);
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
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
    size_t i = 0;
    map_entry *e;
    while (map_iter(&b->queues, &i, &e))
        queue_delete(e->val);
    after_batch(b);
    delayed_free(b);
    i = 0;
    while (map_iter(&b->exchanges, &i, &e))
        exchange_free(e->val);
    map_free(&b->exchanges);
    map_free(&b->queues);
    map_free(&b->reply_to);
    for (int k = 0; k < b->nlisten; k++) {
        close(b->listen_fds[k]);
        free(b->listen_io[k]);
    }
    if (b->sig_fd >= 0)
        close(b->sig_fd);
    free(b->route_out);
    loop_free(b->loop);
}
