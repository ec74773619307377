/* storeio.h — the one layer through which the store touches files (as SQLite's VFS).
 *
 * Normally a thin wrapper over open/pwrite/fdatasync/… that returns -errno on failure. Two
 * test modes, set by environment variables, let the tests show what real disks do to a store
 * that trusts them too much:
 *
 * FERRY_IO_VOLATILE=1 — power cuts. Every write since the file's last fdatasync is held in
 *   memory only (reads see it), and every create, rename, unlink and mkdir since the last
 *   fsync of its directory can still be undone. SIGUSR2 then cuts the power at the next I/O
 *   call (or the loop's next tick): each unsynced write keeps nothing, an in-order prefix, or
 *   an arbitrary subset of its sectors (FERRY_IO_SECTOR bytes, 512 by default; 4096 models a
 *   4 KiB-sector disk); the directory operations not made durable are undone, newest first,
 *   but for an in-order prefix of them (a journaling filesystem commits them in order); and the
 *   process exits with status 99 at once. A close is not a sync: a closed file's unsynced
 *   writes stay at risk. kill -9 in this mode is a power cut that loses every unsynced write
 *   and keeps every directory operation.
 *
 * FERRY_IO_FAULTS=RULE[;RULE…] — injected I/O errors (implies FERRY_IO_VOLATILE). A rule is
 *   comma-separated keys:
 *     op=OPS     open | write | pwrite | fdatasync | dirsync | rename | unlink | truncate |
 *                mkdir | read | any, several joined by '|' (write and pwrite are the same
 *                call: the store only writes at an offset); default any
 *     nth=N      the Nth call (from 1) of those ops fails, once
 *     p=F        each call of those ops fails with probability F (0 < F <= 1)
 *     max=N      at most N faults from this rule (with p)
 *     err=E      EIO | ENOSPC | EMFILE | EDQUOT | any (one of the first three at random);
 *                default EIO
 *     short      a write first puts a random part of its bytes in the file, then fails
 *     cut        not an error: a power cut at that call, before it takes effect (as SIGUSR2)
 *     delay=MS   not an error: the call takes MS ms longer (a slow disk: write, fdatasync, read)
 *   A failed fdatasync is PostgreSQL's fsyncgate: the file's unsynced writes are dropped,
 *   kept, or kept in part (sectors at random), and forgotten: a later successful fdatasync
 *   of the same file says nothing about them. A failed directory fsync leaves its
 *   operations undoable. Every injected fault is logged ("storeio: injected ..."), with a
 *   running count.
 *   Examples: FERRY_IO_FAULTS="op=fdatasync,nth=37,err=EIO";
 *             FERRY_IO_FAULTS="op=pwrite,p=0.01,err=ENOSPC,short;op=any,p=0.001,cut".
 *
 * FERRY_IO_KEEP=none|all|sectors|prefix|last fixes what lost unsynced writes keep (a power
 * cut, a failed fdatasync; last: only the file's last sector) instead of choosing at random
 * each time: for tests that need one case.
 *
 * FERRY_IO_SEED=N seeds every random choice (faults, kept sectors); without it a seed is
 * drawn and logged at startup, so any run can be replayed (thread timing aside). */
#ifndef FERRY_STOREIO_H
#define FERRY_STOREIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SIO_POWERCUT_EXIT 99

typedef struct sio_file sio_file;

/* Reads FERRY_IO_VOLATILE, FERRY_IO_FAULTS, FERRY_IO_SEED and FERRY_IO_SECTOR and installs
 * the SIGUSR2 handler. Call once at startup. Returns 0, or -1 (logged) on a bad rule. */
int sio_init(void);
int sio_volatile(void);
/* Opens (creating if asked) a file; NULL with errno set on failure. */
sio_file *sio_open(const char *path, int create);
void sio_close(sio_file *f);
/* Writes all n bytes at off; 0 or -errno (then a part of them may be in the file). */
int sio_pwrite(sio_file *f, const void *p, size_t n, uint64_t off);
/* Reads up to n bytes at off (including writes not yet synced); bytes read or -errno. */
ssize_t sio_pread(sio_file *f, void *p, size_t n, uint64_t off);
/* Makes everything written so far durable; 0 or -errno. After a failure, what was written
 * since the last successful sync may be lost, and a later sync does not bring it back. */
int sio_sync(sio_file *f);
int sio_truncate(sio_file *f, uint64_t size);
int64_t sio_size(sio_file *f);
/* A hint: starts reading the whole file into the page cache in the background
 * (posix_fadvise WILLNEED), so a read of it later finds it there. No error is reported (a
 * failed hint costs nothing; the real read reports its own errors) and it does nothing under
 * fault injection, whose reads must meet the rules. */
void sio_prefetch(const char *path);
int sio_unlink(const char *path);
int sio_rename(const char *from, const char *to);
/* Creates a directory (0 if it exists already); 0 or -errno. Durable once its parent is
 * synced with sio_sync_dir. */
int sio_mkdir(const char *path);
/* Makes a directory's entries (created, renamed, removed files) durable. */
int sio_sync_dir(const char *dir);
/* Simulates the power cut now if one was requested (the loop calls this on its tick). */
void sio_check_powercut(void);

#endif
