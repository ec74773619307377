"""A random-operations run (issue 8, must-show 4): many raw connections do valid but unusual
things at random against one private ferryd — every exchange type, every queue type and
argument with edge values (x-max-priority 255, TTL 0, x-max-length 0, every overflow mode),
dead-letter cycles, exchange-to-exchange cycles, alternate exchanges, delivery limits,
retries, deduplication, single active consumer, direct reply-to, tx, confirms, crossing
channel closes, abrupt disconnects mid-frame — and asserts that ferryd stays alive, answers
a fresh connection's round trip every few seconds, and exits cleanly (status 0, no ASan /
UBSan / LSan report) on SIGTERM.

The run is seeded: the seed is printed (and named in every failure); FERRY_RANDOM_SEED=N
replays the same operation choices (the broker's timing still varies). `make test` runs it
for FERRY_RANDOM_OPS_SECONDS (default 30); `make soak` (FERRY_SOAK=1) for 300 s.

    cd tests && FERRYD=$PWD/../build/asan/ferryd python3 -m pytest -q -s hostile/test_random_ops.py
"""
import os
import random
import select
import subprocess
import socket
import struct
import time

import pytest

from rawamqp import (BASIC_GET, BASIC_GET_EMPTY, BASIC_GET_OK, FRAME_BODY, FRAME_HEADER, FRAME_METHOD,
                     PROTOCOL_HEADER, QUEUE_DECLARE, QUEUE_DECLARE_OK, Connection, Reader, basic_get_args,
                     bits, frame, header_frame, body_frame, longlong, method_frame, octet, open_args,
                     queue_declare_args, short, shortstr, start_ok_args, table, tune_ok_args)

SOAK = os.environ.get("FERRY_SOAK") == "1"
DURATION = float(os.environ.get("FERRY_RANDOM_OPS_SECONDS", 300 if SOAK else 30))
CLIENTS = 8
CHANNELS = 4
CHECK_EVERY = 5.0  # seconds between liveness round trips
ROUND_TRIP_LIMIT = 30.0  # a fresh client's round trip must finish within this (ASan, 2 busy cores)

# Names shared by every client, so that their declares, binds, publishes and consumes meet.
QUEUES = [f"r{i}" for i in range(8)] + ["rdur0", "rdur1", "rq0"]
EXCHANGES = [f"e{i}" for i in range(8)] + ["amq.direct", "amq.fanout", "amq.topic", "amq.headers", ""]
KEYS = ["", "a", "a.b", "a.b.c", "#", "*.b", "a.#", "1", "2", "10"] + QUEUES
XTYPES = ["direct", "fanout", "topic", "headers", "x-consistent-hash", "x-delayed-message"]
REPLY_TO = "amq.rabbitmq.reply-to"

M = {  # (class, method)
    "channel.open": (20, 10), "channel.close": (20, 40), "channel.close-ok": (20, 41),
    "channel.flow": (20, 20),
    "exchange.declare": (40, 10), "exchange.delete": (40, 20), "exchange.bind": (40, 30),
    "exchange.unbind": (40, 40),
    "queue.declare": (50, 10), "queue.bind": (50, 20), "queue.purge": (50, 30),
    "queue.delete": (50, 40), "queue.unbind": (50, 50),
    "basic.qos": (60, 10), "basic.consume": (60, 20), "basic.cancel": (60, 30),
    "basic.publish": (60, 40), "basic.get": (60, 70), "basic.ack": (60, 80),
    "basic.reject": (60, 90), "basic.recover": (60, 110), "basic.nack": (60, 120),
    "confirm.select": (85, 10), "tx.select": (90, 10), "tx.commit": (90, 20), "tx.rollback": (90, 30),
    "connection.close": (10, 50), "connection.close-ok": (10, 51),
}


SEEN = {}  # methods received from the broker, by (class, method): proof the run did work


class Chan:
    def __init__(self):
        self.open = False     # open-ok seen or expected (we pipeline)
        self.closing = False  # we sent channel.close
        self.tags = []        # delivery tags seen, not yet settled by us
        self.consumers = []
        self.confirm = False
        self.tx = False
        self.reply = False    # consuming amq.rabbitmq.reply-to


class Client:
    """One raw AMQP connection, non-blocking: methods are queued in `out` and written as the
    socket takes them; answers are parsed just enough to know delivery tags and closes."""

    def __init__(self, d, rng, log, index):
        self.rng = rng
        self.log = lambda s: log(f"[{index}] {s}")
        self.sock = socket.create_connection((d.host, d.port), timeout=10)
        self.sock.setblocking(False)
        self.out = bytearray(PROTOCOL_HEADER)
        self.inb = bytearray()
        self.chans = {}
        self.dead = False
        caps = {"capabilities": {"consumer_cancel_notify": True, "connection.blocked": True,
                                 "basic.nack": True, "publisher_confirms": True}}
        self.method(0, (10, 11), start_ok_args(client_properties=caps))
        self.method(0, (10, 31), tune_ok_args(channel_max=0, frame_max=131072, heartbeat=0))
        self.method(0, (10, 40), open_args("/"))

    def method(self, ch, mid, args=b""):
        self.out += method_frame(ch, mid, args)

    def fileno(self):
        return self.sock.fileno()

    def flush(self):
        while self.out and not self.dead:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.kill()
                return
            del self.out[:n]

    def kill(self):
        if not self.dead:
            self.dead = True
            try:
                self.sock.close()
            except OSError:
                pass

    def read(self):
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.kill()
            return
        if not data:
            self.kill()
            return
        self.inb += data
        while len(self.inb) >= 7:
            ftype, ch, size = struct.unpack(">BHI", self.inb[:7])
            if len(self.inb) < size + 8:
                break
            payload = bytes(self.inb[7:7 + size])
            del self.inb[:size + 8]
            if ftype == FRAME_METHOD and size >= 4:
                self.on_method(ch, struct.unpack(">HH", payload[:4]), payload[4:])

    def on_method(self, ch, mid, args):
        SEEN[mid] = SEEN.get(mid, 0) + 1
        c = self.chans.get(ch)
        if mid == (10, 50):  # connection.close from the broker
            self.log(f"conn closed by broker: {args[2:2 + args[2] + 1][1:]!r}")
            self.method(0, M["connection.close-ok"])
            self.flush()
            self.kill()
        elif mid == (10, 51):
            self.kill()
        elif mid == (20, 40) and c is not None:  # channel.close from the broker
            self.log(f"ch {ch} closed by broker: {args[3:3 + args[2]]!r}")
            if not c.closing and self.rng.random() < 0.2:
                # A crossing close: ours goes out before our close-ok (item 15).
                self.method(ch, M["channel.close"], short(200) + shortstr("crossing") + short(0) + short(0))
                c.closing = True
            self.method(ch, M["channel.close-ok"])
            if not c.closing:
                del self.chans[ch]
            # else: our own close still waits for its close-ok (the broker answers it).
        elif mid == (20, 41) and c is not None:
            self.log(f"ch {ch} close-ok")
            del self.chans[ch]
        elif mid in ((60, 60), (60, 71)) and c is not None:  # basic.deliver / basic.get-ok
            if mid == (60, 60):
                args = args[1 + args[0]:]  # consumer tag
            c.tags.append(struct.unpack(">Q", args[:8])[0])
        elif mid == (60, 21) and c is not None:  # consume-ok: the server-chosen tag
            c.consumers.append(args[1:1 + args[0]].decode())


def round_trip(d, limit=ROUND_TRIP_LIMIT):
    """A fresh connection declares a queue, publishes to it and gets the message back.
    Returns the seconds it took; raises if it cannot within `limit` (the broker is dead,
    stuck, or lost the message)."""
    start = time.monotonic()
    c = Connection(d.host, d.port, timeout=limit)
    try:
        c.handshake()
        c.open_channel(1)
        c.send(method_frame(1, QUEUE_DECLARE, queue_declare_args("", exclusive=True)))
        f = c.expect(QUEUE_DECLARE_OK, timeout=limit)
        q = Reader(f.payload[4:]).shortstr()
        c.send(method_frame(1, (60, 40), short(0) + shortstr("") + shortstr(q) + bits(False, False)) +
               header_frame(1, 5) + body_frame(1, b"alive"))
        while True:
            left = limit - (time.monotonic() - start)
            assert left > 0, f"the message published to {q} never came back"
            c.send(method_frame(1, BASIC_GET, basic_get_args(q)))
            f = c.recv_frame(timeout=left)
            while f.method not in (BASIC_GET_OK, BASIC_GET_EMPTY):
                f = c.recv_frame(timeout=left)
            if f.method == BASIC_GET_OK:
                body = b""
                while len(body) < 5:
                    f = c.recv_frame(timeout=left)
                    if f.type == FRAME_BODY:
                        body += f.payload
                assert body == b"alive", body
                return time.monotonic() - start
            time.sleep(0.01)
    finally:
        c.close()


def queue_arguments(rng):
    """A random mix of every queue argument, edge values included."""
    a = {}
    quorum = rng.random() < 0.15
    if quorum:
        a["x-queue-type"] = "quorum"
        if rng.random() < 0.5:
            a["x-delivery-limit"] = rng.choice([0, 1, 2, 5])
    elif rng.random() < 0.3:
        a["x-max-priority"] = rng.choice([1, 2, 10, 254, 255])
    if rng.random() < 0.3:
        a["x-message-ttl"] = rng.choice([0, 1, 10, 100, 1000, 60000])
    if rng.random() < 0.1:
        a["x-expires"] = rng.choice([200, 1000, 5000])
    if rng.random() < 0.25:
        a["x-max-length"] = rng.choice([0, 1, 2, 10])
    if rng.random() < 0.1:
        a["x-max-length-bytes"] = rng.choice([0, 100, 10000])
    if rng.random() < 0.25:
        a["x-overflow"] = rng.choice(["drop-head", "reject-publish", "reject-publish-dlx"])
    if rng.random() < 0.35:
        a["x-dead-letter-exchange"] = rng.choice(EXCHANGES)
        if rng.random() < 0.7:  # often back into one of ours: dead-letter cycles
            a["x-dead-letter-routing-key"] = rng.choice(QUEUES)
    if rng.random() < 0.15:
        a["x-single-active-consumer"] = True
    if rng.random() < 0.1:
        a["x-retry-delays"] = rng.choice([[10], [10, 50, 100], [0, 1]])
    if rng.random() < 0.1:
        a["x-deduplication-window"] = rng.choice([100, 1000, 60000])
    if not quorum and rng.random() < 0.05:
        a["x-queue-mode"] = "lazy"
    return a, quorum


def properties(rng, chan):
    """Basic properties: flags and the encoded list (rawamqp has no encoder for these)."""
    flags, body = 0, b""
    headers = {}
    if rng.random() < 0.3:
        headers["x-delay"] = rng.choice([0, 1, 50, 500, -5])
    if rng.random() < 0.3:
        headers["h"] = rng.choice(KEYS)
    if rng.random() < 0.05:
        headers["CC"] = [rng.choice(KEYS)]
    if headers:
        flags |= 1 << 13
        body += table(headers)
    if rng.random() < 0.6:
        flags |= 1 << 12
        body += octet(rng.choice([1, 2]))
    if rng.random() < 0.3:
        flags |= 1 << 11
        body += octet(rng.choice([0, 1, 5, 9, 10, 200, 255]))
    if rng.random() < 0.2:
        flags |= 1 << 10
        body += shortstr("corr")
    if chan.reply and rng.random() < 0.5:
        flags |= 1 << 9
        body += shortstr(REPLY_TO)
    if rng.random() < 0.2:
        flags |= 1 << 8
        body += shortstr(rng.choice(["0", "1", "100", "5000"]))
    if rng.random() < 0.3:
        flags |= 1 << 7
        body += shortstr(f"m{rng.randrange(6)}")
    return short(flags) + body


def body_size(rng):
    r = rng.random()
    if r < 0.7:
        return rng.randrange(0, 100)
    if r < 0.97:
        return rng.randrange(100, 20000)
    return rng.randrange(131072, 400000)  # several body frames


def exchange_definition(rng):
    t = rng.choice(XTYPES)
    args = {}
    if t == "x-delayed-message":
        args["x-delayed-type"] = rng.choice(["direct", "fanout", "topic", "headers"])
    if rng.random() < 0.2:
        args["alternate-exchange"] = rng.choice(EXCHANGES)
    if t == "x-consistent-hash" and rng.random() < 0.3:
        args["hash-header"] = "h"
    return t, args, rng.random() < 0.3, rng.random() < 0.1


def queue_definition(rng, name):
    args, quorum = queue_arguments(rng)
    durable = quorum or name.startswith("rdur") or name.startswith("rq") or rng.random() < 0.2
    exclusive = not quorum and rng.random() < 0.05
    auto_delete = not quorum and rng.random() < 0.05
    return args, durable, exclusive, auto_delete


class Definitions:
    """What each shared name is declared as in this run (chosen from the seed), so that
    most declares agree and the topology grows instead of every declare failing."""

    def __init__(self, rng):
        self.x = {n: exchange_definition(rng) for n in EXCHANGES[:8]}
        self.q = {n: queue_definition(rng, n) for n in QUEUES}


defs = None


def one_op(rng, cl, log):
    """Queues one random operation on a random channel of cl."""
    ch = rng.randrange(1, CHANNELS + 1)
    cl.last_ch = ch
    c = cl.chans.get(ch)
    if c is None:
        cl.method(ch, M["channel.open"], shortstr(""))
        cl.chans[ch] = Chan()
        return "channel.open"
    if c.closing:
        return "wait"
    r = rng.random()
    q, x, k = rng.choice(QUEUES), rng.choice(EXCHANGES), rng.choice(KEYS)
    if r < 0.06:
        name = rng.choice(EXCHANGES[:8])
        # Mostly the run's definition of this name; now and then another (406, inequivalent).
        t, args, durable, auto_delete = defs.x[name] if rng.random() < 0.9 else exchange_definition(rng)
        cl.method(ch, M["exchange.declare"], short(0) + shortstr(name) + shortstr(t) +
                  bits(False, durable, auto_delete, False, False) + table(args))
        return f"exchange.declare {name} {t} {args}"
    if r < 0.13:
        args, durable, exclusive, auto_delete = defs.q[q] if rng.random() < 0.9 else queue_definition(rng, q)
        cl.method(ch, M["queue.declare"], short(0) + shortstr(q) +
                  bits(False, durable, exclusive, auto_delete, False) + table(args))
        return f"queue.declare {q} {args}"
    x = rng.choice(EXCHANGES[:-1]) if rng.random() < 0.95 else x  # "" refuses binds (403)
    if r < 0.19:
        args = {}
        if rng.random() < 0.3:
            args = {"x-match": rng.choice(["all", "any"]), "h": rng.choice(KEYS)}
        key = rng.choice(["1", "2", "10"]) if rng.random() < 0.2 else k
        cl.method(ch, M["queue.bind"], short(0) + shortstr(q) + shortstr(x) + shortstr(key) +
                  bits(False) + table(args))
        return f"queue.bind {q} {x} {key}"
    if r < 0.22:
        d, s = rng.choice(EXCHANGES[:8]), rng.choice(EXCHANGES)
        cl.method(ch, M["exchange.bind"], short(0) + shortstr(d) + shortstr(s) + shortstr(k) +
                  bits(False) + table({}))
        return f"exchange.bind {d} <- {s} {k}"
    if r < 0.23:
        cl.method(ch, M["exchange.unbind"], short(0) + shortstr(rng.choice(EXCHANGES[:8])) + shortstr(x) +
                  shortstr(k) + bits(False) + table({}))
        return "exchange.unbind"
    if r < 0.24:
        cl.method(ch, M["queue.unbind"], short(0) + shortstr(q) + shortstr(x) + shortstr(k) + table({}))
        return "queue.unbind"
    if r < 0.52:
        n = 1 if rng.random() < 0.8 else rng.randrange(2, 20)
        size = body_size(rng)
        if c.reply and rng.random() < 0.2:
            x, k = "", REPLY_TO
        for _ in range(n):
            cl.method(ch, M["basic.publish"], short(0) + shortstr(x) + shortstr(k) +
                      bits(rng.random() < 0.2, False))
            props = properties(rng, c)
            cl.out += frame(FRAME_HEADER, ch, short(60) + short(0) + longlong(size) + props)
            for off in range(0, size, 131064):
                cl.out += frame(FRAME_BODY, ch, b"x" * min(131064, size - off))
        return f"publish x{n} {x!r} {k!r} {size}"
    if r < 0.57:
        if rng.random() < 0.1 and not c.reply:
            cl.method(ch, M["basic.consume"], short(0) + shortstr(REPLY_TO) + shortstr("") +
                      bits(False, True, False, False) + table({}))
            c.reply = True
            return "consume reply-to"
        args = {"x-priority": rng.choice([-1, 0, 5])} if rng.random() < 0.2 else {}
        cl.method(ch, M["basic.consume"], short(0) + shortstr(q) + shortstr("") +
                  bits(False, rng.random() < 0.3, rng.random() < 0.05, False) + table(args))
        return f"consume {q}"
    if r < 0.59:
        if c.consumers:
            tag = c.consumers.pop(rng.randrange(len(c.consumers)))
            cl.method(ch, M["basic.cancel"], shortstr(tag) + bits(False))
            return f"cancel {tag}"
        return "noop"
    if r < 0.63:
        cl.method(ch, M["basic.get"], short(0) + shortstr(q) + bits(rng.random() < 0.3))
        return f"get {q}"
    if r < 0.78:
        if not c.tags:
            return "noop"
        kind = rng.random()
        i = rng.randrange(len(c.tags))
        tag = c.tags[i]
        multiple = rng.random() < 0.3
        if multiple:
            c.tags = [t for t in c.tags if t > tag]
        else:
            c.tags.pop(i)
        if kind < 0.6:
            cl.method(ch, M["basic.ack"], longlong(tag) + bits(multiple))
            return f"ack {tag} {multiple}"
        if kind < 0.85:
            requeue = rng.random() < 0.5
            cl.method(ch, M["basic.nack"], longlong(tag) + bits(multiple, requeue))
            return f"nack {tag} {multiple} {requeue}"
        cl.method(ch, M["basic.reject"], longlong(tag) + bits(rng.random() < 0.5))
        return f"reject {tag}"
    if r < 0.80:
        cl.method(ch, M["basic.qos"], struct.pack(">I", 0) + short(rng.choice([0, 1, 2, 10, 65535])) +
                  bits(rng.random() < 0.3))
        return "qos"
    if r < 0.81:
        cl.method(ch, M["basic.recover"], bits(True))
        c.tags = []
        return "recover"
    if r < 0.83:
        if not c.tx and not c.confirm:
            if rng.random() < 0.5:
                cl.method(ch, M["confirm.select"], bits(False))
                c.confirm = True
                return "confirm.select"
            cl.method(ch, M["tx.select"])
            c.tx = True
            return "tx.select"
        if c.tx:
            m = "tx.commit" if rng.random() < 0.7 else "tx.rollback"
            cl.method(ch, M[m])
            return m
        return "noop"
    if r < 0.86:
        cl.method(ch, M["queue.purge"], short(0) + shortstr(q) + bits(False))
        return f"purge {q}"
    if r < 0.88:
        cl.method(ch, M["queue.delete"], short(0) + shortstr(q) + bits(rng.random() < 0.2, rng.random() < 0.2, False))
        return f"queue.delete {q}"
    if r < 0.89:
        name = rng.choice(EXCHANGES[:8])
        cl.method(ch, M["exchange.delete"], short(0) + shortstr(name) + bits(rng.random() < 0.3, False))
        return f"exchange.delete {name}"
    if r < 0.93:
        cl.method(ch, M["channel.close"], short(200) + shortstr("bye") + short(0) + short(0))
        c.closing = True
        return f"channel.close {ch}"
    if r < 0.945:
        cl.method(ch, M["channel.flow"], bits(rng.random() < 0.8))
        return "flow"
    if r < 0.96:
        # An error on purpose (404): the broker closes the channel, perhaps while we close it.
        cl.method(ch, M["queue.declare"], short(0) + shortstr("no-such-queue") + bits(True) + table({}))
        if rng.random() < 0.5:
            cl.method(ch, M["channel.close"], short(200) + shortstr("crossing") + short(0) + short(0))
            c.closing = True
        return "passive declare of a missing queue"
    if r < 0.975:
        cl.method(0, M["connection.close"], short(200) + shortstr("bye") + short(0) + short(0))
        return "connection.close"
    # Abrupt: the socket goes away, perhaps in the middle of a frame.
    if rng.random() < 0.5:
        cl.out += method_frame(ch, M["basic.publish"], short(0) + shortstr("") + shortstr(q) + bits(False, False))
        cl.out += frame(FRAME_HEADER, ch, short(60) + short(0) + longlong(1000) + short(0))[:9]
    cl.flush()
    cl.kill()
    return "abrupt close"


@pytest.mark.timeout(DURATION + 240)
def thread_stacks(d):
    """Every thread's stack of a stalled ferryd (gdb, if the machine has it), for the report."""
    out = []
    try:
        p = subprocess.run(["gdb", "-p", str(d.proc.pid), "-batch", "-ex", "thread apply all bt 30"],
                           capture_output=True, text=True, timeout=60)
        out.append("--- ferryd's threads:\n" + p.stdout[-12000:])
        for _ in range(4):  # a spinning loop thread shows where it spins over several samples
            time.sleep(0.3)
            p = subprocess.run(["gdb", "-p", str(d.proc.pid), "-batch", "-ex", "thread 1", "-ex", "bt full 4"],
                               capture_output=True, text=True, timeout=60)
            out.append("--- the loop thread again:\n" + p.stdout[-5000:])
    except (OSError, subprocess.TimeoutExpired) as e:
        out.append(f"(no stacks: {e!r})")
    return "\n".join(out)


def test_random_valid_operations_never_crash_stall_or_leak(ferryd_factory, tmp_path):
    seed = int(os.environ.get("FERRY_RANDOM_SEED", random.randrange(1 << 32)))
    print(f"\nrandom-ops seed {seed} ({DURATION:.0f} s; FERRY_RANDOM_SEED={seed} replays the choices)")
    rng = random.Random(seed)
    SEEN.clear()
    global defs
    defs = Definitions(rng)
    d = ferryd_factory("--memory-budget", "1048576")
    trace = open(tmp_path / "ops.log", "w")
    where = f"(seed {seed}, trace {tmp_path / 'ops.log'}, ferryd log {d.log_path})"

    def log(s):
        trace.write(s + "\n")

    clients = [None] * CLIENTS
    counts = {}
    start = time.monotonic()
    next_check = start + CHECK_EVERY
    checks = 0
    slowest = 0.0
    ops = 0
    try:
        while time.monotonic() - start < DURATION:
            for i in range(CLIENTS):
                cl = clients[i]
                if cl is None or cl.dead:
                    clients[i] = cl = Client(d, rng, log, i)
                    log(f"[{i}] connect")
                if len(cl.out) > (1 << 20):
                    continue  # the broker is not reading us (blocked, or busy): wait
                for _ in range(rng.randrange(1, 8)):
                    what = one_op(rng, cl, log)
                    ops += 1
                    name = what.split()[0]
                    counts[name] = counts.get(name, 0) + 1
                    log(f"[{i}] ch{cl.last_ch} {what}")
                    if cl.dead:
                        break
                cl.flush()
            live = [c for c in clients if c is not None and not c.dead]
            r, w, _ = select.select(live, [c for c in live if c.out], [], 0.005)
            for c in r:
                c.read()
            for c in w:
                c.flush()
            for c in live:
                c.read()  # drains what arrived meanwhile; never blocks
            if time.monotonic() >= next_check:
                assert d.running(), f"ferryd died {where}:\n{d.log_text()[-3000:]}"
                try:
                    slowest = max(slowest, round_trip(d))
                except Exception as e:
                    raise AssertionError(f"a fresh connection's round trip failed: {e!r} {where}\n"
                                         f"{thread_stacks(d)}\n{d.log_text()[-3000:]}") from e
                checks += 1
                next_check = time.monotonic() + CHECK_EVERY
    finally:
        for c in clients:
            if c is not None:
                c.kill()
        trace.close()
    got = {name: SEEN.get(mid, 0) for name, mid in (("deliver", (60, 60)), ("get-ok", (60, 71)),
                                                     ("confirm-ack", (60, 80)), ("return", (60, 50)),
                                                     ("channel.close", (20, 40)))}
    print(f"{ops} operations, {checks} liveness round trips (slowest {slowest:.2f} s); sent " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:12]) +
          "; received " + ", ".join(f"{k} {v}" for k, v in got.items()))
    assert d.running(), f"ferryd died {where}:\n{d.log_text()[-3000:]}"
    round_trip(d)
    assert checks >= 1
    assert got["deliver"] and got["get-ok"], f"no message went through: the run tested nothing {where}"
    d.stop_and_check()  # exit 0 on SIGTERM, no sanitizer report
