/* storeio.h — the one layer through which the store touches files (as SQLite's VFS).
 *
 * Normally a thin wrapper over open/pwrite/fdatasync/… that returns -errno on failure. In
 * the test mode FERRY_IO_VOLATILE=1 every write since the last sync is held in memory
 * only; SIGUSR2 then simulates a power cut at the next I/O call: the unsynced writes are
 * dropped, or a random prefix of them is written (a torn write), and the process exits
 * with status 99 at once. A store that confirms before it syncs loses data under this
 * mode, which kill -9 (that keeps the page cache) can never show. */
#ifndef FERRY_STOREIO_H
#define FERRY_STOREIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SIO_POWERCUT_EXIT 99

typedef struct sio_file sio_file;

/* Reads FERRY_IO_VOLATILE and installs the SIGUSR2 handler. Call once at startup. */
void sio_init(void);
int sio_volatile(void);
/* Opens (creating if asked) a file; NULL with errno set on failure. */
sio_file *sio_open(const char *path, int create);
void sio_close(sio_file *f);
/* Writes all n bytes at off; 0 or -errno. */
int sio_pwrite(sio_file *f, const void *p, size_t n, uint64_t off);
/* Reads up to n bytes at off (including writes not yet synced); bytes read or -errno. */
ssize_t sio_pread(sio_file *f, void *p, size_t n, uint64_t off);
/* Makes everything written so far durable; 0 or -errno. */
int sio_sync(sio_file *f);
int sio_truncate(sio_file *f, uint64_t size);
int64_t sio_size(sio_file *f);
int sio_unlink(const char *path);
int sio_rename(const char *from, const char *to);
/* Makes a directory's entries (created, renamed, removed files) durable. */
int sio_sync_dir(const char *dir);
/* Simulates the power cut now if one was requested (the loop calls this on its tick). */
void sio_check_powercut(void);

#endif
