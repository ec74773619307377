/* loop.c — epoll event loop with a timer heap (see loop.h). */
#include "loop.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "util.h"

#define MAX_EVENTS 256

struct loop {
    int epfd;
    int stop;
    uint64_t now;
    uint64_t wall_off, wall_at; /* wall clock - now, as read at now = wall_at */
    loop_timer **heap;
    size_t nheap, capheap;
    int (*after)(void *ud);
    void *after_ud;
    int pending; /* the after-batch hook left work for the next batch */
};

loop *loop_new(void) {
    loop *l = xcalloc(1, sizeof *l);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        free(l);
        return NULL;
    }
    l->now = now_ms();
    l->wall_at = l->now;
    l->wall_off = wall_ms() - l->now;
    return l;
}

void loop_free(loop *l) {
    if (!l)
        return;
    close(l->epfd);
    free(l->heap);
    free(l);
}

int loop_add(loop *l, int fd, uint32_t events, io_handler *h) {
    struct epoll_event ev = {.events = events, .data.ptr = h};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int loop_mod(loop *l, int fd, uint32_t events, io_handler *h) {
    struct epoll_event ev = {.events = events, .data.ptr = h};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void loop_del(loop *l, int fd) { epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL); }

/* ---- timer heap (min-heap on due_ms; slot = index + 1) ---- */

static void heap_set(loop *l, size_t i, loop_timer *t) {
    assert(i < l->capheap);
    l->heap[i] = t;
    t->slot = i + 1;
}

static void sift_up(loop *l, size_t i) {
    loop_timer *t = l->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->due_ms <= t->due_ms)
            break;
        heap_set(l, i, l->heap[p]);
        i = p;
    }
    heap_set(l, i, t);
}

static void sift_down(loop *l, size_t i) {
    loop_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && l->heap[c + 1]->due_ms < l->heap[c]->due_ms)
            c++;
        if (l->heap[c]->due_ms >= t->due_ms)
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

void loop_timer_cancel(loop *l, loop_timer *t) {
    if (!t->slot)
        return;
    assert(t->slot <= l->nheap && l->heap[t->slot - 1] == t); /* armed on this loop */
    size_t i = t->slot - 1;
    t->slot = 0;
    l->nheap--;
    if (i == l->nheap)
        return;
    heap_set(l, i, l->heap[l->nheap]);
    sift_down(l, i);
    sift_up(l, i);
}

void loop_timer_arm(loop *l, loop_timer *t, uint64_t due_ms) {
    assert(t->fn != NULL);
    loop_timer_cancel(l, t);
    t->due_ms = due_ms;
    if (l->nheap == l->capheap) {
        l->capheap = l->capheap ? l->capheap * 2 : 64;
        l->heap = xrealloc(l->heap, l->capheap * sizeof *l->heap);
    }
    heap_set(l, l->nheap++, t);
    sift_up(l, l->nheap - 1);
}

void loop_set_after_batch(loop *l, int (*fn)(void *ud), void *ud) {
    l->after = fn;
    l->after_ud = ud;
}

void loop_stop(loop *l) { l->stop = 1; }

uint64_t loop_now_ms(loop *l) { return l->now; }

uint64_t loop_wall_ms(loop *l) {
    if (l->now - l->wall_at >= 1000) { /* (a step of the wall clock shows within a second) */
        l->wall_at = l->now;
        l->wall_off = wall_ms() - l->now;
    }
    return l->now + l->wall_off;
}

static void run_timers(loop *l) {
    while (l->nheap && l->heap[0]->due_ms <= l->now) {
        loop_timer *t = l->heap[0];
        assert(t->slot == 1 && (l->nheap < 2 || l->heap[1]->due_ms >= t->due_ms)); /* min-heap */
        loop_timer_cancel(l, t);
        t->fn(t);
    }
}

/* One turn of the loop: waits up to timeout_ms (-1: until the next timer is due) for
 * events, handles them, then the due timers and the after-batch hook. Returns -1 if
 * epoll_wait failed. loop_run is this in a loop; the in-process fuzz target
 * (fuzz/fuzz_conn.c) steps it itself. */
int loop_step(loop *l, int timeout_ms) {
    struct epoll_event evs[MAX_EVENTS];
    int timeout = timeout_ms;
    if (l->pending) {
        timeout = 0;
    } else if (l->nheap) {
        uint64_t due = l->heap[0]->due_ms;
        int t = due <= l->now ? 0 : (int)MIN(due - l->now, 60000);
        if (timeout < 0 || t < timeout)
            timeout = t;
    }
    int n = epoll_wait(l->epfd, evs, MAX_EVENTS, timeout);
    if (n < 0 && errno != EINTR) {
        log_error("epoll_wait: %s", strerror(errno));
        return -1;
    }
    l->now = now_ms();
    for (int i = 0; i < n; i++) {
        io_handler *h = evs[i].data.ptr;
        h->fn(h, evs[i].events);
    }
    run_timers(l);
    l->pending = l->after ? l->after(l->after_ud) : 0;
    return 0;
}

void loop_run(loop *l) {
    while (!l->stop)
        if (loop_step(l, -1) < 0)
            break;
}
