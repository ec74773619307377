/* loop.h — the event loop (Redis's ae.c in spirit): epoll for sockets, a binary heap of
 * timers, and an after-batch hook. One thread runs it and owns all broker state. */
#ifndef FERRY_LOOP_H
#define FERRY_LOOP_H

#include <stddef.h>
#include <stdint.h>

typedef struct loop loop;

/* Embed an io_handler in whatever owns a file descriptor; the loop calls fn with the
 * epoll event bits when the descriptor is ready. */
typedef struct io_handler {
    void (*fn)(struct io_handler *h, uint32_t events);
} io_handler;

/* Embed a timer in its owner. A timer is armed at most once; arming it again moves it. */
typedef struct loop_timer {
    uint64_t due_ms;
    size_t slot; /* heap index + 1; 0 when not armed */
    void (*fn)(struct loop_timer *t);
} loop_timer;

loop *loop_new(void);
void loop_free(loop *l);
int loop_add(loop *l, int fd, uint32_t events, io_handler *h);
int loop_mod(loop *l, int fd, uint32_t events, io_handler *h);
void loop_del(loop *l, int fd);
void loop_timer_arm(loop *l, loop_timer *t, uint64_t due_ms);
void loop_timer_cancel(loop *l, loop_timer *t);
/* Called after every batch of ready events and timers: where deferred work (dispatching
 * queues, flushing sockets, sending confirms) happens once per batch. It returns nonzero
 * when work is left for the next batch (buffered input beyond a connection's budget): the
 * loop then polls without waiting. */
void loop_set_after_batch(loop *l, int (*fn)(void *ud), void *ud);
/* Runs until loop_stop(). */
void loop_run(loop *l);
/* One turn: waits at most timeout_ms (-1: until the next timer) for events, handles them,
 * the due timers and the after-batch hook. -1 if epoll_wait failed. */
int loop_step(loop *l, int timeout_ms);
void loop_stop(loop *l);
/* The loop's cached clock, refreshed once per batch (cheap to read on hot paths). */
uint64_t loop_now_ms(loop *l);
/* The wall clock (ms since the epoch) at the cached time: the monotonic one plus an offset read
 * again once a second (a clock_gettime per publish and queue was 5% of row 4's broker time). */
uint64_t loop_wall_ms(loop *l);

#endif
