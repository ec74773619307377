/* channel.c — the AMQP channel: its lifecycle and method dispatch.
 *
 * A channel is created by channel.open (conn.c), receives its frames through channel_frame
 * and dispatches each method to the file that owns it (see channel_int.h for the map).
 * Each method is decoded with a bounds-checked reader (a truncated argument list is a
 * SYNTAX_ERROR) and checked in the order RabbitMQ checks it, so that clients see the same
 * reply code and, as far as practical, the same reply text. Soft errors close the channel
 * (channel_close_error), hard ones the connection (conn_close_error). Closing a channel
 * gives everything back: consumers are cancelled, unacked deliveries requeued in order.
 *
 * The lookups every method file shares (queues, exchanges, the last declared queue, the
 * texts RabbitMQ names resources with) live here too. */
#include "channel_int.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

/* ---- sending ---- */

/* Sends channel.close naming the failed method. */
static void send_channel_close(channel *ch, int code, const char *text, unsigned mid) {
    buf *o = out(ch);
    size_t m = method_begin(o, ch->id, CHANNEL_CLOSE);
    buf_u16(o, (uint16_t)code);
    buf_shortstr(o, text, strlen(text));
    buf_u16(o, (uint16_t)(mid >> 16));
    buf_u16(o, (uint16_t)(mid & 0xffff));
    frame_end(o, m);
}

/* ---- channel lifecycle ---- */

/* A new open channel of connection c. */
channel *channel_new(conn *c, uint16_t id) {
    channel *ch = xcalloc(1, sizeof *ch);
    ch->id = id;
    ch->c = c;
    c->b->cnt.chan_created++;
    ch->flow_active = 1;
    map_init(&ch->consumers);
    return ch;
}


/* Gives everything back: consumers cancelled, unacked deliveries requeued in order, the
 * publish in assembly and the transaction dropped. */
static void channel_release(channel *ch) {
    chwait_release(ch);
    consume_release(ch);
    publish_release(ch);
}

/* Releases everything and frees the channel (connection close, channel close-ok). */
void channel_free(channel *ch) {
    ch->c->b->cnt.chan_closed++;
    channel_release(ch);
    map_free(&ch->consumers);
    free(ch->cwait);
    free(ch->unacked.a);
    free(ch->txops);
    free(ch->pub_allowed);
    free(ch);
}

/* A soft error: channel.close with code and text; the channel accepts only close / close-ok
 * from now on (spec 2.2.4) and holds nothing more. */
void channel_close_error(channel *ch, int code, unsigned class_method, const char *fmt, ...) {
    if (ch->closing)
        return;
    char text[256];
    int n = snprintf(text, sizeof text, "%s - ", reply_code_name(code));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text + n, sizeof text - (size_t)n, fmt, ap);
    va_end(ap);
    log_debug("connection %llu channel %u: %s", (unsigned long long)ch->c->id, ch->id, text);
    send_channel_close(ch, code, text, class_method);
    channel_release(ch);
    ch->closing = 1;
    /* a closing channel holds nothing: every later frame but close / close-ok is ignored */
    assert(!ch->pending && !ch->expect && !ch->nunacked && !ch->ntx && !ch->ncwait && !ch->in_confirms);
}

/* ---- lookups shared by the method files ---- */

/* RabbitMQ's resource naming in error texts: "queue 'q' in vhost '/'". */
const char *rs_vhost = "/";

const char *rs(const char *kind, slice name) {
    static char text[600];
    snprintf(text, sizeof text, "%s '%.*s' in vhost '%s'", kind, (int)name.n, (const char *)name.p, rs_vhost);
    return text;
}

/* "" names the channel's last declared queue (bind, consume, get, purge, delete). */
slice last_queue_or(channel *ch, slice name) {
    if (name.n == 0)
        return slice_str(ch->last_queue);
    return name;
}


/* Another connection's exclusive queue is locked (405); returns -1 after closing the channel. */
int check_exclusive(channel *ch, queue *q, unsigned mid) {
    if (q->exclusive && q->owner != ch->c) {
        channel_close_error(ch, RESOURCE_LOCKED, mid,
                            "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. It could be "
                            "originally declared on another connection or the exclusive property value does not "
                            "match that of the original declaration.",
                            q->name, ch_vhost(ch));
        return -1;
    }
    return 0;
}

/* The queue a method names, or NULL after closing the channel (404, or 405 if locked). */
queue *find_queue(channel *ch, slice name, unsigned mid) {
    if (name.n == 0) { /* "" means the channel's last declared queue, and there was none */
        channel_close_error(ch, NOT_FOUND, mid, "no previously declared queue");
        return NULL;
    }
    queue *q = broker_queue(ch->c->vh, name);
    if (!q) {
        channel_close_error(ch, NOT_FOUND, mid, "%s", rs("no queue", name));
        return NULL;
    }
    if (check_exclusive(ch, q, mid) < 0)
        return NULL;
    return q;
}

/* The exchange a method names, or NULL after closing the channel (404). */
exchange *find_exchange(channel *ch, slice name, unsigned mid) {
    exchange *x = broker_exchange(ch->c->vh, name);
    if (!x)
        channel_close_error(ch, NOT_FOUND, mid, "%s", rs("no exchange", name));
    return x;
}

/* Undecodable arguments: RabbitMQ answers 501 with the argument bytes, as here. */
int syntax_error(channel *ch, unsigned mid) {
    char oct[160];
    wire_format_octets(ch->args.p, ch->args.n, oct, sizeof oct);
    conn_close_error(ch->c, FRAME_ERROR, mid, "cannot decode %s", oct);
    return -1;
}

/* Reads a field table argument and validates its encoding. */
slice read_table(rd *r) {
    slice t = rd_longstr(r);
    if (!r->err && table_validate(t) < 0)
        r->err = 1;
    return t;
}


/* ---- dispatch ---- */

/* A frame other than the content the channel waits for (RabbitMQ's texts). */
static void content_expected(channel *ch) {
    if (ch->expect == FRAME_HEADER)
        conn_close_error(ch->c, UNEXPECTED_FRAME, BASIC_PUBLISH,
                         "expected content header for class 60, got non content header frame instead");
    else
        conn_close_error(ch->c, UNEXPECTED_FRAME, BASIC_PUBLISH,
                         "expected content body, got non content body frame instead");
}

/* One method frame: only close / close-ok while closing, an error while content is
 * expected, else dispatched to the file that owns the method. */
static void channel_method(channel *ch, const frame *f) {
    rd r = rd_make(f->payload, f->size);
    unsigned mid = rd_u32(&r);
    conn *c = ch->c;
    ch->args = (slice){f->payload + 4, f->size - 4}; /* for error texts */
    if (ch->closing) {
        /* After we sent channel.close only close / close-ok count (spec 2.2.4). A close
         * from the client crossed ours: as RabbitMQ, answer it and still wait for the
         * close-ok our close requires; the channel number stays taken until then. */
        if (mid == CHANNEL_CLOSE_OK)
            conn_forget_channel(c, ch->id);
        else if (mid == CHANNEL_CLOSE)
            send_empty(ch, CHANNEL_CLOSE_OK);
        else if (mid == CHANNEL_OPEN)
            conn_close_error(c, CHANNEL_ERROR, mid, "second 'channel.open' seen");
        return;
    }
    if (ch->expect) {
        content_expected(ch);
        return;
    }
    switch (mid) {
    case CHANNEL_OPEN: conn_close_error(c, CHANNEL_ERROR, mid, "second 'channel.open' seen"); return;
    case CHANNEL_FLOW: {
        uint8_t active = rd_u8(&r) & 1;
        if (args_bad(&r))
            return (void)syntax_error(ch, mid);
        if (!active) { /* RabbitMQ does not implement client-side flow control */
            conn_close_error(c, NOT_IMPLEMENTED, mid, "active=false");
            return;
        }
        ch->flow_active = active;
        buf *o = out(ch);
        size_t m = method_begin(o, ch->id, CHANNEL_FLOW_OK);
        buf_u8(o, active);
        frame_end(o, m);
        if (active)
            wake_channel_consumers(ch);
        return;
    }
    case CHANNEL_FLOW_OK: return;
    case CHANNEL_CLOSE:
        send_empty(ch, CHANNEL_CLOSE_OK);
        conn_forget_channel(c, ch->id);
        return;
    case CHANNEL_CLOSE_OK: break; /* we never sent close */
    case EXCHANGE_DECLARE: return exchange_declare(ch, &r);
    case EXCHANGE_DELETE: return exchange_delete(ch, &r);
    case EXCHANGE_BIND:
    case EXCHANGE_UNBIND: return exchange_bind(ch, &r, mid);
    case QUEUE_DECLARE: return queue_declare(ch, &r);
    case QUEUE_BIND:
    case QUEUE_UNBIND: return queue_bind(ch, &r, mid);
    case QUEUE_PURGE: return queue_purge_m(ch, &r);
    case QUEUE_DELETE: return queue_delete_m(ch, &r);
    case BASIC_QOS: return basic_qos(ch, &r);
    case BASIC_CONSUME: return basic_consume(ch, &r);
    case BASIC_CANCEL: return basic_cancel(ch, &r);
    case BASIC_PUBLISH: return basic_publish(ch, &r);
    case BASIC_GET: return basic_get(ch, &r);
    case BASIC_ACK:
    case BASIC_REJECT:
    case BASIC_NACK: return basic_settle(ch, &r, mid);
    case BASIC_RECOVER:
    case BASIC_RECOVER_ASYNC: return basic_recover(ch, &r, mid);
    case CONFIRM_SELECT: return confirm_select(ch, &r);
    case TX_SELECT:
    case TX_COMMIT:
    case TX_ROLLBACK: return tx_method(ch, mid);
    }
    unsigned cls = mid >> 16, m = mid & 0xffff;
    /* Methods only a server sends, connection methods on a channel: "unimplemented" as
     * RabbitMQ says; a method the spec does not have at all: 540. */
    if (method_name(mid)[0] != 'u' || (cls == CLASS_CONNECTION && m <= 71))
        conn_close_error(c, COMMAND_INVALID, mid, "unimplemented method");
    else
        conn_close_error(c, NOT_IMPLEMENTED, mid, "unknown method %u.%u", cls, m);
}

/* One frame for this channel: a method, or the content header / body of a publish. */
void channel_frame(channel *ch, const frame *f) {
    rs_vhost = ch_vhost(ch); /* RabbitMQ names resources with their vhost in error texts */
    switch (f->type) {
    case FRAME_METHOD: channel_method(ch, f); return;
    case FRAME_HEADER:
    case FRAME_BODY:
        if (ch->closing)
            return;
        if (ch->expect != f->type) {
            if (ch->expect)
                content_expected(ch);
            else
                conn_close_error(ch->c, UNEXPECTED_FRAME, 0, "expected method frame, got non method frame instead");
            return;
        }
        if (f->type == FRAME_BODY) {
            content_body(ch, f);
            return;
        }
        content_header(ch, f);
        if (ch->expect == FRAME_BODY && ch->pending && ch->pending_size == 0)
            publish_complete(ch);
        return;
    }
}
