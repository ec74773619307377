/* storeio.c — file I/O for the store, with the power-cut simulation (see storeio.h). */
#include "storeio.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

typedef struct pending {
    struct pending *next;
    uint64_t off;
    size_t n;
    uint8_t data[];
} pending;

struct sio_file {
    int fd;
    pending *head, *tail; /* volatile mode: writes since the last sync, in order */
    sio_file *next_open;
};

static int volatile_mode;
static volatile sig_atomic_t cut_requested;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* volatile mode only */
static sio_file *open_files;

static void on_sigusr2(int sig) {
    (void)sig;
    cut_requested = 1;
}

void sio_init(void) {
    const char *v = getenv("FERRY_IO_VOLATILE");
    volatile_mode = v && *v && strcmp(v, "0") != 0;
    if (volatile_mode) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigusr2;
        sigaction(SIGUSR2, &sa, NULL);
        srand((unsigned)now_us());
        log_warn("storage I/O in volatile test mode: unsynced writes are lost on SIGUSR2");
    }
}

int sio_volatile(void) { return volatile_mode; }

/* The power cut: every file keeps only what was synced, plus perhaps a torn prefix of the
 * writes that were not; then the machine is "off". Called with lock held. */
static void power_cut(void) {
    int tear = rand() % 2;
    for (sio_file *f = open_files; f; f = f->next_open) {
        size_t total = 0;
        for (pending *p = f->head; p; p = p->next)
            total += p->n;
        size_t keep = tear && total ? (size_t)rand() % total : 0;
        for (pending *p = f->head; p && keep; p = p->next) {
            size_t n = p->n < keep ? p->n : keep;
            if (pwrite(f->fd, p->data, n, (off_t)p->off) < 0)
                break;
            keep -= n;
        }
    }
    static const char msg[] = "ferryd: simulated power cut\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
    }
    _exit(SIO_POWERCUT_EXIT);
}

static void maybe_cut(void) {
    if (volatile_mode && cut_requested) {
        pthread_mutex_lock(&lock);
        power_cut();
    }
}

void sio_check_powercut(void) { maybe_cut(); }

sio_file *sio_open(const char *path, int create) {
    maybe_cut();
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0640);
    if (fd < 0)
        return NULL;
    sio_file *f = xcalloc(1, sizeof *f);
    f->fd = fd;
    if (volatile_mode) {
        pthread_mutex_lock(&lock);
        f->next_open = open_files;
        open_files = f;
        pthread_mutex_unlock(&lock);
    }
    return f;
}

static void drop_pending(sio_file *f) {
    while (f->head) {
        pending *p = f->head;
        f->head = p->next;
        free(p);
    }
    f->tail = NULL;
}

void sio_close(sio_file *f) {
    if (!f)
        return;
    if (volatile_mode) {
        pthread_mutex_lock(&lock);
        /* A clean close is not a sync: unsynced writes of a closed file reach the disk only
         * "eventually", which for the simulation means they are applied now. */
        for (pending *p = f->head; p; p = p->next)
            if (pwrite(f->fd, p->data, p->n, (off_t)p->off) < 0)
                break;
        drop_pending(f);
        for (sio_file **pp = &open_files; *pp; pp = &(*pp)->next_open) {
            if (*pp == f) {
                *pp = f->next_open;
                break;
            }
        }
        pthread_mutex_unlock(&lock);
    }
    close(f->fd);
    free(f);
}

int sio_pwrite(sio_file *f, const void *p, size_t n, uint64_t off) {
    maybe_cut();
    if (volatile_mode) {
        pending *w = xmalloc(sizeof *w + n);
        w->next = NULL;
        w->off = off;
        w->n = n;
        memcpy(w->data, p, n);
        pthread_mutex_lock(&lock);
        if (f->tail)
            f->tail->next = w;
        else
            f->head = w;
        f->tail = w;
        pthread_mutex_unlock(&lock);
        return 0;
    }
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = pwrite(f->fd, b, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

ssize_t sio_pread(sio_file *f, void *p, size_t n, uint64_t off) {
    maybe_cut();
    ssize_t r = pread(f->fd, p, n, (off_t)off);
    if (r < 0)
        return -errno;
    if (volatile_mode) { /* overlay the writes not yet on "disk" */
        pthread_mutex_lock(&lock);
        for (pending *w = f->head; w; w = w->next) {
            uint64_t lo = MAX(off, w->off), hi = MIN(off + n, w->off + w->n);
            if (lo < hi) {
                memcpy((uint8_t *)p + (lo - off), w->data + (lo - w->off), hi - lo);
                if ((ssize_t)(hi - off) > r)
                    r = (ssize_t)(hi - off);
            }
        }
        pthread_mutex_unlock(&lock);
    }
    return r;
}

int sio_sync(sio_file *f) {
    maybe_cut();
    if (volatile_mode) {
        pthread_mutex_lock(&lock);
        for (pending *w = f->head; w; w = w->next) {
            if (pwrite(f->fd, w->data, w->n, (off_t)w->off) != (ssize_t)w->n) {
                int e = errno ? errno : EIO;
                pthread_mutex_unlock(&lock);
                return -e;
            }
        }
        drop_pending(f);
        pthread_mutex_unlock(&lock);
    }
    return fdatasync(f->fd) < 0 ? -errno : 0;
}

int sio_truncate(sio_file *f, uint64_t size) {
    maybe_cut();
    if (volatile_mode) {
        pthread_mutex_lock(&lock);
        drop_pending(f); /* truncation follows a failed write: nothing unsynced survives it */
        pthread_mutex_unlock(&lock);
    }
    return ftruncate(f->fd, (off_t)size) < 0 ? -errno : 0;
}

int64_t sio_size(sio_file *f) {
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return -errno;
    int64_t size = st.st_size;
    if (volatile_mode) {
        pthread_mutex_lock(&lock);
        for (pending *w = f->head; w; w = w->next)
            if ((int64_t)(w->off + w->n) > size)
                size = (int64_t)(w->off + w->n);
        pthread_mutex_unlock(&lock);
    }
    return size;
}

int sio_unlink(const char *path) {
    maybe_cut();
    return unlink(path) < 0 ? -errno : 0;
}

int sio_rename(const char *from, const char *to) {
    maybe_cut();
    return rename(from, to) < 0 ? -errno : 0;
}

int sio_sync_dir(const char *dir) {
    maybe_cut();
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}
