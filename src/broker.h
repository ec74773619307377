/* broker.h — the broker's core types and how they refer to each other.
 *
 *   broker ── exchanges (map) ── bindings ──> queues / exchanges
 *          ── queues (map) ── ready messages, consumers
 *          ── conns (list) ── channels ── consumers, unacked deliveries
 *
 * One event-loop thread owns all of it (see loop.h); nothing here is locked. A message body
 * is allocated once and shared, reference-counted, by every queue it was routed to; its
 * properties are the publisher's bytes, passed on unchanged. */
#ifndef FERRY_BROKER_H
#define FERRY_BROKER_H

#define FERRY_VERSION "0.1.0"

#include <stdint.h>

#include "buf.h"
#include "wire.h"
#include "config.h"
#include "loop.h"
#include "map.h"
#include "message.h"

typedef struct broker broker;
typedef struct conn conn;
typedef struct channel channel;
typedef struct queue queue;
typedef struct exchange exchange;
typedef struct consumer consumer;
typedef struct binding binding;
typedef struct vhost vhost;

/* message.c: the message struct and its reference counting are in message.h (the store
 * keeps messages too). */

/* ---------------- queue.c ---------------- */

/* A message's place in one queue. seq orders the queue: a requeued message goes back to
 * the position its seq gives it, ahead of everything published after it. */
typedef struct qmsg {
    union {
        message *m;
        uint64_t loc; /* paged out (paged != 0): segment << 32 | offset of its record */
    };
    uint64_t seq;
    uint64_t expires_at; /* monotonic ms when it expires (TTL); 0 = never */
    /* 16 bits each keep a queue entry at 32 bytes (millions are queued); both saturate. */
    uint16_t deliveries; /* times delivered (for the redelivered flag) */
    uint16_t returns;    /* times given back unacknowledged (x-delivery-count, x-delivery-limit) */
    uint8_t stored;      /* this queue's copy has a publish record in the store */
    uint8_t paged;       /* PAGED_*: the body lives only in the log (queue.c, persist.c) */
    uint16_t pg_size;    /* paged: an upper bound of its record's length (pg_size_encode) */
} qmsg;
enum { PAGED_NO, PAGED_OUT, PAGED_UNREADABLE };
_Static_assert(sizeof(qmsg) == 32, "a queue entry is 32 bytes: ten million of them are queued");
#define QMSG_COUNT_MAX UINT16_MAX
static inline uint16_t count_up(uint16_t n) { return n < QMSG_COUNT_MAX ? (uint16_t)(n + 1) : n; }

/* A record length in 16 bits, rounded up: 11 bits of mantissa, 5 of exponent (reading a few
 * bytes more than a record is harmless: the record's own header says where it ends). */
static inline uint16_t pg_size_encode(uint32_t len) {
    unsigned e = 0;
    while (((len + (1u << e) - 1) >> e) > 2047)
        e++;
    return (uint16_t)(e << 11 | ((len + (1u << e) - 1) >> e));
}
static inline uint64_t pg_size_decode(uint16_t v) { return (uint64_t)(v & 2047) << (v >> 11); }

/* The segment a queue copy's record is in (paged or not). */
static inline uint32_t qmsg_seg(const qmsg *qm) { return qm->paged ? (uint32_t)(qm->loc >> 32) : qm->m->seg; }

/* FIFO of qmsg in increasing seq, in blocks of QBLOCK entries: a 10,000,000-deep queue
 * costs its entries and no doubling slack (the index must fit in RAM when bodies do not). */
#define QBLOCK 1024
typedef struct qring {
    qmsg **blk;       /* circular array of blocks, capacity nblkcap (a power of two) */
    size_t nblkcap, bhead, nblk;
    size_t head, len; /* the first entry is blk[bhead][head] */
    uint64_t base;    /* entries ever popped: the absolute position of the head */
} qring;

typedef struct qheap { /* requeued messages, min-heap on seq */
    qmsg *a;
    size_t len, cap;
} qheap;

/* Management statistics (mgmt_stats.c): counters kept on the hot paths with one increment
 * each; the 1 s statistics tick turns them into RabbitMQ's 5 s rates. */
enum { DL_REJECTED, DL_EXPIRED, DL_MAXLEN, DL_DELIVERY_LIMIT, DL_NREASONS };
typedef struct qcounters {
    uint64_t publish, deliver, deliver_no_ack, get, get_no_ack, get_empty, ack, redeliver;
    uint64_t dead_lettered[DL_NREASONS]; /* messages that left this queue as dead letters */
    uint64_t retries;                    /* x-retry-delays: rejected messages scheduled again */
    uint64_t delayed_pending;            /* retries of this queue waiting in the delayed heap */
    uint64_t unacked_bytes;              /* body bytes of its unacknowledged deliveries */
    uint64_t last_activity_ms;           /* wall clock: the last publish, delivery or ack */
} qcounters;

struct queue {
    char *name;
    size_t name_len;
    broker *b;
    vhost *vh;     /* the virtual host it lives in (its name map) */
    uint32_t refs; /* the broker's map holds one; each unacked delivery holds one */
    uint32_t qid;  /* store id of a durable queue (0: not stored) */
    uint8_t deleted, durable, exclusive, auto_delete, had_consumer, dirty;
    uint8_t pg_reading; /* paging: a read-back of paged bodies is in flight (holds a ref) */
    conn *owner;   /* exclusive queues: the declaring connection */
    uint8_t *args; /* declare arguments (field table contents) */
    size_t args_len;
    /* Ready messages, one level per priority (x-max-priority; one level otherwise): each a
     * FIFO ring plus a heap of requeued messages. */
    struct qlevel {
        qring ready;
        qheap requeued;
        uint64_t pg_pos; /* paging: ready entries before this position were looked at */
    } *levels;
    uint16_t nlevels;     /* 1 + x-max-priority: 1..256 (x-max-priority is 0..255) */
    uint8_t overflow;     /* OVERFLOW_* (x-overflow) */
    size_t nready;        /* ready messages over all levels */
    int64_t message_ttl;  /* x-message-ttl in ms; -1 = none */
    int64_t max_length;   /* x-max-length; -1 = none */
    int64_t max_bytes;    /* x-max-length-bytes; -1 = none */
    int64_t expires_ms;   /* x-expires: deleted after this long unused; 0 = never */
    loop_timer ttl_timer;     /* fires when the head message expires */
    loop_timer expiry_timer;  /* fires when the unused queue expires */
    uint64_t next_seq;
    uint64_t ready_bytes;
    uint32_t unacked;
    consumer **consumers;
    size_t nconsumers, capconsumers, rr;
    binding **bindings; /* bindings whose destination is this queue */
    size_t nbindings, capbindings;
    queue *next_dirty;
    uint64_t route_mark; /* de-duplicates routing results */
    /* issue 4: queue types and the async patterns (qtype.c, retry.c, dedup.c) */
    uint8_t quorum;           /* x-queue-type quorum */
    uint8_t sac;              /* x-single-active-consumer */
    consumer *sac_active;     /* the one consumer that gets messages, if sac */
    uint64_t consumer_epoch;  /* orders consumers by registration (sac failover) */
    int64_t delivery_limit;   /* x-delivery-limit; -1 = none */
    int64_t *retry_delays;    /* x-retry-delays in ms */
    size_t nretry;
    int64_t dedup_window;     /* x-deduplication-window in ms; 0 = none */
    struct dedup *dedup;      /* its message-ids, created on first use */
    qcounters cnt;            /* management statistics (mgmt_stats.c) */
    struct qstats *st;        /* their rate history and publish-time marks (mgmt_stats.c) */
    /* issue 13: streams (stream.c) */
    uint8_t is_stream;        /* x-queue-type stream: an append-only log, not a FIFO */
    struct stream *stream;    /* its log and named offsets (NULL without a store) */
};

queue *queue_new(vhost *vh, slice name, int durable, int exclusive, int auto_delete, conn *owner, slice args);
void queue_unref(queue *q);
enum { OVERFLOW_DROP_HEAD, OVERFLOW_REJECT_PUBLISH, OVERFLOW_REJECT_PUBLISH_DLX };
static inline size_t queue_ready_count(const queue *q) { return q->nready; }
/* Appends a newly published message (takes a reference); the caller checked queue_accepts. */
void queue_publish(queue *q, message *m);
/* The queue was used (declared, consumed from, got from): an x-expires lease restarts. */
void queue_touch(queue *q);
/* Takes the next ready message: 1 with *out set (its body in memory), or 0 with *out
 * untouched and the queue empty. queue_ready_count() > 0 does not promise a message: the
 * head may expire (TTL) or fail to read back from the log (paging) while popping. -1: the
 * head's body is paged out and being read back on the store's helper thread; consumers
 * get it when it is in, and broker_paged_in() tells waiting basic.gets. */
int queue_pop(queue *q, qmsg *out);
/* As queue_pop, but a paged head is read back at once in the loop thread (never -1): for
 * the rare paths that cannot wait (dead-letter redrive). */
int queue_pop_now(queue *q, qmsg *out);
/* Puts a delivered message back in its place, marked as delivered before. */
void queue_requeue(queue *q, qmsg qm);
/* Puts a message taken with queue_pop back in its place, not counted as a return. */
void queue_putback(queue *q, qmsg qm);
/* A delivered message leaves the queue for good (acked, or rejected without requeue). */
void queue_settle(queue *q, qmsg qm);
size_t queue_purge(queue *q);
void queue_add_consumer(queue *q, consumer *c);
void queue_remove_consumer(queue *q, consumer *c);
/* Schedules delivery to consumers for the end of this loop batch. */
void queue_mark_dirty(queue *q);
/* Would the queue take this message now? -1 if x-overflow reject-publish refuses it (and
 * dead-letters it for reject-publish-dlx); 1 if it is a duplicate within the queue's
 * x-deduplication-window (accepted and confirmed, but not enqueued). */
int queue_accepts(queue *q, message *m);
/* Appends a recovered message at the end of the queue (store recovery, in seq order). */
void queue_recover(queue *q, qmsg qm);
/* The consumer that should get the next message now, or NULL if none can take one. */
consumer *queue_next_consumer(queue *q);
void queue_dispatch(queue *q);
/* Deletes: cancels consumers (with notification), removes bindings, drops ready messages. */
size_t queue_delete(queue *q);
/* Paging: moves the bodies of up to max ready messages far from the head to the log only
 * (queue.c); the broker calls it while message memory is over --memory-budget. */
void queue_page_out(queue *q, size_t max);
/* Ready messages of q whose body is only on disk. */
size_t queue_paged_count(const queue *q);
/* Calls fn for every ready entry of q (compaction; fn may change where its record is). */
void queue_each_ready(queue *q, void (*fn)(void *ctx, queue *q, qmsg *qm), void *ctx);
/* Compaction read back the body of q's paged entry seq (its record at loc): returns 1 if the
 * entry took m (it was still paged there: its segment count is given back and the pager may
 * page it out again), 0 if it had moved on (m is the caller's). */
int queue_paged_back(queue *q, uint64_t seq, uint64_t loc, message *m);

/* A delivered message rejected (or nacked) without requeue: retried (x-retry-delays),
 * dead-lettered or dropped. */
void queue_reject(queue *q, qmsg qm);
/* The property bytes to deliver qm with: the publisher's, or for a quorum queue a copy in
 * scratch with the x-delivery-count header (RabbitMQ's quorum queues add it). */
slice queue_delivery_props(const queue *q, const qmsg *qm, buf *scratch);

/* ---------------- mgmt_stats.c ---------------- */

/* A message was appended to q at the loop's current time (marks its publish time). */
void qstats_published(queue *q);
/* Recovery: the copy with this seq was published at wall-clock ms published. */
void qstats_recovered(queue *q, uint64_t seq, uint64_t published);
void qstats_free(queue *q);
/* Age in ms of q's oldest ready message (0 if none). */
uint64_t qstats_oldest_age_ms(queue *q, uint64_t now_mono);

/* ---------------- qtype.c ---------------- */

/* Does a queue with these arguments have x-queue-type quorum? */
int qtype_is_quorum(slice args);
/* Sets up a new queue's type-dependent state from its arguments. */
void qtype_init(queue *q, slice args);

/* ---------------- stream.c ---------------- */

/* Does a queue with these arguments have x-queue-type stream? */
int stream_is(slice args);
/* The argument and property checks of queue.declare for a new queue (args.c): 0, or -1 with
 * RabbitMQ's 406 text ("invalid arg 'x-max-length' for queue 'q' in vhost '/': ...") in err. */
int args_queue_problem(const char *vh, slice name, int durable, int exclusive, int auto_delete, slice args, char *err,
                       size_t errlen);
/* RabbitMQ's x-max-age syntax (a positive integer and one of Y M D h m s): ms, or -1. */
int64_t stream_parse_age(slice s);
/* Opens a durable stream queue's log (fresh: just declared, no files yet). */
void stream_attach(queue *q, int fresh);
/* After recovery: every stream queue's log opened; directories of deleted streams removed. */
void stream_recover_all(broker *b);
/* queue.delete: the stream's files go with the next batch. */
void stream_destroy(queue *q);
/* Appends a routed message to the stream (confirmed once its batch is synced). */
void stream_publish(queue *q, message *m);
/* Consumers with credit get records; called as queue_dispatch for a stream. */
void stream_dispatch(queue *q);
/* The store synced a batch: consumers at the end of streams that grew are woken. */
void stream_synced(broker *b);
/* Once a second: named offsets saved, retention by age. */
void stream_tick(broker *b);
/* Shutdown (before the store closes): named offsets saved, logs closed. */
void stream_shutdown(broker *b);
/* An unacked delivery of a stream ended (SETTLE_* mode, channel_int.h). */
void stream_settled(queue *q, consumer *cs, uint64_t offset, int mode);
void stream_consumer_gone(consumer *cs);
/* The management API's view: bytes, first and last offsets; -1 without a log. */
typedef struct stream_info {
    uint64_t bytes, first, last, committed;
    size_t segments;
} stream_info;
int stream_stats(const queue *q, stream_info *out);
/* Each named consumer: its stored offset, lag (committed - offset), and whether in use. */
void stream_each_name(const queue *q, void (*fn)(void *ctx, const char *name, uint64_t offset, uint64_t lag, int active),
                      void *ctx);

/* ---------------- retry.c ---------------- */

/* x-retry-delays: a rejected message of q comes back after the next delay; returns 1 if it
 * was taken for a retry, 0 if it is past its last delay (then it is dead-lettered). */
int retry_schedule(queue *q, message *m);

/* ---------------- dedup.c ---------------- */

/* x-deduplication-window: 1 if m's message-id was accepted by q within the window (the
 * message is then dropped); otherwise records it and returns 0. */
int dedup_seen(queue *q, const message *m);
/* The message q just accepted (dedup_seen said no) was stored in segment seg: that segment
 * stays on disk while the id is in the window, so that a restart can rebuild the window. */
void dedup_stored(queue *q, uint32_t seg);
/* Recovery: q accepted this message-id at monotonic time at, its record in segment seg. */
void dedup_restore(queue *q, const message *m, uint64_t at, uint32_t seg);
void dedup_free(queue *q);

/* ---------------- deadletter.c ---------------- */

/* Dead-letters a message (takes the reference) that left q for this reason ("rejected",
 * "expired", "maxlen", "delivery_limit"), if q has a dead-letter exchange; drops it if not. */
void deadletter(queue *q, message *m, const char *reason);
/* The same for a queue copy (not paged) that has a record in the store: the copy's settle
 * record is written only once the dead letter's own record is synced (deadletter_synced),
 * so that a crash may duplicate the message but never lose it. Takes qm's reference. */
void deadletter_copy(queue *q, qmsg qm, const char *reason);
/* The same wait for a copy whose new record (a retry's) is in the batch being built. */
void deadletter_settle_later(queue *q, qmsg qm);
/* Republishes at most max of the dead letters collected so far (oldest first; dead letters
 * they make in turn join the end of the list); returns how many. The rest wait for the next
 * loop turn: a dead-letter cycle that fans out (queues dead-lettering to a fanout exchange
 * bound to all of them makes a factorial number of copies) must not hold the loop. */
size_t deadletter_flush(broker *b, size_t max);
/* Shutdown: drops the dead letters not yet routed; a stored source copy is left on disk (it
 * comes back after the restart), as a crash would leave it. */
void deadletter_drop_pending(broker *b);
/* Store generation gen is synced (ok) or failed: settles the copies whose dead letters it
 * held (a failed one stays unsettled on disk: it comes back after a restart). */
void deadletter_synced(broker *b, uint64_t gen, int ok);
/* Shutdown: settles every copy still waiting (the store writes them last). */
void deadletter_settle_all(broker *b);
/* Dead-letter redrive: moves up to max ready messages of dlq back to the queue named in
 * their most recent x-death entry, properties and headers unchanged. Messages whose queue
 * is gone (or that have no x-death) stay in dlq, in order. Returns how many moved. */
size_t deadletter_redrive(queue *dlq, size_t max);

/* ---------------- exchange.c ---------------- */

enum { EX_DIRECT, EX_FANOUT, EX_TOPIC, EX_HEADERS, EX_CHASH, EX_DELAYED };

struct binding {
    exchange *src;
    queue *q;       /* destination queue, or */
    exchange *dstx; /* destination exchange */
    char *key;
    size_t key_len;
    uint8_t *args;
    size_t args_len;
    size_t src_at, dst_at; /* its index in src->bindings and in q->bindings / dstx->inbound */
};

struct exchange {
    char *name;
    size_t name_len;
    broker *b;
    vhost *vh;
    int type;
    uint8_t durable, auto_delete, internal, builtin;
    uint8_t *args;
    size_t args_len;
    binding **bindings; /* this exchange is the source */
    size_t nbindings, capbindings;
    binding **inbound; /* exchange-to-exchange bindings with this as destination */
    size_t ninbound, capinbound;
    map direct; /* EX_DIRECT: routing key -> struct bvec of bindings */
    uint64_t route_mark;  /* == broker route_epoch: this publish reached it already */
    exchange *autodel_next; /* on broker autodel while autodel_pending */
    uint8_t autodel_pending;
    int subtype;          /* EX_DELAYED: the x-delayed-type that routes (else = type) */
    struct chring *ring;  /* EX_CHASH (or delayed over it): the hash ring (chash.c) */
    struct topic_trie *trie; /* EX_TOPIC (or delayed over it): its bindings' keys (topic.c) */
    map bindex;           /* (destination, key) -> struct bvec: finds a binding without a scan */
    uint64_t publish_in, publish_out; /* management statistics: messages in, copies routed out */
    struct rate_hist *rates;          /* their 5 s history (mgmt_stats.c), made by the 1 s tick */
};

int exchange_type_parse(slice s, int *type);
const char *exchange_type_name(int type);
exchange *exchange_new(vhost *vh, slice name, int type, int durable, int auto_delete, int internal,
                       slice args);
void exchange_free(exchange *x);
binding *binding_find(exchange *src, queue *q, exchange *dstx, slice key, slice args);
binding *binding_add(exchange *src, queue *q, exchange *dstx, slice key, slice args);
/* Removes and frees a binding; an auto-delete source with no bindings left is deleted
 * (before this returns; a cascade of them runs as a loop, not a recursion). */
void binding_remove(binding *bd);
/* Routes a message: appends destination queues (each once) to b->route_out. Iterative,
 * with a visited set, as RabbitMQ routes exchange-to-exchange graphs: any depth, cycles end. */
void exchange_route(exchange *x, message *m, slice headers);
int topic_match(const char *pattern, size_t plen, const char *key, size_t klen);
/* The topic trie (topic.c): a binding of a topic exchange is added and removed with its
 * exchange's bindings; topic_route calls fn for each binding whose key matches the routing
 * key and returns how many did. */
void topic_add(exchange *x, binding *bd);
void topic_remove(exchange *x, binding *bd);
size_t topic_route(exchange *x, const char *key, size_t klen, void (*fn)(binding *));
void topic_free(exchange *x);
/* Appends a queue to the routing result (each once per publish). */
void exchange_route_queue(broker *b, queue *q);

/* ---------------- chash.c ---------------- */

/* x-consistent-hash, as rabbitmq_consistent_hash_exchange does it: a binding's key is its
 * weight (that many buckets, appended to the ring); a message goes to the bucket
 * jump_consistent_hash(erlang:phash2(value), buckets) of the routing key, a header or a
 * property, so the same bindings put the same messages in the same queues as RabbitMQ. */
void chash_binding_added(exchange *x, binding *bd);
void chash_binding_removed(exchange *x, binding *bd);
binding *chash_pick(exchange *x, const message *m, slice headers);
void chash_free(exchange *x);
/* The plugin's checks: 0, or -1 with RabbitMQ's text in why. */
int chash_check_args(slice args, char *why, size_t n);
int chash_check_binding_key(slice key, char *why, size_t n);
/* erlang:phash2/1 of a binary (exposed for the unit test). */
uint32_t chash_phash2_binary(const uint8_t *p, size_t n);
uint32_t chash_jump(uint32_t key, uint32_t buckets);

/* ---------------- delayed.c ---------------- */

/* x-delayed-message (the rabbitmq-delayed-message-exchange plugin's behaviour) and the
 * broker's one timer structure for messages that fall due later (delayed publishes and
 * x-retry-delays): a min-heap on due time driven by one loop timer. */
typedef struct delayed_entry {
    uint64_t due;   /* wall-clock ms when it falls due (what a store would persist) */
    uint64_t seq;   /* FIFO among equal due times */
    message *m;
    exchange *x;    /* route through this exchange, or */
    queue *q;       /* publish straight to this queue (holds a reference) */
    uint64_t sid;   /* its record in the store (persistent message, durable target); 0: none */
    uint32_t seg;   /* the segment holding that record */
} delayed_entry;

/* Puts back a delayed entry recovered from the store (store.c, at start). */
void delayed_restore(broker *b, delayed_entry e);

/* Checks x-delayed-type on declare: 0, or closes with RabbitMQ's error and returns -1. */
int delayed_check_declare(channel *ch, slice args, int *subtype);
/* Routing through a delayed exchange: 1 if the message was taken to be delayed (x-delay
 * > 0), 0 to route it now. */
int delayed_take(exchange *x, message *m, slice headers);
void delayed_to_queue(broker *b, queue *q, message *m, uint64_t delay_ms);
void delayed_exchange_gone(broker *b, exchange *x);
void delayed_free(broker *b);
/* Delayed messages pending (delayed exchanges and retries). */
size_t delayed_count(broker *b);
/* Calls fn for every pending delayed message (compaction; fn may change e->seg only). */
void delayed_each(broker *b, void (*fn)(void *ctx, delayed_entry *e), void *ctx);

/* ---------------- compact.c ---------------- */

/* Compacts the oldest segment of the message log if it is due (see compact.c): called once
 * a second and after every synced batch. */
void compact_run(broker *b);

/* ---------------- message.c (headers) ---------------- */

/* The property bytes with one integer header set (replaced in place, or appended). */
void props_set_int_header(slice props, const char *key, char type, int64_t v, buf *out);
/* A copy of m (new allocation, same body) with one integer header set. */
message *message_set_int_header(const message *m, const char *key, char type, int64_t v);

/* ---------------- channel.c, consume.c, publish.c (channel_int.h) ---------------- */

struct consumer {
    char *tag;
    size_t tag_len;
    channel *ch;
    queue *q; /* NULL for the direct reply-to pseudo-consumer */
    uint8_t no_ack, exclusive;
    int32_t priority;  /* x-priority: higher goes first, round-robin among equals */
    uint32_t prefetch; /* 0 = unlimited */
    uint32_t unacked;
    uint8_t *args;
    size_t args_len;
    uint64_t since; /* registration order on its queue (single active consumer) */
    struct scursor *sc; /* a stream consumer's cursor (stream.c) */
};

typedef struct unacked {
    uint64_t tag;
    queue *q; /* holds a reference */
    consumer *c; /* NULL for basic.get, or once the consumer is cancelled */
    qmsg qm;
    uint8_t done; /* settled (waits to be trimmed from the ring) */
    uint8_t tx;   /* acked in the open transaction: 1 + its SETTLE_* mode on commit; 0 none */
} unacked;

typedef struct uring { /* unacked deliveries of a channel, in delivery-tag order */
    unacked *a;
    size_t cap, head, len;
} uring;

/* A publish buffered in a transaction (tx.select): routed on commit, dropped on rollback.
 * (The transaction's acks are marks on the unacked entries: unacked.tx.) */
typedef struct txop {
    message *m;
    uint8_t mandatory;
} txop;

struct channel {
    uint16_t id;
    conn *c;
    uint8_t closing;   /* we sent channel.close and wait for close-ok */
    uint8_t expect;    /* content frames expected next: 0 none, FRAME_HEADER, FRAME_BODY */
    uint8_t mandatory; /* of the publish being assembled */
    message *pending;  /* the publish being assembled; its body_len is the room so far */
    uint8_t *pub_allowed; /* perm.c: the exchange last allowed for publishing (length byte, name) */
    uint64_t pub_allowed_gen; /* the access_db generation it was checked at */
    uint64_t pending_got; /* body bytes of it received so far (<= pending->body_len) */
    uint64_t pending_size; /* the body size its content header declared */
    slice args;        /* the current method's argument bytes (for error texts) */
    uint64_t next_tag;
    uring unacked;
    uint32_t nunacked; /* live (not yet settled) entries in unacked */
    map consumers;     /* tag -> consumer */
    uint32_t prefetch;        /* basic.qos global=false: applies to new consumers */
    uint32_t prefetch_global; /* basic.qos global=true: shared by the channel */
    uint8_t confirm, tx, flow_active, in_confirms;
    uint64_t pub_seq;      /* publishes seen in confirm mode */
    uint64_t confirm_upto; /* highest seq ready to confirm */
    uint64_t confirmed;    /* highest seq confirmed to the client */
    channel *next_confirm;
    txop *txops;
    size_t ntx, captx;
    size_t ntx_acks;     /* unacked entries marked tx */
    consumer *reply;     /* direct reply-to consumer */
    char reply_key[96];  /* amq.rabbitmq.reply-to.<key> naming this channel */
    char last_queue[256]; /* the last queue declared here: "" in bind/consume means it */
    /* Confirms waiting for the store: (highest publish seq, store generation) pairs, in
     * order; a generation is confirmed when the store has synced it. */
    struct cwait {
        uint64_t seq, gen;
        uint8_t nack;
    } *cwait;
    uint32_t ncwait, capcwait;
    uint8_t in_waiters;
    uint64_t tx_wait_gen; /* tx.commit-ok waits for this generation (0: none) */
    channel *next_waiter;
    /* A method whose answer waits for the store (chwait.c): CW_NONE, or what it was. */
    struct chwait {
        uint8_t kind, nowait; /* nowait: no -ok to send (CW_GET: no-ack) */
        unsigned mid, okmid;  /* the method, and the -ok it answers with */
        uint32_t count;       /* queue.delete-ok: the messages deleted */
        uint64_t gen;         /* the store generation whose sync it waits for */
        queue *q;             /* a reference: the queue declared, or got from */
        slice a, b, key, args; /* copies (in names): what undoes it if the sync fails */
        uint8_t *names;
    } wait;
};
enum { CW_NONE, CW_OK, CW_QUEUE_DECLARE, CW_EXCHANGE_DECLARE, CW_BIND, CW_GET };

channel *channel_new(conn *c, uint16_t id);
/* Releases everything (requeues unacked, cancels consumers) and frees. */
void channel_free(channel *ch);
/* Handles one frame for this channel. */
void channel_frame(channel *ch, const frame *f);
/* Closes the channel with an error (a soft error: the connection stays). */
void channel_close_error(channel *ch, int code, unsigned class_method, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Can this consumer take another delivery now? */
int consumer_can_take(const consumer *cs);
/* Delivers a queue message to a consumer (writes basic.deliver + content). */
void consumer_deliver(consumer *cs, qmsg qm);
/* The queue is gone: the consumer is removed and, if the client supports it, told. */
void consumer_cancelled_by_queue(consumer *cs);
void channel_send_confirms(channel *ch);
/* The store synced (or failed) generation gen: confirm or nack what waited for it. */
void channel_store_synced(channel *ch, uint64_t gen, int ok);
/* meta.log records of generation gen were synced (or failed): a waiting declare, bind or
 * delete answers (chwait.c). */
void channel_meta_synced(channel *ch, uint64_t gen, int ok);
/* q's paged messages near its head were read back: a basic.get waiting for them resumes. */
void channel_paged_in(channel *ch, queue *q);

/* ---------------- conn.c ---------------- */

enum {
    CONN_HEADER,   /* waiting for the protocol header */
    CONN_START_OK, /* sent connection.start */
    CONN_TUNE_OK,  /* sent connection.tune */
    CONN_OPEN,     /* waiting for connection.open */
    CONN_OPENED,
    CONN_CLOSING, /* sent connection.close, waiting for close-ok */
    CONN_DEAD
};

struct conn {
    io_handler io;
    int fd;
    broker *b;
    uint64_t id;
    int state;
    buf in, out;
    /* Large bodies are not copied into `out`: each body frame's payload is a slice of the
     * shared message, written in place with writev (conn_put_content). A slice goes out
     * after byte `at` of out's stream (out_base counts the bytes of `out` already written).
     * The message stays referenced (and counted in MEM_MESSAGES) until its slice is written. */
    struct outref *orefs;
    uint32_t noref, oref_head, caporef;
    uint32_t oref_skip;  /* bytes of the first slice already written */
    uint64_t oref_bytes; /* bytes of the slices not yet written */
    uint64_t out_base;   /* bytes of `out` written so far (stream position of its head) */
    channel **chans; /* indexed by channel number */
    uint32_t nchans; /* size of chans */
    uint32_t open_channels;
    uint16_t channel_max;
    uint32_t frame_max;
    uint16_t heartbeat;
    uint64_t created_ms, last_recv_ms, last_send_ms, closing_since_ms;
    char peer[64];
    uint8_t loopback;
    uint8_t cap_cancel_notify, cap_auth_failure_close, cap_blocked;
    uint8_t in_flush, read_paused, epollout;
    uint8_t close_when_flushed; /* drop the socket once the output is written */
    uint8_t counted_open;       /* counted in b->nopened */
    uint8_t lingering;          /* output written and shut down: reading until the peer closes */
    uint64_t linger_since_ms;
    uint8_t has_published, blocked, told_blocked; /* resource alarms (connection.blocked) */
    uint32_t store_wait; /* input paused until the store syncs (tx.commit) */
    uint8_t resume;      /* re-evaluate input at the next flush */
    uint64_t acct;       /* bytes of its buffers counted in memacct (MEM_CONN_BUFFERS) */
    uint8_t in_backlog;  /* on b->backlog: its input budget ran out with frames left */
    conn *next_backlog;
    char *user;
    struct user *u;       /* the logged-in user (auth.h); NULL before login */
    vhost *vh;            /* the virtual host opened (connection.open); NULL before */
    struct authwait *auth; /* a password check in flight, or a refusal waiting out its delay */
    struct tls_conn *tls;           /* TLS connections (tls.c); NULL for plain ones */
    uint8_t tls_read_wants_write;   /* OpenSSL must write before it can read on */
    uint8_t tls_flush_wants_read;   /* ... or read before it can write the output */
    conn *prev, *next;    /* all connections */
    conn *next_flush;     /* flush list */
    conn *next_dead;      /* freed after the batch */
    uint8_t *client_props; /* connection.start-ok client-properties (the management API shows them) */
    size_t client_props_len;
    char mech[16];         /* the SASL mechanism used */
    uint64_t recv_oct, send_oct, recv_cnt, send_cnt; /* bytes and reads/writes (management API) */
};

/* Sends connection.close with a reply code and text; the connection accepts nothing
 * more but close-ok. class_method names the method that failed (0 if none). */
void conn_close_error(conn *c, int code, unsigned class_method, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Schedules the connection's output for the end of this batch. */
void conn_want_flush(conn *c);
int conn_can_deliver(const conn *c);
void conn_free(conn *c);
void conn_flush(conn *c);
/* Appends a message's content (header frame and body frames) to the connection's output:
 * bodies of ZC_MIN_BODY bytes and more go out as slices of m (no copy), smaller ones are
 * copied. Schedules the flush. */
void conn_put_content(conn *c, uint16_t channel, slice props, message *m);
/* Bytes waiting to be written: the output buffer and the body slices. */
uint64_t conn_out_pending(const conn *c);
void conn_tick(conn *c, uint64_t now);
/* Forgets a channel after channel.close-ok (either direction). */
void conn_forget_channel(conn *c, uint16_t id);
/* Re-evaluates whether to read the socket (paused output, alarms, tx waits) and handles
 * input that arrived while it was paused. */
void conn_update_input(conn *c);
void conn_set_blocked(conn *c, int on);
void conn_destroy(conn *c); /* closes the socket and frees, after the batch */
/* Gives each connection with frames left over after its budget one more budget (once per
 * loop batch); returns nonzero if some still have frames left. */
int conn_backlog_run(broker *b);
/* Is this user one of --loopback-users (may log in from loopback only)? */
int loopback_only(const config *cfg, slice user);
/* Listens on addr:port; with tls, connections start with a TLS handshake (b->tls). */
int listener_open(broker *b, const char *addr, int port, int tls);
/* A new connection on a connected non-blocking socket (accepted, or a socketpair end). */
conn *conn_new(broker *b, int fd, int loopback, const char *peer);

/* ---------------- vhost.c ---------------- */

/* A virtual host: its own exchanges and queues (names are per vhost), its limits, and the
 * connections open on it. RabbitMQ's vhost-limits: -1 = no limit. */
struct vhost {
    char *name;
    size_t name_len;
    broker *b;
    map exchanges;
    map queues;
    int64_t max_connections, max_queues;
    uint32_t nconns;
};
/* The vhost of this name, or NULL. */
vhost *vhost_find(broker *b, slice name);
/* The vhost of this name, created (with the default and amq.* exchanges) if missing. */
vhost *vhost_get(broker *b, slice name);
/* Shutdown: deletes every queue of every vhost (vhost_free_all), then, after the batch,
 * frees the exchanges and the vhosts (vhost_free_exchanges). */
void vhost_free_all(broker *b);
void vhost_free_exchanges(broker *b);
size_t broker_queue_count(broker *b);
/* Calls fn for every queue of every vhost (safe against deleting that queue). */
void broker_each_queue(broker *b, void (*fn)(void *ctx, queue *q), void *ctx);

/* ---------------- access_store.c ---------------- */

/* Writes every user, vhost (with its limits) and permission as M_ACCESS records (meta.log
 * compaction, and after definitions are loaded at start). */
void access_emit(broker *b, buf *out, uint64_t salt);
/* Appends the whole access database to meta.log through the store (after a change at start). */
void access_store_all(broker *b);
/* meta_sink.access: one record back into the database (recovery). */
void access_recover(void *ctx, slice payload);
/* After recovery: the definitions file, or the default user on a new data directory. 0, or -1
 * with a message in err. */
int access_setup(broker *b, char *err, size_t errlen);

/* ---------------- cron.c ---------------- */

/* Broker-held cron (x-ferry-cron on x-delayed-message exchanges): schedules fired once per
 * tick, kept in meta.log as M_CRON records. */
typedef struct cron_info {
    const char *vhost, *exchange, *name, *expr, *tz, *rkey;
    int64_t next, last; /* Unix seconds; -1: none (never fired yet / never fires) */
    int durable;
} cron_info;
/* Does a publish with these headers ask for a schedule (x-ferry-cron present)? */
int cron_wanted(slice headers);
/* A publish to x-delayed-message exchange x with x-ferry-cron: creates, replaces or (empty
 * expression) removes the schedule named by its message_id. -1 after closing the channel
 * (406, nothing stored); 1 if a record was appended (the confirm waits for its sync); 0. */
int cron_publish(channel *ch, exchange *x, message *m, const props_view *pv);
/* meta_sink.cron: a schedule record back (recovery); cron_start then arms them (a tick
 * missed while down fires once). */
void cron_recover(void *ctx, slice payload);
void cron_start(broker *b);
/* meta.log compaction: one record per durable schedule. */
void cron_emit(broker *b, buf *out, uint64_t salt);
/* A batch came back: ticks whose copies it held get their FIRED mark. */
void cron_synced(broker *b, uint64_t gen, int ok);
/* x (an x-delayed-message exchange) is being deleted: its schedules go with it. */
void cron_exchange_removed(exchange *x);
/* Every schedule (of vhost, or all if NULL), for listing. */
void cron_each(broker *b, const char *vhost, void (*fn)(void *ctx, const cron_info *ci), void *ctx);
/* Before the store closes: marks still waiting for a sync are appended. */
void cron_shutdown(broker *b);
void cron_free(broker *b);

/* ---------------- definitions.c ---------------- */

/* Loads a RabbitMQ definitions file (rabbitmqctl export_definitions): 0, or -1 with a message
 * in err (ferryd then refuses to start). */
int definitions_load(broker *b, const char *path, char *err, size_t errlen);
/* The same from parsed JSON (the management API's POST /api/definitions); path names it in
 * messages. Does not take root. */
struct json_t;
int definitions_load_json(broker *b, struct json_t *root, const char *path, char *err, size_t errlen);
/* JSON arguments as field table contents (appended to t). */
void definitions_put_table(buf *t, struct json_t *o);

/* ---------------- broker.c ---------------- */

struct store;

struct broker {
    loop *loop;
    config cfg;
    struct store *store;
    channel *store_waiters; /* channels waiting for the store to sync (confirms, tx) */
    int alarms;             /* ALARM_* bits */
    uint32_t *scratch_qids;
    uint64_t *scratch_seqs;
    size_t scratch_cap;
    map vhosts;    /* name -> vhost */
    vhost *vh_default; /* "/" */
    struct access_db *access; /* users, permissions (auth.h) */
    map reply_to; /* direct reply-to key -> channel */
    conn *conns;
    size_t nconns;
    size_t nopened; /* connections past connection.open (what --max-connections limits) */
    uint64_t next_conn_id;
    struct deadletter *dl_head, *dl_tail; /* dead letters to republish (deadletter.c) */
    struct deadletter *dl_wait, *dl_wait_tail; /* their source copies' settles, waiting for a sync */
    struct delayed *delayed;              /* messages due later (delayed.c) */
    struct cron *cron;                    /* cron schedules (cron.c) */
    queue *dirty;       /* queues with deliveries to make */
    conn *flush;        /* connections with output */
    channel *confirms;  /* channels with confirms to send */
    conn *dead;
    queue **route_out;  /* scratch: routing result */
    size_t nroute, caproute;
    uint64_t route_epoch;
    exchange **route_xs; /* scratch: exchanges still to route through (exchange.c) */
    size_t nroute_xs, caproute_xs;
    exchange *autodel;   /* auto-delete exchanges left with no binding, to delete (exchange.c) */
    uint8_t autodel_draining;
    loop_timer tick;
    conn *backlog;            /* connections with whole frames left over after their budget */
    io_handler sig_io;
    int sig_fd;
    int listen_fds[8];
    io_handler *listen_io[8]; /* the listeners (freed at shutdown) */
    struct tls_server *tls;   /* TLS context (tls.c), NULL without --tls-cert */
    int nlisten;
    int stopping;
    uint64_t ticks;
    uint8_t compact_reading; /* compact.c: paged bodies of the oldest segment are being read back */
    struct stream *streams;  /* stream queues with a log (stream.c) */
    /* management statistics (mgmt_stats.c): what the overview counts */
    struct {
        uint64_t publish, confirm, deliver, deliver_no_ack, get, get_no_ack, get_empty, ack, redeliver;
        uint64_t return_unroutable, drop_unroutable, dead_lettered[DL_NREASONS], retries;
        uint64_t conn_created, conn_closed, chan_created, chan_closed, queue_declared, queue_created, queue_deleted;
    } cnt;
    struct mgmt *mgmt; /* the management API's loop side (mgmt.c); NULL with it off */
};

int broker_init(broker *b, const config *cfg);
void broker_run(broker *b);
void broker_shutdown(broker *b);
exchange *broker_exchange(vhost *vh, slice name);
queue *broker_queue(vhost *vh, slice name);
void broker_remove_exchange(exchange *x);
void broker_remove_queue(queue *q);
/* Adds a new exchange / queue to its vhost's map. */
void broker_add_exchange(exchange *x);
void broker_add_queue(queue *q);
void broker_route_add(broker *b, queue *q);
/* Puts a routed message (b->route_out) into the queues that accept it, writing one store
 * record for the durable ones if it is persistent. Returns how many took it; *rejected is
 * set if a queue refused it. */
size_t broker_enqueue_routed(broker *b, message *m, int *rejected);
/* The store synced generation gen (ok) or failed to (disk full): confirms, tx.commit-ok. */
void broker_store_synced(broker *b, uint64_t gen, int ok);
/* The meta.log records of generation gen are synced (ok) or failed: before
 * broker_store_synced for the same batch. */
void broker_meta_synced(broker *b, uint64_t gen, int ok);
/* q's paged messages near its head were read back (queue.c). */
void broker_paged_in(broker *b, queue *q);
/* Sets or clears a resource alarm; publishers are blocked while any is set. */
void broker_set_alarm(broker *b, int which, int on);
enum { ALARM_DISK = 1, ALARM_MEMORY = 2 };
/* Random characters for server-generated names (amq.gen-…, amq.ctag-…). */
void broker_random_name(char *out, size_t n);

#endif
