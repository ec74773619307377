/* storeio.c — file I/O for the store, with the power-cut simulation and the injected faults
 * (see storeio.h for what each test mode does and how it is configured).
 *
 * Without a test mode every call goes straight to the system. In a test mode ("tracking")
 * one mutex guards the simulated state: for each file, the writes since its last sync (held
 * in memory, applied to the real file only when synced); and a journal of the directory
 * operations not yet made durable, each undoable (an unlinked or replaced file is kept under
 * a hidden name until its directory is synced). The real files are the "disk": what is in
 * them survives a simulated power cut; what is only in this process's memory does not. */
#include "storeio.h"

#include <dirent.h>
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
    int closed;           /* closed by the store, kept here while it has unsynced writes */
    pending *head, *tail; /* tracking: writes since the last sync, in order */
    sio_file *next_open;
};

/* A directory operation not yet made durable by an fsync of its directory. */
enum { MOP_CREATE, MOP_RENAME, MOP_UNLINK, MOP_MKDIR };
typedef struct mop {
    struct mop *next; /* oldest first */
    int kind;
    dev_t dev; /* the directory whose fsync makes it durable */
    ino_t ino;
    char *path;   /* created / renamed-to / unlinked / made */
    char *from;   /* rename: the old name */
    char *backup; /* unlink: the file, still; rename: the file it replaced (or NULL) */
} mop;

/* Operations that faults can be injected into (bits, for a rule's op set). */
enum { OP_OPEN = 1, OP_WRITE = 2, OP_SYNC = 4, OP_DIRSYNC = 8, OP_RENAME = 16, OP_UNLINK = 32,
       OP_TRUNCATE = 64, OP_MKDIR = 128, OP_READ = 256, OP_ANY = 511 };
static const struct {
    const char *name;
    unsigned op;
} op_names[] = {{"open", OP_OPEN},         {"write", OP_WRITE},   {"pwrite", OP_WRITE}, {"fdatasync", OP_SYNC},
                {"dirsync", OP_DIRSYNC},   {"rename", OP_RENAME}, {"unlink", OP_UNLINK}, {"truncate", OP_TRUNCATE},
                {"mkdir", OP_MKDIR},       {"read", OP_READ},     {"any", OP_ANY}};

typedef struct rule {
    unsigned ops;
    uint64_t nth;   /* 0: use p */
    double p;
    uint64_t max;   /* 0: no limit */
    int err;        /* 0: any of EIO, ENOSPC, EMFILE */
    int short_write;
    int cut;
    unsigned delay_ms; /* not an error: the call takes this much longer (a slow disk) */
    uint64_t calls, fired;
} rule;

#define MAX_RULES 16

static int tracking;      /* FERRY_IO_VOLATILE or FERRY_IO_FAULTS */
static volatile sig_atomic_t cut_requested;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* tracking only: everything below */
static sio_file *open_files;
static mop *mops, *mops_tail;
static uint64_t rng_state;
static size_t sector = 512;
static int keep_mode = -1; /* FERRY_IO_KEEP: what lost writes keep (-1: chosen at random) */
static rule rules[MAX_RULES];
static int nrules;
static uint64_t injected; /* faults injected so far */
static uint64_t backups;  /* names handed out for hidden backups */
static _Thread_local unsigned delay_due; /* ms this thread sleeps once it lets go of the lock */

/* ---- randomness (seeded, so a run can be replayed) ---- */

static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static double rnd01(void) { return (double)(rnd() >> 11) / (double)(1ULL << 53); }

/* ---- configuration ---- */

static void on_sigusr2(int sig) {
    (void)sig;
    cut_requested = 1;
}

static int parse_err(const char *v) {
    if (!strcmp(v, "EIO"))
        return EIO;
    if (!strcmp(v, "ENOSPC"))
        return ENOSPC;
    if (!strcmp(v, "EMFILE"))
        return EMFILE;
    if (!strcmp(v, "EDQUOT"))
        return EDQUOT;
    if (!strcmp(v, "any"))
        return 0;
    return -1;
}

/* Parses one rule ("op=fdatasync,nth=37,err=EIO"); 0, or -1 if it is malformed. */
static int parse_rule(char *text, rule *r) {
    memset(r, 0, sizeof *r);
    r->ops = OP_ANY;
    r->err = EIO;
    char *save = NULL;
    for (char *kv = strtok_r(text, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        char *v = eq ? eq + 1 : NULL;
        if (eq)
            *eq = 0;
        if (!strcmp(kv, "short") && !v) {
            r->short_write = 1;
        } else if (!strcmp(kv, "cut") && !v) {
            r->cut = 1;
        } else if (!strcmp(kv, "op") && v) {
            r->ops = 0;
            char *s2 = NULL;
            for (char *o = strtok_r(v, "|", &s2); o; o = strtok_r(NULL, "|", &s2)) {
                size_t i = 0;
                while (i < ARRAY_LEN(op_names) && strcmp(op_names[i].name, o) != 0)
                    i++;
                if (i == ARRAY_LEN(op_names))
                    return -1;
                r->ops |= op_names[i].op;
            }
        } else if (!strcmp(kv, "nth") && v) {
            r->nth = strtoull(v, NULL, 10);
            if (!r->nth)
                return -1;
        } else if (!strcmp(kv, "p") && v) {
            r->p = strtod(v, NULL);
            if (!(r->p > 0 && r->p <= 1))
                return -1;
        } else if (!strcmp(kv, "delay") && v) {
            r->delay_ms = (unsigned)strtoul(v, NULL, 10);
        } else if (!strcmp(kv, "max") && v) {
            r->max = strtoull(v, NULL, 10);
        } else if (!strcmp(kv, "err") && v) {
            if ((r->err = parse_err(v)) < 0)
                return -1;
        } else {
            return -1;
        }
    }
    return r->ops && (r->nth || r->p > 0) ? 0 : -1;
}

int sio_init(void) {
    const char *v = getenv("FERRY_IO_VOLATILE"), *faults = getenv("FERRY_IO_FAULTS");
    const char *seed_s = getenv("FERRY_IO_SEED"), *sector_s = getenv("FERRY_IO_SECTOR");
    const char *keep_s = getenv("FERRY_IO_KEEP");
    int vol = v && *v && strcmp(v, "0") != 0;
    if (faults && *faults) {
        char *all = xstrndup(faults, strlen(faults)), *save = NULL;
        for (char *t = strtok_r(all, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
            char copy[256];
            snprintf(copy, sizeof copy, "%s", t);
            if (nrules == MAX_RULES || parse_rule(t, &rules[nrules]) < 0) {
                log_error("FERRY_IO_FAULTS: bad rule '%s' (see storeio.h: op=,nth=|p=,max=,err=,short,cut)", copy);
                free(all);
                return -1;
            }
            nrules++;
        }
        free(all);
    }
    tracking = vol || nrules > 0;
    if (!tracking)
        return 0;
    uint64_t seed = seed_s && *seed_s ? strtoull(seed_s, NULL, 10) : (now_us() ^ (uint64_t)getpid() << 32);
    rng_state = seed ? seed : 1;
    if (sector_s && *sector_s) {
        long n = strtol(sector_s, NULL, 10);
        if (n < 1 || n > (1 << 20)) {
            log_error("FERRY_IO_SECTOR: bad sector size '%s'", sector_s);
            return -1;
        }
        sector = (size_t)n;
    }
    if (keep_s && *keep_s) {
        static const char *modes[] = {"none", "all", "sectors", "prefix", "last"};
        for (int i = 0; i < 5; i++)
            if (!strcmp(keep_s, modes[i]))
                keep_mode = i;
        if (keep_mode < 0) {
            log_error("FERRY_IO_KEEP: '%s' is not none, all, sectors, prefix or last", keep_s);
            return -1;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr2;
    sigaction(SIGUSR2, &sa, NULL);
    log_warn("storage I/O in test mode: unsynced writes and directory operations are lost on SIGUSR2%s%s "
             "(FERRY_IO_SEED=%llu, %zu-byte sectors)",
             nrules ? "; injected faults: " : "", nrules ? faults : "", (unsigned long long)seed, sector);
    return 0;
}

int sio_volatile(void) { return tracking; }

/* ---- the simulated disk ---- */

static void drop_pending(sio_file *f) {
    while (f->head) {
        pending *p = f->head;
        f->head = p->next;
        free(p);
    }
    f->tail = NULL;
}

/* Puts the sectors of one unsynced write that a mode keeps into the real file: mode 0 none,
 * 1 all, 2 each sector with probability q. *budget (mode 3) keeps an in-order prefix. */
static void apply_write(int fd, const pending *p, int mode, double q, size_t *budget) {
    if (mode == 0)
        return;
    if (mode == 1 || mode == 3) {
        size_t n = mode == 1 ? p->n : MIN(p->n, *budget);
        if (mode == 3)
            *budget -= n;
        if (n && pwrite(fd, p->data, n, (off_t)p->off) < 0) {
        }
        return;
    }
    uint64_t at = p->off, end = p->off + p->n;
    while (at < end) {
        uint64_t next = MIN(end, (at / sector + 1) * sector);
        if (rnd01() < q && pwrite(fd, p->data + (at - p->off), next - at, (off_t)at) < 0) {
        }
        at = next;
    }
}

/* What is left of a file's unsynced writes when they are lost (power cut, failed sync):
 * nothing, all of them, sectors at random, an in-order prefix, or only the last sector (the
 * newest bytes on disk, everything before them lost: what an in-order log must survive). */
static void lose_pending(sio_file *f) {
    int mode = keep_mode >= 0 ? keep_mode : (int)(rnd() % 5);
    double q = rnd01();
    size_t total = 0;
    uint64_t end = 0;
    for (pending *p = f->head; p; p = p->next) {
        total += p->n;
        end = MAX(end, p->off + p->n);
    }
    if (mode == 4) { /* the last sector: the parts of the writes that fall in it, in order */
        uint64_t lo = end ? (end - 1) / sector * sector : 0;
        for (pending *p = f->head; p; p = p->next) {
            uint64_t a = MAX(lo, p->off), b = p->off + p->n;
            if (a < b && pwrite(f->fd, p->data + (a - p->off), b - a, (off_t)a) < 0) {
            }
        }
        drop_pending(f);
        return;
    }
    size_t budget = total ? (size_t)(rnd() % (total + 1)) : 0;
    for (pending *p = f->head; p; p = p->next)
        apply_write(f->fd, p, mode, q, &budget);
    drop_pending(f);
}

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(sub);
        else
            unlink(sub);
    }
    if (d)
        closedir(d);
    rmdir(path);
}

static void undo(const mop *m) {
    switch (m->kind) {
    case MOP_CREATE:
        unlink(m->path);
        break;
    case MOP_MKDIR:
        remove_tree(m->path);
        break;
    case MOP_RENAME:
        if (rename(m->path, m->from) == 0 && m->backup && rename(m->backup, m->path) < 0) {
        }
        break;
    case MOP_UNLINK:
        if (rename(m->backup, m->path) < 0) {
        }
        break;
    }
}

static void mop_free(mop *m) {
    free(m->path);
    free(m->from);
    free(m->backup);
    free(m);
}

/* The power cut: each file keeps what was synced plus what lose_pending leaves of the rest;
 * the directory operations after an in-order prefix of the undurable ones are undone,
 * newest first. Then the machine is "off". Called with lock held. */
static void power_cut(void) {
    for (sio_file *f = open_files; f; f = f->next_open)
        lose_pending(f);
    size_t n = 0;
    for (mop *m = mops; m; m = m->next)
        n++;
    size_t keep = (size_t)(rnd() % (n + 1)), i = 0;
    mop **undone = xcalloc(n + 1, sizeof *undone);
    for (mop *m = mops; m; m = m->next, i++) {
        if (i < keep) {
            if (m->backup)
                unlink(m->backup);
        } else {
            undone[i - keep] = m;
        }
    }
    for (size_t k = n - keep; k > 0; k--)
        undo(undone[k - 1]);
    char msg[160];
    int len = snprintf(msg, sizeof msg,
                       "ferryd: simulated power cut (%zu of %zu undurable directory operations undone)\n", n - keep, n);
    if (write(2, msg, (size_t)len) < 0) {
    }
    _exit(SIO_POWERCUT_EXIT);
}

/* Called with lock held at the start of every operation in a test mode. */
static void check_cut(void) {
    if (cut_requested)
        power_cut();
}

void sio_check_powercut(void) {
    if (tracking && cut_requested) {
        pthread_mutex_lock(&lock);
        power_cut();
    }
}

static const char *err_name(int e) {
    return e == EIO ? "EIO" : e == ENOSPC ? "ENOSPC" : e == EMFILE ? "EMFILE" : e == EDQUOT ? "EDQUOT" : "?";
}

static const char *op_name(unsigned op) {
    for (size_t i = 0; i < ARRAY_LEN(op_names); i++)
        if (op_names[i].op == op)
            return op_names[i].name;
    return "?";
}

/* Decides whether this call of op fails: 0, or the errno to fail it with (*short_write set
 * when part of a write goes through first). A rule with `cut` cuts the power here. Called
 * with lock held. */
static int inject(unsigned op, const char *what, int *short_write) {
    int err = 0;
    for (int i = 0; i < nrules && !err; i++) {
        rule *r = &rules[i];
        if (!(r->ops & op))
            continue;
        r->calls++;
        int fire = r->nth ? r->calls == r->nth : (!r->max || r->fired < r->max) && rnd01() < r->p;
        if (!fire)
            continue;
        r->fired++;
        if (r->delay_ms) {
            delay_due += r->delay_ms;
            continue;
        }
        injected++;
        if (r->cut) {
            log_warn("storeio: injected fault %llu: power cut at %s #%llu (%s)", (unsigned long long)injected,
                     op_name(op), (unsigned long long)r->calls, what);
            power_cut();
        }
        static const int any[] = {EIO, ENOSPC, EMFILE};
        err = r->err ? r->err : any[rnd() % 3];
        if (short_write)
            *short_write = r->short_write;
        log_warn("storeio: injected fault %llu: %s%s on %s #%llu (%s)", (unsigned long long)injected,
                 short_write && r->short_write ? "short write, then " : "", err_name(err), op_name(op),
                 (unsigned long long)r->calls, what);
    }
    return err;
}

/* The directory holding path (for the journal); 0 or -1. */
static int parent_of(const char *path, dev_t *dev, ino_t *ino) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    struct stat st;
    if (stat(dir, &st) < 0)
        return -1;
    *dev = st.st_dev;
    *ino = st.st_ino;
    return 0;
}

static void journal(int kind, const char *path, const char *from, char *backup) {
    mop *m = xcalloc(1, sizeof *m);
    m->kind = kind;
    if (parent_of(path, &m->dev, &m->ino) < 0)
        m->dev = 0, m->ino = 0;
    m->path = xstrndup(path, strlen(path));
    m->from = from ? xstrndup(from, strlen(from)) : NULL;
    m->backup = backup;
    if (mops_tail)
        mops_tail->next = m;
    else
        mops = m;
    mops_tail = m;
}

/* A hidden name next to path where a file is kept while its removal can still be undone. */
static char *backup_name(const char *path) {
    char b[4096];
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) : 1;
    snprintf(b, sizeof b, "%.*s/.sio-%d-%llu", dirlen, slash ? path : ".", (int)getpid(),
             (unsigned long long)++backups);
    return xstrndup(b, strlen(b));
}

/* ---- the calls ---- */

/* Sleeps what delay rules asked for (called without the lock). */
static void slow_disk(void) {
    if (delay_due) {
        usleep(delay_due * 1000u);
        delay_due = 0;
    }
}


void sio_prefetch(const char *path) {
    if (tracking)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
    close(fd);
}

sio_file *sio_open(const char *path, int create) {
    int fd, created = 0;
    if (!tracking) {
        fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0640);
        if (fd < 0)
            return NULL;
    } else {
        pthread_mutex_lock(&lock);
        check_cut();
        int e = inject(OP_OPEN, path, NULL);
        if (e) {
            pthread_mutex_unlock(&lock);
            errno = e;
            return NULL;
        }
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && create) {
            fd = open(path, O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0640);
            created = fd >= 0;
        }
        if (fd < 0) {
            e = errno;
            pthread_mutex_unlock(&lock);
            errno = e;
            return NULL;
        }
        if (created)
            journal(MOP_CREATE, path, NULL, NULL);
    }
    sio_file *f = xcalloc(1, sizeof *f);
    f->fd = fd;
    if (tracking) {
        f->next_open = open_files;
        open_files = f;
        pthread_mutex_unlock(&lock);
    }
    return f;
}

static void forget_file(sio_file *f) {
    for (sio_file **pp = &open_files; *pp; pp = &(*pp)->next_open) {
        if (*pp == f) {
            *pp = f->next_open;
            break;
        }
    }
    close(f->fd);
    free(f);
}

void sio_close(sio_file *f) {
    if (!f)
        return;
    if (!tracking) {
        close(f->fd);
        free(f);
        return;
    }
    pthread_mutex_lock(&lock);
    /* A close is not a sync: unsynced writes stay at risk (the descriptor is kept for the
     * power cut) until a sync of the file or the end of the process. */
    if (f->head)
        f->closed = 1;
    else
        forget_file(f);
    pthread_mutex_unlock(&lock);
}

static void add_pending(sio_file *f, const void *p, size_t n, uint64_t off) {
    pending *w = xmalloc(sizeof *w + n);
    w->next = NULL;
    w->off = off;
    w->n = n;
    memcpy(w->data, p, n);
    if (f->tail)
        f->tail->next = w;
    else
        f->head = w;
    f->tail = w;
}

int sio_pwrite(sio_file *f, const void *p, size_t n, uint64_t off) {
    if (tracking) {
        pthread_mutex_lock(&lock);
        check_cut();
        int short_write = 0;
        int e = inject(OP_WRITE, "write", &short_write);
        if (e && short_write && n > 1)
            add_pending(f, p, 1 + (size_t)(rnd() % (n - 1)), off);
        else if (!e && n)
            add_pending(f, p, n, off);
        pthread_mutex_unlock(&lock);
        slow_disk();
        return -e;
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
    if (tracking) {
        pthread_mutex_lock(&lock);
        check_cut();
        int e = inject(OP_READ, "read", NULL);
        pthread_mutex_unlock(&lock);
        slow_disk();
        if (e)
            return -e;
    }
    ssize_t r = pread(f->fd, p, n, (off_t)off);
    if (r < 0)
        return -errno;
    if (tracking) { /* overlay the writes not yet on "disk" */
        pthread_mutex_lock(&lock);
        for (pending *w = f->head; w; w = w->next) {
            uint64_t lo = MAX(off, w->off), hi = MIN(off + n, w->off + w->n);
            if (lo < hi) {
                if ((ssize_t)(lo - off) > r) /* a hole between the disk's end and the write */
                    memset((uint8_t *)p + r, 0, (size_t)(lo - off) - (size_t)r);
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
    if (tracking) {
        pthread_mutex_lock(&lock);
        check_cut();
        int e = inject(OP_SYNC, "fdatasync", NULL);
        if (delay_due) {
            pthread_mutex_unlock(&lock);
            slow_disk();
            pthread_mutex_lock(&lock);
            check_cut();
        }
        if (e) {
            /* fsyncgate: the writeback failed; what it wrote is unknown, and the pages are
             * no longer dirty, so no later sync retries them. */
            lose_pending(f);
            pthread_mutex_unlock(&lock);
            return -e;
        }
        for (pending *w = f->head; w; w = w->next) {
            if (pwrite(f->fd, w->data, w->n, (off_t)w->off) != (ssize_t)w->n) {
                e = errno ? errno : EIO;
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
    if (tracking) {
        pthread_mutex_lock(&lock);
        check_cut();
        int e = inject(OP_TRUNCATE, "truncate", NULL);
        if (e) {
            pthread_mutex_unlock(&lock);
            return -e;
        }
        /* Unsynced writes beyond the new end are gone; those before it stay unsynced. */
        pending **pp = &f->head;
        f->tail = NULL;
        while (*pp) {
            pending *w = *pp;
            if (w->off >= size) {
                *pp = w->next;
                free(w);
                continue;
            }
            if (w->off + w->n > size)
                w->n = (size_t)(size - w->off);
            f->tail = w;
            pp = &w->next;
        }
        int rc = ftruncate(f->fd, (off_t)size) < 0 ? -errno : 0;
        pthread_mutex_unlock(&lock);
        return rc;
    }
    return ftruncate(f->fd, (off_t)size) < 0 ? -errno : 0;
}

int64_t sio_size(sio_file *f) {
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return -errno;
    int64_t size = st.st_size;
    if (tracking) {
        pthread_mutex_lock(&lock);
        for (pending *w = f->head; w; w = w->next)
            if ((int64_t)(w->off + w->n) > size)
                size = (int64_t)(w->off + w->n);
        pthread_mutex_unlock(&lock);
    }
    return size;
}

/* Forgets the unsynced writes of closed files that are this inode (it is being unlinked). */
static void forget_inode(const char *path) {
    struct stat st, fst;
    if (stat(path, &st) < 0)
        return;
    for (sio_file **pp = &open_files; *pp;) {
        sio_file *f = *pp;
        if (f->closed && fstat(f->fd, &fst) == 0 && fst.st_ino == st.st_ino && fst.st_dev == st.st_dev) {
            *pp = f->next_open;
            drop_pending(f);
            close(f->fd);
            free(f);
            continue;
        }
        pp = &f->next_open;
    }
}

int sio_unlink(const char *path) {
    if (!tracking)
        return unlink(path) < 0 ? -errno : 0;
    pthread_mutex_lock(&lock);
    check_cut();
    int e = inject(OP_UNLINK, path, NULL);
    if (!e) {
        forget_inode(path);
        char *backup = backup_name(path);
        if (rename(path, backup) < 0) { /* the file goes on existing under a hidden name */
            e = errno;
            free(backup);
        } else {
            journal(MOP_UNLINK, path, NULL, backup);
        }
    }
    pthread_mutex_unlock(&lock);
    return -e;
}

int sio_rename(const char *from, const char *to) {
    if (!tracking)
        return rename(from, to) < 0 ? -errno : 0;
    pthread_mutex_lock(&lock);
    check_cut();
    int e = inject(OP_RENAME, to, NULL);
    if (!e) {
        char *backup = backup_name(to);
        if (link(to, backup) < 0) { /* nothing to replace (or nothing to keep it by) */
            free(backup);
            backup = NULL;
        }
        if (rename(from, to) < 0) {
            e = errno;
            if (backup)
                unlink(backup);
            free(backup);
        } else {
            journal(MOP_RENAME, to, from, backup);
        }
    }
    pthread_mutex_unlock(&lock);
    return -e;
}

int sio_mkdir(const char *path) {
    if (!tracking)
        return mkdir(path, 0750) < 0 && errno != EEXIST ? -errno : 0;
    pthread_mutex_lock(&lock);
    check_cut();
    int e = inject(OP_MKDIR, path, NULL);
    if (!e) {
        if (mkdir(path, 0750) == 0)
            journal(MOP_MKDIR, path, NULL, NULL);
        else if (errno != EEXIST)
            e = errno;
    }
    pthread_mutex_unlock(&lock);
    return -e;
}

int sio_sync_dir(const char *dir) {
    if (tracking) {
        pthread_mutex_lock(&lock);
        check_cut();
        int e = inject(OP_DIRSYNC, dir, NULL);
        pthread_mutex_unlock(&lock);
        if (e)
            return -e; /* its operations stay undurable */
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    struct stat st;
    if (tracking && rc == 0 && fstat(fd, &st) == 0) {
        /* Its entries are durable now: their undo records (and kept files) go. */
        pthread_mutex_lock(&lock);
        mop **pp = &mops;
        mops_tail = NULL;
        while (*pp) {
            mop *m = *pp;
            if (m->dev == st.st_dev && m->ino == st.st_ino) {
                if (m->backup)
                    unlink(m->backup);
                *pp = m->next;
                mop_free(m);
                continue;
            }
            mops_tail = m;
            pp = &m->next;
        }
        pthread_mutex_unlock(&lock);
    }
    close(fd);
    return rc;
}
