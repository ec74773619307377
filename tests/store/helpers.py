"""Shared helpers for the durable-storage tests: starting ferryd on a data directory that
outlives it, self-checking message bodies, a pipelined publisher with confirms that runs
while the broker is killed, and a drain that reads back everything a queue holds.

Every wait here is bounded: a broker that hangs fails the test, it never hangs the suite.

Message bodies check themselves: each is b"<id>:<size>:" followed by bytes derived from
the id, so a drain can tell a recovered message from a corrupted one without any other
bookkeeping, and the fault tests can find each body verbatim in the segment files.
"""
import hashlib
import os
import random
import re
import signal
import subprocess
import time

import pika
from pika import exceptions, spec
from pika.adapters.select_connection import IOLoop

# FERRY_SOAK=1 (make soak) switches the long versions of the crash and power-cut tests on.
SOAK = os.environ.get("FERRY_SOAK", "") not in ("", "0")

TIMEOUT = 10.0  # seconds: the longest any single expected broker event may take
POWER_CUT_EXIT = 99  # ferryd's exit status after a simulated power cut (FERRY_IO_VOLATILE=1)

_report_lines = []


def report(line):
    """A line for the end-of-run summary (crash counts, duplicates): shown even when passing."""
    _report_lines.append(line)


def report_lines():
    return list(_report_lines)


# --- ferryd processes on a data directory that outlives them ---------------------------


def start(factory, data_dir, *args, env=None):
    """Start ferryd on data_dir (created if missing) and return it once it listens.

    A broker that exits before listening fails the test with the tail of its log, so a
    refused flag or a failed recovery reads as what it is."""
    log_path = data_dir.rstrip("/") + ".log"
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    try:
        d = factory(*args, data_dir=data_dir, env=env)
    except (RuntimeError, TimeoutError) as e:
        raise AssertionError(f"ferryd {' '.join(args)} did not start on {data_dir}: {e}\n"
                             f"--- log since this start:\n{_tail(log_path, offset)}") from None
    d.log_offset = offset
    return d


def _tail(path, offset, limit=4000):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")[-limit:]
    except OSError as e:
        return f"(no log: {e})"


def log_since_start(d):
    """What this ferryd process logged (the log file is shared by every run on its data dir)."""
    with open(d.log_path, "rb") as f:
        f.seek(getattr(d, "log_offset", 0))
        return f.read().decode(errors="replace")


def power_cut(d, timeout=TIMEOUT):
    """SIGUSR2 a ferryd started with FERRY_IO_VOLATILE=1 and wait for its simulated power cut."""
    d.proc.send_signal(signal.SIGUSR2)
    return wait_power_cut(d, timeout)


def wait_power_cut(d, timeout=TIMEOUT):
    """Wait for the exit after SIGUSR2 and check it is the power-cut status, not a crash."""
    try:
        rc = d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        d.kill9()
        raise AssertionError(f"ferryd did not simulate a power cut within {timeout}s of SIGUSR2")
    d.log.close()
    assert rc == POWER_CUT_EXIT, (
        f"ferryd exited {rc} on SIGUSR2, not {POWER_CUT_EXIT} (a simulated power cut); "
        f"is FERRY_IO_VOLATILE=1 supported?\n{log_since_start(d)[-3000:]}")
    return rc


def bad_record_lines(log):
    """Log lines about damaged records (checksum, corrupt, torn, unreadable bytes skipped),
    leaving out a recovery summary that reports "0 corrupt"."""
    pat = re.compile(r"corrupt|checksum|crc|torn|unreadable", re.I)
    return [ln for ln in log.splitlines() if pat.search(re.sub(r"\b0 corrupt\b", "", ln))]


def segment_files(data_dir):
    """The message log's segment files, oldest first, as (path, size)."""
    seg = os.path.join(data_dir, "segments")
    if not os.path.isdir(seg):
        return []
    out = []
    for n in sorted(n for n in os.listdir(seg) if n.endswith(".seg")):
        try:  # the broker may be deleting reclaimed segments right now
            out.append((os.path.join(seg, n), os.path.getsize(os.path.join(seg, n))))
        except FileNotFoundError:
            pass
    return out


# --- connections ------------------------------------------------------------------------


def params(d, **kw):
    kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
    kw.setdefault("heartbeat", 30)
    kw.setdefault("blocked_connection_timeout", 30)
    kw.setdefault("socket_timeout", 5)
    kw.setdefault("stack_timeout", 10)
    kw.setdefault("connection_attempts", 1)
    return pika.ConnectionParameters(host=d.host, port=d.port, **kw)


def connect(d, **kw):
    return pika.BlockingConnection(params(d, **kw))


PERSISTENT = pika.BasicProperties(delivery_mode=2)
TRANSIENT = pika.BasicProperties(delivery_mode=1)


# --- self-checking bodies ----------------------------------------------------------------


def body_for(mid, size):
    """The body of message `mid`: its id and size, then `size` bytes derived from the id."""
    head = f"{mid}:{size}:".encode()
    out = bytearray()
    seed = hashlib.blake2b(mid.encode(), digest_size=32).digest()
    n = 0
    while len(out) < size:
        out += hashlib.blake2b(seed + n.to_bytes(4, "little"), digest_size=64).digest()
        n += 1
    return head + bytes(out[:size])


def check_body(body):
    """The id of a self-checking body, or raise AssertionError if it is not intact."""
    try:
        mid, size, _ = body.split(b":", 2)
        mid, size = mid.decode(), int(size)
    except ValueError:
        raise AssertionError(f"unrecognisable message body {body[:60]!r} ({len(body)} bytes)") from None
    assert body == body_for(mid, size), f"body of message {mid} is corrupted ({len(body)} bytes)"
    return mid


def publish_confirmed(ch, exchange, routing_key, ids, size=100, props=PERSISTENT):
    """Publish one self-checking message per id on a confirm channel (each must be acked)."""
    for mid in ids:
        p = pika.BasicProperties(delivery_mode=props.delivery_mode, message_id=mid)
        ch.basic_publish(exchange, routing_key, body_for(mid, size), p)


# --- reading a queue back -----------------------------------------------------------------


class Drained:
    """What a drain read from one queue: ids in delivery order, and their redelivered flags."""

    def __init__(self):
        self.ids = []
        self.redelivered = {}

    def count(self):
        return len(self.ids)

    def duplicates(self):
        return len(self.ids) - len(set(self.ids))


def drain(d, queue, ack=True, timeout=TIMEOUT, idle=0.3):
    """Read every message queue holds now (consume with manual acks; ack them all if `ack`).

    The depth from a passive queue.declare says how many to expect; after that, `idle`
    seconds of quiet confirm nothing else arrives. Every body must be intact."""
    out = Drained()
    conn = connect(d)
    try:
        ch = conn.channel()
        try:
            depth = ch.queue_declare(queue, passive=True).method.message_count
        except exceptions.ChannelClosedByBroker as e:
            raise AssertionError(f"queue {queue} is gone: {e}") from None
        ch.basic_qos(prefetch_count=500)
        last_tag = acked_tag = 0
        deadline = time.monotonic() + timeout
        for method, props, body in ch.consume(queue, inactivity_timeout=idle):
            if method is None:
                if out.count() >= depth:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"drain of {queue}: {out.count()} of {depth} messages after {timeout}s")
                continue
            deadline = time.monotonic() + timeout
            mid = check_body(body)
            if props.message_id is not None:
                assert props.message_id == mid, f"message_id {props.message_id} on the body of {mid}"
            out.ids.append(mid)
            out.redelivered.setdefault(mid, method.redelivered)
            last_tag = method.delivery_tag
            if ack and out.count() % 200 == 0:
                ch.basic_ack(last_tag, multiple=True)
                acked_tag = last_tag
        if ack and last_tag > acked_tag:
            ch.basic_ack(last_tag, multiple=True)
        ch.cancel()
        if ack:
            # A round trip after the acks: the broker has taken them when this returns.
            ch.queue_declare(queue, passive=True)
    finally:
        if conn.is_open:
            conn.close()
    return out


def depth(d, queue):
    conn = connect(d)
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


# --- publishing while the broker dies -------------------------------------------------------


class Publisher:
    """One connection publishing self-checking persistent messages with confirms, at most
    `window` unconfirmed at a time, until its connection dies or stop() is called.

    confirmed holds the ids the broker acked, nacked the ids it nacked; ids still waiting
    for an answer when the connection died are neither (they may or may not be stored)."""

    def __init__(self, run, name, exchange, routing_key, queues, sizes, window, ids=None):
        self.run, self.name = run, name
        self.source = iter(ids) if ids is not None else None  # None: generate ids forever
        self.exchange, self.routing_key, self.queues = exchange, routing_key, queues
        self.sizes, self.window = sizes, window
        self.rng = random.Random(name)
        self.seq = 0
        self.tag = 0
        self.pending = {}  # delivery tag -> id
        self.confirmed, self.nacked = [], []
        self.ch = None
        self.stopping = False
        self.blocked = self.unblocked = 0  # connection.blocked / unblocked received
        self.conn = pika.SelectConnection(run.params, on_open_callback=self._opened,
                                          on_open_error_callback=self._failed,
                                          on_close_callback=self._closed, custom_ioloop=run.ioloop)
        self.conn.add_on_connection_blocked_callback(self._blocked)
        self.conn.add_on_connection_unblocked_callback(self._unblocked)
        self.open = True

    def _blocked(self, conn, frame):
        self.blocked += 1

    def _unblocked(self, conn, frame):
        self.unblocked += 1

    def _opened(self, conn):
        conn.channel(on_open_callback=self._channel)

    def _channel(self, ch):
        self.ch = ch
        ch.confirm_delivery(ack_nack_callback=self._confirm, callback=lambda _: self._pump())

    def _pump(self):
        while not self.stopping and self.conn.is_open and len(self.pending) < self.window:
            self.seq += 1
            if self.source is None:
                mid = f"{self.run.tag}{self.name}-{self.seq}"
            else:
                mid = next(self.source, None)
                if mid is None:
                    self.stopping = True
                    break
            body = body_for(mid, self.rng.choice(self.sizes))
            self.ch.basic_publish(self.exchange, self.routing_key, body,
                                  pika.BasicProperties(delivery_mode=2, message_id=mid))
            self.tag += 1
            self.pending[self.tag] = mid
        if self.source is not None and self.stopping and not self.pending and self.conn.is_open:
            self.conn.close()  # a fixed list of ids, every one answered

    def _confirm(self, frame):
        m = frame.method
        done = [t for t in self.pending if t <= m.delivery_tag] if m.multiple else [m.delivery_tag]
        target = self.confirmed if isinstance(m, spec.Basic.Ack) else self.nacked
        for t in done:
            mid = self.pending.pop(t, None)
            if mid is not None:
                target.append(mid)
        self._pump()

    def _failed(self, conn, err):
        if not self.run.killed:
            self.run.errors.append(f"{self.name}: connection failed: {err}")
        self._closed(conn, err)

    def _closed(self, conn, reason):
        self.open = False
        self.run.closed()

    def stop(self):
        self.stopping = True
        if self.conn.is_open:
            self.conn.close()


class LiveConsumer:
    """A consumer that acks (multiple) every `ack_every` deliveries while the broker runs.

    acked holds the ids covered by an ack it sent; delivered every id it received."""

    def __init__(self, run, queue, ack_every=25, prefetch=100):
        self.run, self.queue, self.ack_every, self.prefetch = run, queue, ack_every, prefetch
        self.delivered, self.acked = [], []
        self.unacked = []
        self.conn = pika.SelectConnection(run.params, on_open_callback=self._opened,
                                          on_open_error_callback=self._failed,
                                          on_close_callback=self._closed, custom_ioloop=run.ioloop)
        self.open = True

    def _opened(self, conn):
        conn.channel(on_open_callback=self._channel)

    def _channel(self, ch):
        self.ch = ch
        ch.basic_qos(prefetch_count=self.prefetch,
                     callback=lambda _: ch.basic_consume(self.queue, self._message))

    def _message(self, ch, method, props, body):
        mid = check_body(body)
        self.delivered.append(mid)
        self.unacked.append(mid)
        if len(self.unacked) >= self.ack_every:
            ch.basic_ack(method.delivery_tag, multiple=True)
            self.acked += self.unacked
            self.unacked = []

    def _failed(self, conn, err):
        if not self.run.killed:
            self.run.errors.append(f"consumer: connection failed: {err}")
        self._closed(conn, err)

    def _closed(self, conn, reason):
        self.open = False
        self.run.closed()

    def stop(self):
        if self.conn.is_open:
            self.conn.close()


class Run:
    """Publishers (and optionally a live consumer) on one I/O loop against one ferryd, until
    `kill` is called on the broker after `seconds` (or until `seconds` pass, if kill is None).

    run.go() returns when every connection has closed; it never waits longer than
    seconds + TIMEOUT."""

    def __init__(self, d, tag=""):
        self.d, self.tag = d, tag
        self.params = params(d, heartbeat=0, socket_timeout=5)
        self.ioloop = IOLoop()
        self.publishers, self.consumers = [], []
        self.errors = []
        self.timed_out = False
        self.killed = False

    def publisher(self, name, exchange, routing_key, queues, sizes=(100,), window=100, ids=None):
        p = Publisher(self, name, exchange, routing_key, queues, list(sizes), window, ids)
        self.publishers.append(p)
        return p

    def consumer(self, queue, **kw):
        c = LiveConsumer(self, queue, **kw)
        self.consumers.append(c)
        return c

    def closed(self):
        if not any(x.open for x in self.publishers + self.consumers):
            self.ioloop.stop()

    def go(self, seconds, kill=None, until_done=False, until=None):
        """Run for `seconds`, then kill the broker (kill()) or stop the publishers; with
        until_done, until the publishers of fixed id lists are answered; with until (a
        predicate polled every 50 ms), until it holds or `seconds` pass."""
        def at_end():
            if kill is not None:
                self.killed = True
                kill()
            else:
                for x in self.publishers + self.consumers:
                    x.stop()

        def give_up():
            self.timed_out = True
            self.ioloop.stop()

        if not until_done:
            self.ioloop.call_later(seconds, at_end)
        if until is not None:
            def poll():
                if until():
                    at_end()
                else:
                    self.ioloop.call_later(0.05, poll)
            self.ioloop.call_later(0.05, poll)
        self.ioloop.call_later(seconds + TIMEOUT, give_up)
        self.ioloop.start()
        self.ioloop.close()
        assert not self.timed_out, f"connections still open {TIMEOUT}s after the end of the run"

    def confirmed(self):
        return sum(len(p.confirmed) for p in self.publishers)


def publish_all(d, exchange, routing_key, ids, size=100, window=200, timeout=60, sizes=None):
    """Publish one self-checking persistent message per id, pipelined (at most `window`
    unconfirmed), and return once every one is confirmed; a nack fails the caller."""
    run = Run(d)
    p = run.publisher("fill", exchange, routing_key, [], sizes=sizes or [size], window=window, ids=list(ids))
    run.go(timeout, until_done=True)
    assert not run.errors, run.errors
    assert not p.nacked, f"{len(p.nacked)} of {len(p.confirmed) + len(p.nacked)} publishes nacked"
    assert len(p.confirmed) == p.seq - 1, f"{len(p.confirmed)} of {p.seq - 1} publishes confirmed"
    return p.confirmed
