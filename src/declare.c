/* declare.c — the topology methods: exchange and queue declare, bind/unbind, delete, purge.
 *
 * Each checks in RabbitMQ's order (names, existence, exclusivity, equivalence of flags and
 * arguments via args.c) before it changes anything; a durable change is written to the
 * store before the -ok is sent, and a store failure undoes it (RESOURCE_ERROR). */
#include "channel_int.h"

#include <stdio.h>
#include <stdlib.h>

#include "persist.h"
#include "util.h"

/* RabbitMQ's 405 for a queue another connection owns, or a different exclusive flag. */
static void locked(channel *ch, queue *q, unsigned mid) {
    channel_close_error(ch, RESOURCE_LOCKED, mid,
                        "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. It could be "
                        "originally declared on another connection or the exclusive property value does not "
                        "match that of the original declaration.",
                        q->name, ch_vhost(ch));
}

static void check_exclusive_mismatch(channel *ch, queue *q) { locked(ch, q, QUEUE_DECLARE); }

/* Records appended to meta.log so far (a method that moved it waits for their sync). */
static uint64_t meta_mark(channel *ch) { return store_meta_count(ch->c->b->store); }

/* Sends a method's -ok now, or, if it appended meta.log records since mark, once they are
 * synced (a delete or unbind: done in memory either way, as before). */
static void answer_after(channel *ch, uint64_t mark, unsigned okmid, int nowait, uint32_t count) {
    if (meta_mark(ch) != mark) {
        chwait_meta(ch, CW_OK, okmid, okmid, nowait, NULL, (slice){0}, (slice){0}, (slice){0}, (slice){0});
        ch->wait.count = count;
    } else if (!nowait) {
        chwait_send_ok(ch, okmid, count);
    }
}

/* Adds (queue.bind, exchange.bind) or removes (the unbinds) a binding from src to a queue
 * or an exchange, and stores the change if the binding is durable. Binding twice, or
 * unbinding what is not bound, changes nothing. Returns -1 after closing the channel; for
 * a bind, 1 if its record waits for the sync (the caller answers through chwait_meta). */
static int change_binding(channel *ch, unsigned mid, exchange *src, queue *q, exchange *dstx, slice key, slice args) {
    store *s = ch->c->b->store;
    binding *bd = binding_find(src, q, dstx, key, args);
    if (mid == QUEUE_UNBIND || mid == EXCHANGE_UNBIND) {
        if (bd) {
            persist_binding(s, bd, 0);
            binding_remove(bd);
        }
        return 0;
    }
    if (src->subtype == EX_HEADERS && check_x_match(ch, args, mid) < 0)
        return -1;
    if (src->subtype == EX_CHASH && check_chash_key(ch, key, mid) < 0)
        return -1;
    if (bd)
        return 0;
    bd = binding_add(src, q, dstx, key, args);
    int rc = persist_binding(s, bd, 1);
    if (rc < 0) {
        binding_remove(bd);
        channel_close_error(ch, RESOURCE_ERROR, mid, "cannot store a durable binding: the disk is full or failing");
        return -1;
    }
    return rc > 0;
}

/* A bind whose record waits for the sync: bind-ok then, or undone if it fails. */
static void bind_wait(channel *ch, unsigned mid, unsigned okmid, int nowait, exchange *src, slice dst, slice key,
                      slice args) {
    chwait_meta(ch, CW_BIND, mid, okmid, nowait, NULL, (slice){(const uint8_t *)src->name, src->name_len}, dst, key,
                args);
}

/* ---- exchange class ---- */

void exchange_declare(channel *ch, rd *r) {
    rd_u16(r);
    slice name = rd_shortstr(r);
    slice type = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    slice args = read_table(r);
    if (args_bad(r)) {
        syntax_error(ch, EXCHANGE_DECLARE);
        return;
    }
    int passive = bits & 1, durable = (bits >> 1) & 1, auto_delete = (bits >> 2) & 1, internal = (bits >> 3) & 1,
        nowait = (bits >> 4) & 1;
    broker *b = ch->c->b;
    if (name.n == 0) {
        channel_close_error(ch, ACCESS_REFUSED, EXCHANGE_DECLARE, "operation not permitted on the default exchange");
        return;
    }
    exchange *x = broker_exchange(ch->c->vh, name);
    if (passive) {
        if (!x) {
            channel_close_error(ch, NOT_FOUND, EXCHANGE_DECLARE, "%s", rs("no exchange", name));
            return;
        }
    } else {
        int t, subtype = -1;
        char why[200];
        if (exchange_type_parse(type, &t) < 0) {
            conn_close_error(ch->c, COMMAND_INVALID, EXCHANGE_DECLARE, "unknown exchange type '%.*s'", (int)type.n,
                             (const char *)type.p);
            return;
        }
        if (perm_check(ch, PERM_CONFIGURE, "exchange", name, EXCHANGE_DECLARE) < 0)
            return;
        if (!x && !slice_prefix(name, "amq.") && perm_check_new_exchange(ch, name, args) < 0)
            return;
        if (t == EX_DELAYED && delayed_check_declare(ch, args, &subtype) < 0)
            return;
        if ((t == EX_CHASH || subtype == EX_CHASH) && chash_check_args(args, why, sizeof why) < 0) {
            channel_close_error(ch, PRECONDITION_FAILED, EXCHANGE_DECLARE, "%s", why);
            return;
        }
        if (x) {
            if (x->type != t) {
                channel_close_error(ch, PRECONDITION_FAILED, EXCHANGE_DECLARE,
                                    "inequivalent arg 'type' for %s: received '%.*s' but "
                                    "current is '%s'",
                                    rs("exchange", name), (int)type.n, (const char *)type.p, exchange_type_name(x->type));
                return;
            }
            if (check_flag(ch, EXCHANGE_DECLARE, "exchange", name, "durable", x->durable, durable) < 0 ||
                check_flag(ch, EXCHANGE_DECLARE, "exchange", name, "auto_delete", x->auto_delete, auto_delete) < 0 ||
                check_flag(ch, EXCHANGE_DECLARE, "exchange", name, "internal", x->internal, internal) < 0 ||
                args_check_exchange_equivalent(ch, name, (slice){x->args, x->args_len}, args) < 0)
                return;
        } else {
            if (slice_prefix(name, "amq.")) {
                channel_close_error(ch, ACCESS_REFUSED, EXCHANGE_DECLARE,
                                    "exchange name '%.*s' contains reserved prefix 'amq.*'", (int)name.n,
                                    (const char *)name.p);
                return;
            }
            x = exchange_new(ch->c->vh, name, t, durable, auto_delete, internal, args);
            if (subtype >= 0)
                x->subtype = subtype;
            broker_add_exchange(x);
            int rc = persist_exchange(b->store, x, 1);
            if (rc < 0) {
                x->durable = 0; /* nothing to un-store */
                broker_remove_exchange(x);
                channel_close_error(ch, RESOURCE_ERROR, EXCHANGE_DECLARE,
                                    "cannot store durable %s: the disk is full or failing", rs("exchange", name));
                return;
            }
            if (rc > 0) { /* declare-ok once synced */
                chwait_meta(ch, CW_EXCHANGE_DECLARE, EXCHANGE_DECLARE, EXCHANGE_DECLARE_OK, nowait, NULL, name,
                            (slice){0}, (slice){0}, (slice){0});
                return;
            }
        }
    }
    if (!nowait)
        send_empty(ch, EXCHANGE_DECLARE_OK);
}

/* exchange.delete: the default and amq.* exchanges cannot be deleted; if-unused counts
 * only bindings where the exchange is the source; deleting what is not there is fine. */
void exchange_delete(channel *ch, rd *r) {
    rd_u16(r);
    slice name = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    if (args_bad(r)) {
        syntax_error(ch, EXCHANGE_DELETE);
        return;
    }
    int if_unused = bits & 1, nowait = (bits >> 1) & 1;
    if (name.n == 0) {
        channel_close_error(ch, ACCESS_REFUSED, EXCHANGE_DELETE, "operation not permitted on the default exchange");
        return;
    }
    if (slice_prefix(name, "amq.")) {
        channel_close_error(ch, ACCESS_REFUSED, EXCHANGE_DELETE, "deletion of system %s not allowed",
                            rs("exchange", name));
        return;
    }
    if (perm_check(ch, PERM_CONFIGURE, "exchange", name, EXCHANGE_DELETE) < 0)
        return;
    exchange *x = broker_exchange(ch->c->vh, name);
    uint64_t mark = meta_mark(ch);
    if (x) {
        if (if_unused && x->nbindings) { /* only bindings where it is the source count */
            channel_close_error(ch, PRECONDITION_FAILED, EXCHANGE_DELETE, "%s in use", rs("exchange", name));
            return;
        }
        broker_remove_exchange(x);
    }
    answer_after(ch, mark, EXCHANGE_DELETE_OK, nowait, 0);
}

/* exchange.bind / exchange.unbind: destination, source, key, no-wait, arguments. */
void exchange_bind(channel *ch, rd *r, unsigned mid) {
    rd_u16(r);
    slice dst = rd_shortstr(r);
    slice src = rd_shortstr(r);
    slice key = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    slice args = read_table(r);
    if (args_bad(r)) {
        syntax_error(ch, mid);
        return;
    }
    if (perm_check_bind(ch, "exchange", dst, src, key, mid) < 0) /* and the default exchange */
        return;
    if (mid == EXCHANGE_UNBIND) { /* RabbitMQ: unbinding what is not there is fine */
        exchange *d = broker_exchange(ch->c->vh, dst), *s = broker_exchange(ch->c->vh, src);
        uint64_t mark = meta_mark(ch);
        if (d && s)
            change_binding(ch, mid, s, NULL, d, key, args);
        answer_after(ch, mark, EXCHANGE_UNBIND_OK, bits & 1, 0);
        return;
    }
    exchange *d = find_exchange(ch, dst, mid);
    if (!d)
        return;
    exchange *s = find_exchange(ch, src, mid);
    int rc = s ? change_binding(ch, mid, s, NULL, d, key, args) : -1;
    if (rc < 0)
        return;
    if (rc > 0)
        bind_wait(ch, mid, EXCHANGE_BIND_OK, bits & 1, s, dst, key, args);
    else if (!(bits & 1))
        send_empty(ch, EXCHANGE_BIND_OK);
}

/* ---- queue class ---- */

void send_declare_ok(channel *ch, queue *q) {
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, QUEUE_DECLARE_OK);
    buf_shortstr(o, q->name, q->name_len);
    buf_u32(o, (uint32_t)queue_ready_count(q));
    buf_u32(o, (uint32_t)q->nconsumers);
    frame_end(o, m);
}

/* queue.declare: passive (exists?), redeclare (must be equivalent) or create (arguments
 * checked, stored if durable); the queue becomes the channel's last declared queue. */
void queue_declare(channel *ch, rd *r) {
    rd_u16(r);
    slice name = rd_shortstr(r);
    uint8_t bits = rd_u8(r);
    slice args = read_table(r);
    if (args_bad(r)) {
        syntax_error(ch, QUEUE_DECLARE);
        return;
    }
    int passive = bits & 1, durable = (bits >> 1) & 1, exclusive = (bits >> 2) & 1, auto_delete = (bits >> 3) & 1,
        nowait = (bits >> 4) & 1;
    broker *b = ch->c->b;
    char gen[64];
    if (name.n == 0 && !passive) {
        /* Server-named queue, as RabbitMQ names them. */
        memcpy(gen, "amq.gen-", 8);
        broker_random_name(gen + 8, 22);
        name = (slice){(const uint8_t *)gen, 30};
    }
    name = last_queue_or(ch, name);
    if (!passive && slice_prefix(name, "amq.") && name.p != (const uint8_t *)gen) {
        channel_close_error(ch, ACCESS_REFUSED, QUEUE_DECLARE, "queue name '%.*s' contains reserved prefix 'amq.*'",
                            (int)name.n, (const char *)name.p);
        return;
    }
    if (!passive && perm_check(ch, PERM_CONFIGURE, "queue", name, QUEUE_DECLARE) < 0)
        return;
    queue *q = passive ? find_queue(ch, name, QUEUE_DECLARE) : broker_queue(ch->c->vh, name);
    if (passive) {
        if (!q)
            return;
        fval rv;
        /* Ferry's dead-letter redrive (until the management API exists): a passive declare
         * with x-ferry-redrive = N moves up to N messages back to their x-death queue.
         * RabbitMQ ignores arguments on a passive declare, so this is harmless there. */
        if (args.n && table_get(args, "x-ferry-redrive", &rv) && fval_is_int(&rv) && rv.i > 0)
            deadletter_redrive(q, (size_t)rv.i);
    } else if (q) {
        /* RabbitMQ: another connection's exclusive queue, or a different exclusive flag,
         * is a locked queue (405), not an inequivalent argument. */
        if (check_exclusive(ch, q, QUEUE_DECLARE) < 0)
            return;
        if (q->exclusive != exclusive) {
            check_exclusive_mismatch(ch, q);
            return;
        }
        if (check_flag(ch, QUEUE_DECLARE, "queue", name, "durable", q->durable, durable) < 0 ||
            check_flag(ch, QUEUE_DECLARE, "queue", name, "auto_delete", q->auto_delete, auto_delete) < 0 ||
            args_check_queue_equivalent(ch, name, (slice){q->args, q->args_len}, args) < 0)
            return;
    } else {
        if (perm_check_new_queue(ch, name, args) < 0)
            return;
        if (args_check_queue_declare(ch, name, durable, exclusive, auto_delete, args) < 0)
            return;
        q = queue_new(ch->c->vh, name, durable, exclusive, auto_delete, ch->c, args);
        broker_add_queue(q);
        int rc = persist_queue(b->store, q, 1);
        if (rc < 0) {
            queue_delete(q);
            channel_close_error(ch, RESOURCE_ERROR, QUEUE_DECLARE,
                                "cannot store durable %s: the disk is full or failing", rs("queue", name));
            return;
        }
        if (q->is_stream)
            stream_attach(q, 1); /* its log: files appear with its first record */
        /* Every queue is bound to the default exchange by its name (implicitly). */
        if (rc > 0) { /* declare-ok once its record is synced */
            snprintf(ch->last_queue, sizeof ch->last_queue, "%s", q->name);
            queue_touch(q);
            chwait_meta(ch, CW_QUEUE_DECLARE, QUEUE_DECLARE, QUEUE_DECLARE_OK, nowait, q,
                        (slice){(const uint8_t *)q->name, q->name_len}, (slice){0}, (slice){0}, (slice){0});
            return;
        }
    }
    snprintf(ch->last_queue, sizeof ch->last_queue, "%s", q->name);
    queue_touch(q);
    if (!nowait)
        send_declare_ok(ch, q);
}

/* queue.bind and queue.unbind (unbind has no no-wait bit). */
void queue_bind(channel *ch, rd *r, unsigned mid) {
    rd_u16(r);
    slice qname = rd_shortstr(r);
    slice xname = rd_shortstr(r);
    slice key = rd_shortstr(r);
    uint8_t bits = mid == QUEUE_BIND ? rd_u8(r) : 0;
    slice args = read_table(r);
    if (args_bad(r)) {
        syntax_error(ch, mid);
        return;
    }
    qname = last_queue_or(ch, qname);
    if (qname.n == 0) {
        channel_close_error(ch, NOT_FOUND, mid, "no previously declared queue");
        return;
    }
    if (perm_check_bind(ch, "queue", qname, xname, key, mid) < 0) /* and the default exchange */
        return;
    if (mid == QUEUE_UNBIND) { /* RabbitMQ: unbinding what is not there is fine */
        queue *q = broker_queue(ch->c->vh, qname);
        exchange *x = broker_exchange(ch->c->vh, xname);
        if (q && check_exclusive(ch, q, mid) < 0)
            return;
        uint64_t mark = meta_mark(ch);
        if (q && x)
            change_binding(ch, mid, x, q, NULL, key, args);
        answer_after(ch, mark, QUEUE_UNBIND_OK, 0, 0);
        return;
    }
    queue *q = find_queue(ch, qname, mid);
    if (!q)
        return;
    exchange *x = find_exchange(ch, xname, mid);
    int rc = x ? change_binding(ch, mid, x, q, NULL, key, args) : -1;
    if (rc < 0)
        return;
    if (rc > 0)
        bind_wait(ch, mid, QUEUE_BIND_OK, bits & 1, x, (slice){(const uint8_t *)q->name, q->name_len}, key, args);
    else if (!(bits & 1))
        send_empty(ch, QUEUE_BIND_OK);
}

/* Sends an -ok carrying a message count (purge-ok, delete-ok). */
static void send_count(channel *ch, unsigned mid, size_t n) {
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, mid);
    buf_u32(o, (uint32_t)n);
    frame_end(o, m);
}

/* queue.purge: drops the ready messages (not the unacked ones), answers their count. */
void queue_purge_m(channel *ch, rd *r) {
    rd_u16(r);
    slice name = last_queue_or(ch, rd_shortstr(r));
    uint8_t bits = rd_u8(r);
    if (args_bad(r)) {
        syntax_error(ch, QUEUE_PURGE);
        return;
    }
    if (name.n && perm_check(ch, PERM_READ, "queue", name, QUEUE_PURGE) < 0)
        return;
    queue *q = find_queue(ch, name, QUEUE_PURGE);
    if (!q)
        return;
    if (q->is_stream) { /* RabbitMQ's refusal, a connection error */
        conn_close_error(ch->c, NOT_IMPLEMENTED, QUEUE_PURGE, "queue.purge not supported by stream queues %s",
                         rs("queue", name));
        return;
    }
    size_t n = queue_purge(q);
    if (!(bits & 1))
        send_count(ch, QUEUE_PURGE_OK, n);
}

/* queue.delete with if-unused / if-empty; deleting what is not there answers 0. */
void queue_delete_m(channel *ch, rd *r) {
    rd_u16(r);
    slice name = last_queue_or(ch, rd_shortstr(r));
    uint8_t bits = rd_u8(r);
    if (args_bad(r)) {
        syntax_error(ch, QUEUE_DELETE);
        return;
    }
    int if_unused = bits & 1, if_empty = (bits >> 1) & 1, nowait = (bits >> 2) & 1;
    if (name.n && perm_check(ch, PERM_CONFIGURE, "queue", name, QUEUE_DELETE) < 0)
        return;
    queue *q = broker_queue(ch->c->vh, name);
    size_t n = 0;
    uint64_t mark = meta_mark(ch);
    if (q) {
        if (check_exclusive(ch, q, QUEUE_DELETE) < 0)
            return;
        if (if_unused && q->nconsumers) {
            channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DELETE, "%s in use", rs("queue", name));
            return;
        }
        if (if_empty && queue_ready_count(q)) {
            channel_close_error(ch, PRECONDITION_FAILED, QUEUE_DELETE, "%s not empty", rs("queue", name));
            return;
        }
        n = queue_delete(q);
    }
    answer_after(ch, mark, QUEUE_DELETE_OK, nowait, (uint32_t)n);
}


