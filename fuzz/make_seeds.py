#!/usr/bin/env python3
"""make_seeds.py — writes the seed corpus of fuzz_conn (fuzz/corpus_conn/).

Each seed is a script in fuzz_conn.c's input language: one settings byte, then
operations. The encoders below mirror that file's decoder (do_op, do_global,
queue_args, put_props, ...): keep them in step. The seeds walk the paths a random
mutation reaches only by luck: dead-letter cycles, priorities, confirms on durable
queues, transactions, exchange-to-exchange bindings, consistent hashing, delayed
messages, quorum delivery limits, direct reply-to, overflow modes, single active
consumer, retries, deduplication, paging, the memory alarm, crossing closes.

Usage: python3 fuzz/make_seeds.py  (rewrites fuzz/corpus_conn/seed_*)
"""
import os
import struct

QUEUES = ["q0", "q1", "q2", "dlq", "", "amq.rabbitmq.reply-to", "amq.q", "q3", "\1gen"]
EXCHANGES = ["", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "x0",
             "x1", "x2", "x3", "dlx", "amq.match", "nope"]
KEYS = ["q0", "q1", "q2", "dlq", "a.b", "a.*", "#", "*.b.#", "a.b.c", "1", "2",
        "10", "", "amq.rabbitmq.reply-to", "q3", "\1reply"]
XTYPES = ["direct", "fanout", "topic", "headers", "x-consistent-hash",
          "x-delayed-message", "x-bogus"]
TAGS = ["", "c0", "c1", "c2", "\1ctag"]  # "\1...": a name the broker generated (learned)
OVERFLOW = ["drop-head", "reject-publish", "reject-publish-dlx"]
QTYPES = ["classic", "quorum"]
EXPIRATION = ["0", "1", "50", "1000", "60000", "-1", "x", ""]


def num(v):
    """The byte number() decodes to v."""
    if v in (0, 1):
        return v
    for scale, top in ((1, 0x20), (10, 0x40), (100, 0x60), (1000, 0x80)):
        if v % scale == 0 and v // scale < 32:
            return top | (v // scale)
    if 252 <= v <= 255:
        return 0xa0 | (255 - v)
    raise ValueError(v)


def idx(table, name):
    return table.index(name)


class Script:
    def __init__(self, settings=0):
        self.b = bytearray([settings])

    def op(self, conn, code, ch=1, *fields):
        self.b += bytes([(conn << 6) | code, ch - 1])
        for f in fields:
            self.b += bytes(f) if isinstance(f, (bytes, bytearray, list)) else bytes([f])
        return self

    # global operations
    def step(self):
        self.b += bytes([0xc0, 0])
        return self

    def later(self, ms):
        """Advances the fake clock (ms: a multiple of 5 up to 635, or whole seconds)."""
        if ms % 1000 == 0 and ms >= 1000:
            t = 0x80 | (ms // 1000)
        else:
            assert ms % 5 == 0 and ms // 5 < 0x80
            t = ms // 5
        self.b += bytes([0xc2, 0, t])
        return self

    def drop(self, conn):
        self.b += bytes([0xc4, conn])
        return self

    def reconnect(self, conn):
        self.b += bytes([0xc5, conn])
        return self

    # channel-level methods
    def open(self, conn=0, ch=1):
        return self.op(conn, 0, ch)

    def close(self, conn=0, ch=1):
        return self.op(conn, 2, ch)

    def close_ok(self, conn=0, ch=1):
        return self.op(conn, 3, ch)

    def xdeclare(self, name, xtype, conn=0, ch=1, flags=0, ae=None, delayed_type=None):
        m = (1 if ae is not None else 0) | (2 if delayed_type is not None else 0)
        f = [idx(EXCHANGES, name), idx(XTYPES, xtype), flags, m]
        if ae is not None:
            f.append(idx(EXCHANGES, ae))
        if delayed_type is not None:
            f.append(idx(XTYPES, delayed_type))
        return self.op(conn, 5, ch, *f)

    def xbind(self, dst, src, key, conn=0, ch=1):
        return self.op(conn, 9, ch, idx(EXCHANGES, dst), idx(EXCHANGES, src), idx(KEYS, key), 0, 0)

    def qdeclare(self, name, conn=0, ch=1, flags=0, **args):
        """flags: 1 passive, 2 durable, 4 exclusive, 8 auto-delete, 16 nowait."""
        m = 0
        f = []
        if "max_priority" in args:
            m |= 1
            f += [3, args["max_priority"]]
        for bit, k in ((2, "ttl"), (4, "max_length"), (8, "max_length_bytes")):
            if k in args:
                m |= bit
                f += [3, num(args[k])]
        if "overflow" in args:
            m |= 16
            f.append(idx(OVERFLOW, args["overflow"]))
        if "dlx" in args:
            m |= 32
            f.append(idx(EXCHANGES, args["dlx"]))
        if "dlk" in args:
            m |= 64
            f.append(idx(KEYS, args["dlk"]))
        if "expires" in args:
            m |= 128
            f += [3, num(args["expires"])]
        if "qtype" in args:
            m |= 256
            f.append(idx(QTYPES, args["qtype"]))
        if "sac" in args:
            m |= 512
            f.append(1)
        if "delivery_limit" in args:
            m |= 1024
            f += [3, num(args["delivery_limit"])]
        if "retry" in args:
            m |= 2048
            f.append(len(args["retry"]))
            f += [num(v) for v in args["retry"]]
        if "dedup" in args:
            m |= 4096
            f += [3, num(args["dedup"])]
        return self.op(conn, 11, ch, idx(QUEUES, name), flags, m >> 8, m & 255, *f)

    def qbind(self, q, x, key, conn=0, ch=1, xmatch=None, h=None):
        m = (1 if xmatch is not None else 0) | (2 if h is not None else 0)
        f = [idx(QUEUES, q), idx(EXCHANGES, x), idx(KEYS, key), 0, m]
        if xmatch is not None:
            f.append(["all", "any"].index(xmatch))
        if h is not None:
            f.append(idx(KEYS, h))
        return self.op(conn, 15, ch, *f)

    def qdelete(self, q, conn=0, ch=1, flags=0):
        return self.op(conn, 19, ch, idx(QUEUES, q), flags)

    def purge(self, q, conn=0, ch=1):
        return self.op(conn, 18, ch, idx(QUEUES, q), 0)

    def qos(self, count, conn=0, ch=1, glob=0):
        return self.op(conn, 20, ch, glob, num(count))

    def consume(self, q, tag="c0", conn=0, ch=1, flags=0, priority=None):
        """flags: 1 no-local, 2 no-ack, 4 exclusive, 8 nowait."""
        f = [idx(QUEUES, q), idx(TAGS, tag), flags | (16 if priority is not None else 0)]
        if priority is not None:
            f += [3, num(priority)]
        return self.op(conn, 21, ch, *f)

    def cancel(self, tag="c0", conn=0, ch=1):
        return self.op(conn, 24, ch, idx(TAGS, tag), 0)

    def publish(self, x, key, conn=0, ch=1, size=10, mandatory=0, persistent=None,
                priority=None, expiration=None, msgid=None, reply_to=None, delay=None, h=None):
        m = 0
        f = []
        hm = (1 if delay is not None else 0) | (2 if h is not None else 0)
        if hm:
            m |= 2
            f.append(hm)
            if delay is not None:
                f += [3, num(delay)]
            if h is not None:
                f.append(idx(KEYS, h))
        if persistent is not None:
            m |= 4
            f.append(1 if persistent else 0)
        if priority is not None:
            m |= 8
            f.append(priority)
        if reply_to is not None:
            m |= 32
            f.append(idx(KEYS, reply_to))
        if expiration is not None:
            m |= 64
            f.append(idx(EXPIRATION, expiration))
        if msgid is not None:
            m |= 128
            f.append(msgid)
        return self.op(conn, 25, ch, idx(EXCHANGES, x), idx(KEYS, key), mandatory, size,
                       m >> 8, m & 255, *f)

    def get(self, q, conn=0, ch=1, no_ack=0):
        return self.op(conn, 31, ch, idx(QUEUES, q), no_ack)

    def ack(self, tag, conn=0, ch=1, multiple=0):
        return self.op(conn, 33, ch, (tag & 15) | (multiple << 4))

    def nack(self, tag, conn=0, ch=1, multiple=0, requeue=1):
        return self.op(conn, 35, ch, (tag & 15) | ((multiple | requeue << 1) << 4))

    def reject(self, tag, conn=0, ch=1, requeue=0):
        return self.op(conn, 36, ch, (tag & 15) | (requeue << 4))

    def recover(self, conn=0, ch=1):
        return self.op(conn, 37, ch, 1, 1)

    def confirm(self, conn=0, ch=1):
        return self.op(conn, 38, ch, 0)

    def tx_select(self, conn=0, ch=1):
        return self.op(conn, 39, ch)

    def commit(self, conn=0, ch=1):
        return self.op(conn, 40, ch)

    def rollback(self, conn=0, ch=1):
        return self.op(conn, 42, ch)

    def conn_close(self, conn=0):
        return self.op(conn, 48, 1)


def seeds():
    s = {}
    s["basic"] = (Script().open().qdeclare("q0").publish("", "q0").step().get("q0").ack(1)
                  .consume("q0").publish("", "q0").publish("", "q0").step().ack(3, multiple=1)
                  .cancel().step().qdelete("q0").close())
    s["dlx_ttl"] = (Script().open().xdeclare("dlx", "fanout").qdeclare("dlq")
                    .qbind("dlq", "dlx", "").qdeclare("q0", ttl=50, dlx="dlx")
                    .publish("", "q0").step().later(100).get("dlq").ack(1))
    s["dl_cycle"] = (Script().open().qdeclare("q0", max_length=0, dlx="", dlk="q0")
                     .qdeclare("q1", dlx="", dlk="q0").publish("", "q1").step().get("q1")
                     .reject(1).step().later(5).step())
    s["priority"] = (Script().open().qdeclare("q1", max_priority=10)
                     .publish("", "q1", priority=3).publish("", "q1", priority=200)
                     .publish("", "q1").step().qos(1).consume("q1").step().ack(1).step().ack(2))
    s["priority_255"] = (Script().open().qdeclare("q1", max_priority=255)
                         .publish("", "q1", priority=255).step().get("q1"))
    s["confirm_durable"] = (Script().open().confirm().qdeclare("q2", flags=2)
                            .publish("", "q2", persistent=True).publish("", "q2", persistent=True)
                            .step().get("q2").ack(1).step())
    s["tx"] = (Script().open().tx_select().qdeclare("q0").publish("", "q0").commit().step()
               .get("q0").ack(1).rollback().get("q0").ack(2).commit().step())
    s["e2e"] = (Script().open().xdeclare("x0", "topic").xdeclare("x1", "fanout")
                .xbind("x1", "x0", "a.*").xbind("x0", "x1", "").qdeclare("q0")
                .qbind("q0", "x1", "").publish("x0", "a.b").step().get("q0"))
    s["chash"] = (Script().open().xdeclare("x2", "x-consistent-hash").qdeclare("q0")
                  .qdeclare("q1").qbind("q0", "x2", "1").qbind("q1", "x2", "2")
                  .publish("x2", "a.b").publish("x2", "a.b.c").publish("x2", "q3").step()
                  .get("q0").get("q1"))
    s["delayed"] = (Script().open().xdeclare("x3", "x-delayed-message", delayed_type="direct")
                    .qdeclare("q0").qbind("q0", "x3", "q0")
                    .publish("x3", "q0", delay=100, persistent=True).step().later(200).get("q0"))
    s["quorum_limit"] = (Script().open().qdeclare("q3", flags=2, qtype="quorum", delivery_limit=1,
                                                  dlx="", dlk="dlq").qdeclare("dlq")
                         .publish("", "q3").step().get("q3").nack(1).step().get("q3").nack(2)
                         .step().get("dlq"))
    s["reply_to"] = (Script().open().open(conn=1).qdeclare("q0")
                     .consume("amq.rabbitmq.reply-to", conn=1, flags=2)
                     .publish("", "q0", conn=1, reply_to="amq.rabbitmq.reply-to").step()
                     .get("q0").step().publish("", "\1reply").step())
    s["overflow_dlx"] = (Script().open().confirm().xdeclare("dlx", "fanout").qdeclare("dlq")
                         .qbind("dlq", "dlx", "")
                         .qdeclare("q0", max_length=1, overflow="reject-publish-dlx", dlx="dlx")
                         .publish("", "q0").publish("", "q0").publish("", "q0", mandatory=1)
                         .step())
    s["reject_publish_persistent"] = (Script().open().confirm().qdeclare("q2", flags=2)
                                      .qdeclare("q0", max_length=0, overflow="reject-publish")
                                      .publish("", "q2", persistent=True).publish("", "q0", persistent=True)
                                      .publish("", "q2", persistent=True).publish("", "q0", persistent=True)
                                      .step().step())
    s["sac_retry_dedup"] = (Script().open().open(ch=2)
                            .qdeclare("q0", sac=1, retry=[10, 100], dedup=1000)
                            .consume("q0", "c1").consume("q0", "c2", ch=2)
                            .publish("", "q0", msgid=1).publish("", "q0", msgid=1).step()
                            .nack(1, requeue=0).step().later(20).step().close().step()
                            .ack(1, ch=2))
    s["crossing_close"] = (Script().open().qdeclare("q1", flags=1)
                           .close().step().open().step())
    s["paging"] = Script(1).open().qdeclare("q0", flags=2)
    for _ in range(30):
        s["paging"].publish("", "q0", size=210, persistent=True)
    s["paging"].publish("", "q0", size=251, persistent=True)  # 200 KB: two body frames
    s["paging"].step().consume("q0").step().ack(15, multiple=1).step()
    s["alarm"] = Script(4).open().qdeclare("q0")
    for _ in range(3):
        s["alarm"].publish("", "q0", size=255)  # 600 KB each: over the 1 MiB watermark
    # conn 0 is blocked (it published); conn 1 (it did not) purges, and the next tick
    # clears the alarm.
    s["alarm"].step().later(1000).publish("", "q0").step().open(conn=1).purge("q0", conn=1)
    s["alarm"].step().later(1000).step().publish("", "q0").step().get("q0")
    s["headers_ae"] = (Script().open().xdeclare("x0", "direct", ae="amq.headers")
                       .qdeclare("q0").qbind("q0", "amq.headers", "", xmatch="any", h="a.b")
                       .publish("x0", "q3", h="a.b").step().get("q0"))
    s["abrupt"] = (Script().open().qdeclare("q0").consume("q0").publish("", "q0").step()
                   .drop(0).reconnect(0).open().get("q0").step())
    return s


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_conn")
    os.makedirs(out, exist_ok=True)
    for name, sc in seeds().items():
        with open(os.path.join(out, "seed_" + name), "wb") as f:
            f.write(bytes(sc.b))


if __name__ == "__main__":
    main()
