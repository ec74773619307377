/* meta.h — meta.log: the durable definitions (exchanges, queues, bindings), and the data
 * directory's VERSION file.
 *
 * meta.log is a record file (record.h) of definition records, appended and fsynced one
 * change at a time (definitions are rare) and rewritten compactly at every start (tmp file,
 * fsync, rename, directory fsync). A meta.log found damaged is kept as meta.log.damaged-<t>
 * for a person, and while such a copy exists recovery keeps the messages of queues it does
 * not know on disk. The definitions themselves belong to the broker: loading hands each
 * record to a meta_sink, and compaction asks the owner to write the current ones. */
#ifndef FERRY_META_H
#define FERRY_META_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "storeio.h"

/* Where loaded definitions go (the broker implements it), in log order. flags: exchange
 * durable | auto_delete << 1 | internal << 2; queue auto_delete. vhost: the virtual host the
 * definition belongs to ("/" for records written before vhosts, which carry none). access:
 * an M_ACCESS record's bytes (users, vhosts, permissions), which only their owner reads. */
typedef struct meta_sink {
    void (*exchange)(void *ctx, slice vhost, slice name, uint8_t type, uint8_t flags, slice args);
    void (*exchange_delete)(void *ctx, slice vhost, slice name);
    void (*queue)(void *ctx, uint32_t qid, slice vhost, slice name, uint8_t flags, slice args);
    void (*queue_delete)(void *ctx, uint32_t qid);
    void (*binding)(void *ctx, int add, slice vhost, slice src, int to_exchange, slice dst, slice key, slice args);
    void (*access)(void *ctx, slice payload);
    void (*cron)(void *ctx, slice payload); /* an M_CRON record's bytes (cron.c reads them) */
} meta_sink;

typedef struct meta {
    char dir[512];
    sio_file *f; /* meta.log, open for appends once compacted */
    uint64_t size;
    uint64_t salt;
    uint32_t next_qid; /* the id the next durable queue gets (never one seen before) */
    uint64_t corrupt;  /* corrupt records found when loading */
    uint64_t old_salt; /* the meta.log found at load: its salt (0: none, or unreadable headers) */
    uint64_t old_good; /* and the length of its readable records (a torn tail cut) */
} meta;

/* Checks (or, for an empty directory, writes) dir/VERSION: 0, or -1 with a message in err
 * (another format, store files without VERSION, or a write failure). */
int meta_check_version(const char *dir, char *err, size_t errlen);
/* Reads meta.log (if any) into sink. Returns 1 if it is damaged (now or on an earlier start:
 * a meta.log.damaged-* copy exists), else 0; -errno if it exists but cannot be read. */
int meta_load(meta *mt, const char *dir, const meta_sink *sink, void *ctx);
/* Rewrites meta.log with what emit(ctx, out, salt) writes (meta_put_*) and opens it for
 * appends. If the new file cannot be written (a full disk, say) the meta.log that was loaded
 * is kept and appended to instead (logged): compaction only saves space, and a broker must
 * start on a full disk. 0, or -errno (no meta.log to fall back on, or the rename was done
 * and its directory could not be synced). */
int meta_compact(meta *mt, void (*emit)(void *ctx, buf *out, uint64_t salt), void *ctx);
/* Appends records (built with mt->salt) and fsyncs; on failure they are cut off again.
 * 0, or -errno (logged). */
int meta_append(meta *mt, buf *b);
/* A new queue id. */
static inline uint32_t meta_new_qid(meta *mt) { return mt->next_qid++; }
/* A queue id seen in the message log: never handed out again. */
static inline void meta_saw_qid(meta *mt, uint32_t qid) {
    if (qid >= mt->next_qid)
        mt->next_qid = qid + 1;
}
void meta_close(meta *mt);

/* Definition records. The vhost is appended after the fields (omitted for "/", so that
 * records of the default vhost keep their old bytes). */
void meta_put_exchange(buf *b, uint64_t salt, slice vhost, slice name, uint8_t type, uint8_t flags, slice args);
void meta_put_exchange_del(buf *b, uint64_t salt, slice vhost, slice name);
void meta_put_queue(buf *b, uint64_t salt, uint32_t qid, slice vhost, slice name, uint8_t flags, slice args);
void meta_put_queue_del(buf *b, uint64_t salt, uint32_t qid);
void meta_put_binding(buf *b, uint64_t salt, int add, slice vhost, slice src, int to_exchange, slice dst, slice key,
                      slice args);
void meta_put_access(buf *b, uint64_t salt, slice payload);
void meta_put_cron(buf *b, uint64_t salt, slice payload);

#endif
