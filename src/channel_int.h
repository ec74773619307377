/* channel_int.h — what the files of the AMQP channel share among themselves.
 *
 * The channel is split by responsibility (Redis t_*.c style):
 *   channel.c  lifecycle (open, close, release), shared lookups, method dispatch;
 *   declare.c  exchange/queue declare, bind/unbind, delete, purge;
 *   args.c     the one table of x-argument rules with RabbitMQ's reply texts;
 *   publish.c  publish assembly (basic.publish, content header, body), routing, confirms, tx;
 *   consume.c  consumers, the unacked ring, consume/cancel/get/ack/nack/reject/recover, qos;
 *   replyto.c  direct reply-to (amq.rabbitmq.reply-to).
 * Only these files include this header; the rest of the broker sees broker.h. */
#ifndef FERRY_CHANNEL_INT_H
#define FERRY_CHANNEL_INT_H

#include "auth.h"
#include "broker.h"

#define REPLY_TO "amq.rabbitmq.reply-to"
#define REPLY_TO_PREFIX "amq.rabbitmq.reply-to."

/* ---- channel.c: sending and shared lookups ---- */

/* The connection's output buffer, scheduled for flushing at the end of this batch. */
static inline buf *out(channel *ch) {
    conn_want_flush(ch->c);
    return &ch->c->out;
}
/* Sends a method without arguments. */
static inline void send_empty(channel *ch, unsigned mid) {
    buf *o = out(ch);
    frame_end(o, method_begin(o, ch->id, mid));
}
/* Arguments are well-formed when they decode completely, with nothing left over. */
static inline int args_bad(const rd *r) { return r->err || rd_left(r) != 0; }
/* Undecodable arguments: RabbitMQ answers 501 with the argument bytes. Returns -1. */
int syntax_error(channel *ch, unsigned mid);
/* Reads a field table argument and validates its encoding (r->err on a bad one). */
slice read_table(rd *r);
/* RabbitMQ's resource naming in error texts: "queue 'q' in vhost '/'" (static buffer; the
 * vhost is the one of the channel whose frame is being handled, rs_vhost). */
const char *rs(const char *kind, slice name);
extern const char *rs_vhost;
static inline const char *ch_vhost(const channel *ch) { return ch->c->vh ? ch->c->vh->name : "/"; }
/* "" in bind/consume/get/purge/delete means the channel's last declared queue. */
slice last_queue_or(channel *ch, slice name);
/* Another connection's exclusive queue: 405, returns -1 after closing the channel. */
int check_exclusive(channel *ch, queue *q, unsigned mid);
/* Looks a queue / exchange up; not found (or locked): closes the channel, NULL. */
queue *find_queue(channel *ch, slice name, unsigned mid);
exchange *find_exchange(channel *ch, slice name, unsigned mid);

/* ---- perm.c: permission checks; each returns 0, or -1 after closing the channel (403) ---- */

/* which: PERM_CONFIGURE, PERM_WRITE, PERM_READ (auth.h); kind "exchange" or "queue". */
int perm_check(channel *ch, int which, const char *kind, slice name, unsigned mid);
int perm_check_publish(channel *ch, slice xname);
int perm_check_topic(channel *ch, const exchange *x, int which, slice rkey, unsigned mid);
int perm_check_bind(channel *ch, const char *dst_kind, slice dst, slice src, slice key, unsigned mid);
int perm_check_new_queue(channel *ch, slice name, slice args);
int perm_check_new_exchange(channel *ch, slice name, slice args);

/* ---- declare.c ---- */

void exchange_declare(channel *ch, rd *r);
void exchange_delete(channel *ch, rd *r);
void exchange_bind(channel *ch, rd *r, unsigned mid); /* and exchange.unbind */
void queue_declare(channel *ch, rd *r);
void queue_bind(channel *ch, rd *r, unsigned mid); /* and queue.unbind */
void queue_purge_m(channel *ch, rd *r);
void queue_delete_m(channel *ch, rd *r);

/* queue.declare-ok with the queue's counts now. */
void send_declare_ok(channel *ch, queue *q);

/* ---- chwait.c: answers that wait for the store (one wait per channel at a time) ---- */

/* Method mid appended meta.log records: its answer okmid (unless nowait) waits for their
 * sync. CW_OK: a delete or unbind (done either way); CW_QUEUE_DECLARE: declare-ok for q;
 * CW_EXCHANGE_DECLARE (a: the name) and CW_BIND (a: source, b: destination, key, args):
 * on a failed sync these three are undone and the channel closed (RESOURCE_ERROR). */
void chwait_meta(channel *ch, int kind, unsigned mid, unsigned okmid, int nowait, queue *q, slice a, slice b,
                 slice key, slice args);
/* Sends okmid: with count for queue.delete-ok, no arguments for the others used here. */
void chwait_send_ok(channel *ch, unsigned okmid, uint32_t count);
/* basic.get found the head paged out: it runs again once the read-back is in. */
void chwait_get(channel *ch, queue *q, int no_ack);
/* Channel close: drops the wait. */
void chwait_release(channel *ch);

/* ---- args.c: argument rules; each returns 0, or -1 after closing the channel ---- */

/* queue.declare of a new queue: values, type support, Ferry's own arguments, and the
 * properties a quorum queue cannot have, in the order RabbitMQ checks them. */
int args_check_queue_declare(channel *ch, slice name, int durable, int exclusive, int auto_delete, slice args);
/* Redeclare: the arguments RabbitMQ compares must be equal. */
int args_check_queue_equivalent(channel *ch, slice name, slice have, slice got);
int args_check_exchange_equivalent(channel *ch, slice name, slice have, slice got);
/* Redeclare: a flag (durable, auto_delete, internal) must be equal. */
int check_flag(channel *ch, unsigned mid, const char *kind, slice name, const char *arg, int have, int got);
/* Bindings: x-match of a headers binding, the weight key of a consistent-hash binding. */
int check_x_match(channel *ch, slice args, unsigned mid);
int check_chash_key(channel *ch, slice key, unsigned mid);

/* ---- publish.c ---- */

void basic_publish(channel *ch, rd *r);
void content_header(channel *ch, const frame *f);
void content_body(channel *ch, const frame *f);
/* The message being assembled is complete: route it (or buffer it in a transaction). */
void publish_complete(channel *ch);
void confirm_select(channel *ch, rd *r);
void tx_method(channel *ch, unsigned mid); /* tx.select / commit / rollback */
/* Drops the publish in assembly, the transaction and the channel's place in the store's
 * and the broker's confirm lists (channel close). */
void publish_release(channel *ch);

/* ---- consume.c ---- */

/* How an unacked delivery ends: acked, given back to its queue, or rejected (dead-lettered
 * or dropped). */
enum { SETTLE_ACK, SETTLE_REQUEUE, SETTLE_REJECT };
void basic_qos(channel *ch, rd *r);
void basic_consume(channel *ch, rd *r);
void basic_cancel(channel *ch, rd *r);
void basic_get(channel *ch, rd *r);
/* basic.get's work once the queue is found: get-ok, get-empty, or a wait (chwait_get). */
void get_from(channel *ch, queue *q, int no_ack);
void basic_settle(channel *ch, rd *r, unsigned mid); /* ack, nack, reject */
void basic_recover(channel *ch, rd *r, unsigned mid);
/* tx.commit (settles the deliveries acked in the transaction) or tx.rollback (gives them
 * back, unacked). */
void tx_settle(channel *ch, int commit);
/* Credit freed on this channel may unblock consumers of other queues. */
void wake_channel_consumers(channel *ch);
/* A new consumer registered in the channel's map (q NULL: the reply-to pseudo-consumer). */
consumer *consumer_new(channel *ch, slice tag, queue *q, int no_ack, int exclusive, slice args);
void send_consume_ok(channel *ch, const consumer *cs);
/* Writes basic.deliver and the content. */
void write_deliver(channel *ch, const consumer *cs, uint64_t tag, int redelivered, message *m, slice props);
/* Cancels every consumer and requeues every unacked delivery, in order (channel close). */
void consume_release(channel *ch);
/* A stream delivery (tag) to cs waits for its ack: the entry holds the offset, no message. */
void consume_push_unacked(consumer *cs, uint64_t tag, uint64_t offset);

/* ---- stream.c ---- */

/* basic.consume on a stream queue (after the exclusive-consumer check). */
void stream_consume(channel *ch, queue *q, slice tag, int no_ack, int exclusive, int nowait, slice args);

/* ---- replyto.c ---- */

/* basic.consume on amq.rabbitmq.reply-to: makes the channel's reply pseudo-consumer. */
void replyto_consume(channel *ch, slice tag, int no_ack, int nowait, slice args);
/* The reply consumer cs leaves the channel: its key no longer routes. */
void replyto_forget(channel *ch, consumer *cs);
/* A publish whose reply-to is amq.rabbitmq.reply-to: the message with its reply-to set to
 * this channel's key (takes m's reference). NULL after closing the channel. */
message *replyto_request(channel *ch, message *m, slice reply_to_in_props);
/* A reply published to the default exchange with an amq.rabbitmq.reply-to.* key: 1 if
 * it went to the requester's channel. */
int deliver_reply(broker *b, message *m);

#endif
