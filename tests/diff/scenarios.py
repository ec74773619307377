"""Scenarios for the differential test: the same client script runs against RabbitMQ and
against the broker under test, and what the client observed must be identical.

Each scenario is a function taking a Ctx and recording, with ctx.log(...), everything a
client can see: deliveries (exchange, routing key, redelivered, body, properties), get-ok
message counts, declare-ok / purge-ok / delete-ok counts, returned messages, channel and
connection close codes and texts, consumer cancel notifications, in the order the client
saw them. Traces are JSON-serialisable and normalised only where brokers legitimately
differ: the run's unique name prefix (so two runs never collide), server-generated queue
names and consumer tags (amq.gen-*, amq.ctag-*) and timestamps.

Everything is made deterministic: publishes go through publisher confirms (so a message is
in its queues before the next step), counts come from synchronous methods, consumers are
awaited until the expected deliveries arrived (bounded), and per-consumer delivery lists
are compared rather than the interleaving of two channels on one socket.
"""
import contextlib
import datetime
import decimal
import re
import signal
import time
import uuid

import pika
import pika.exceptions as px

SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


# ---------------------------------------------------------------- the context

class Ctx:
    """One run of one scenario against one broker."""

    def __init__(self, url):
        self.url = url
        self.prefix = "ferrydiff-" + uuid.uuid4().hex[:10]
        self.trace = []
        self.conns = []
        self.queues = set()
        self.exchanges = set()

    def n(self, name):
        """A name unique to this run; shows as P.name in the trace."""
        return f"{self.prefix}.{name}"

    def params(self):
        p = pika.URLParameters(self.url)
        p.connection_attempts = 1
        p.socket_timeout = 5
        p.blocked_connection_timeout = 10
        p.heartbeat = 0
        return p

    def connect(self):
        conn = pika.BlockingConnection(self.params())
        self.conns.append(conn)
        return conn

    def channel(self, conn=None, confirm=True):
        if conn is None:
            conn = self.conns[0] if self.conns else self.connect()
        ch = conn.channel()
        if confirm:
            ch.confirm_delivery()
        return ch

    def log(self, *event):
        self.trace.append(list(event))

    # -- declarations that are cleaned up afterwards

    def queue(self, ch, name, **kw):
        q = self.n(name)
        ok = ch.queue_declare(q, **kw)
        if not kw.get("exclusive"):
            self.queues.add(q)
        return q, ok

    def exchange(self, ch, name, kind, **kw):
        e = self.n(name)
        ch.exchange_declare(e, kind, **kw)
        self.exchanges.add(e)
        return e

    def cleanup(self):
        for conn in self.conns:
            try:
                if conn.is_open:
                    conn.close()
            except Exception:
                pass
        try:
            conn = pika.BlockingConnection(self.params())
        except Exception:
            return
        try:
            for q in sorted(self.queues):
                _quietly(conn, lambda ch: ch.queue_delete(q))
            for e in sorted(self.exchanges):
                _quietly(conn, lambda ch: ch.exchange_delete(e))
        finally:
            try:
                conn.close()
            except Exception:
                pass


def _quietly(conn, fn):
    try:
        ch = conn.channel()
        fn(ch)
        ch.close()
    except (px.ChannelClosed, px.ChannelWrongStateError):
        pass


class ScenarioTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    """Interrupts a blocked pika call after seconds (pika's RPCs have no timeout of their
    own, and a broker that never answers must fail a scenario, not hang it). Uses SIGALRM
    and restores whatever timer was set before (pytest-timeout's)."""
    def on_alarm(signum, frame):
        raise ScenarioTimeout(f"no progress within {seconds}s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_delay:
            signal.setitimer(signal.ITIMER_REAL, max(0.01, old_delay - (time.monotonic() - started)))


def run(fn, url, seconds=30):
    """Runs one scenario against the broker at url; returns its normalised trace."""
    ctx = Ctx(url)
    try:
        with time_limit(seconds):
            fn(ctx)
    except (px.AMQPError, OSError, ScenarioTimeout) as e:
        ctx.log("scenario aborted", type(e).__name__, *_error_args(e))
    finally:
        try:
            with time_limit(10):
                ctx.cleanup()
        except ScenarioTimeout:
            pass
    return normalise(ctx.trace, ctx.prefix)


# ---------------------------------------------------------------- normalisation

_GEN = re.compile(r"amq\.gen-[A-Za-z0-9_\-]+")
_CTAG = re.compile(r"amq\.ctag-[A-Za-z0-9_\-]+")


def normalise(value, prefix):
    if isinstance(value, str):
        value = value.replace(prefix, "P")
        value = _GEN.sub("amq.gen-*", value)
        return _CTAG.sub("amq.ctag-*", value)
    if isinstance(value, bytes):
        try:
            return normalise(value.decode(), prefix)
        except UnicodeDecodeError:
            return "bytes:" + value.hex()
    if isinstance(value, (datetime.datetime, datetime.date)):
        return "<timestamp>"
    if isinstance(value, decimal.Decimal):
        return "decimal:" + str(value)
    if isinstance(value, dict):
        return {normalise(k, prefix): normalise(v, prefix) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalise(v, prefix) for v in value]
    return value


# ---------------------------------------------------------------- observation helpers

PROPERTY_NAMES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                  "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                  "type", "user_id", "app_id", "cluster_id")


def props_of(props):
    if props is None:
        return None
    return {k: getattr(props, k) for k in PROPERTY_NAMES if getattr(props, k) is not None}


def delivery(method, props, body):
    """What a consumer or basic.get sees of one message."""
    d = {"body": body, "exchange": method.exchange, "routing_key": method.routing_key,
         "redelivered": method.redelivered, "delivery_tag": method.delivery_tag}
    p = props_of(props)
    if p:
        d["properties"] = p
    return d


def _error_args(e):
    if isinstance(e, (px.ChannelClosedByBroker, px.ConnectionClosedByBroker)):
        return [e.reply_code, e.reply_text]
    return [str(e)]


def attempt(ctx, label, fn):
    """Runs fn; logs its result, or the channel/connection close it caused."""
    try:
        result = fn()
    except px.ChannelClosedByBroker as e:
        ctx.log(label, "channel.close", e.reply_code, e.reply_text)
        return None
    except px.ConnectionClosedByBroker as e:
        ctx.log(label, "connection.close", e.reply_code, e.reply_text)
        return None
    except px.UnroutableError as e:
        ctx.log(label, "returned", [returned(m) for m in e.messages])
        return None
    except px.NackError as e:
        ctx.log(label, "nacked", len(e.messages))
        return None
    ctx.log(label, "ok", summarise(result))
    return result


def returned(m):
    return {"reply_code": m.method.reply_code, "reply_text": m.method.reply_text,
            "exchange": m.method.exchange, "routing_key": m.method.routing_key,
            "body": m.body, "properties": props_of(m.properties)}


def summarise(result):
    """The client-visible content of a synchronous reply."""
    if result is None or isinstance(result, (str, int, bool)):
        return result
    if isinstance(result, list):  # basic_cancel: messages pika had not dispatched yet
        return {"undispatched": len(result)}
    method = getattr(result, "method", None)
    if method is None:
        return repr(type(result).__name__)
    out = {"method": method.NAME}
    for k in ("queue", "message_count", "consumer_count", "consumer_tag"):
        if hasattr(method, k):
            out[k] = getattr(method, k)
    return out


def publish(ch, exchange, key, body, props=None, mandatory=False):
    ch.basic_publish(exchange, key, body, properties=props, mandatory=mandatory)


def get_all(ctx, ch, queue, label, auto_ack=True, limit=50):
    """basic.get until get-empty, logging each message with get-ok's message_count."""
    got = []
    for _ in range(limit):
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is None:
            break
        d = delivery(method, props, body)
        d["message_count"] = method.message_count
        got.append(d)
    ctx.log(label, got)
    return got


def bodies_in(ch, queue):
    out = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body.decode())


def count(ch, queue, settle_for=0.15, limit=3.0):
    """Ready messages in queue, once the broker has caught up. RabbitMQ answers queue.declare
    (its "stat" call) ahead of acks, rejects and requeues still in the queue's mailbox, so a
    count read right after one of those is racy: read until it holds steady."""
    deadline = time.monotonic() + limit
    last = ch.queue_declare(queue, passive=True).method.message_count
    steady_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.03)
        now = ch.queue_declare(queue, passive=True).method.message_count
        if now != last:
            last, steady_since = now, time.monotonic()
        elif time.monotonic() - steady_since >= settle_for:
            break
    return last


def eventually_gone(ctx, conn, queue, label, timeout=3.0):
    """Logs whether queue disappears. RabbitMQ deletes exclusive and auto-delete queues
    asynchronously, just after the close-ok / cancel-ok, so poll (bounded) for the 404."""
    deadline = time.monotonic() + timeout
    while True:
        ch = conn.channel()
        try:
            ch.queue_declare(queue, passive=True)
        except px.ChannelClosedByBroker as e:
            ctx.log(label, "channel.close", e.reply_code, e.reply_text)
            return
        ch.close()
        if time.monotonic() > deadline:
            ctx.log(label, "still there")
            return
        time.sleep(0.05)


def pump(conn, until, timeout=5.0):
    """Processes I/O until until() is true (or timeout); returns until()."""
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.02)
    return until()


def settle(conn, seconds=0.3):
    """Processes I/O for a fixed time: lets anything unexpected arrive before we look."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn.process_data_events(time_limit=max(0.0, end - time.monotonic()))


class Consumer:
    """Records deliveries of one consumer."""

    def __init__(self, ctx, ch, queue, label, auto_ack=False, **kw):
        self.ch, self.label, self.got = ch, label, []
        self.tag = ch.basic_consume(queue, self._on, auto_ack=auto_ack, **kw)

    def _on(self, ch, method, props, body):
        self.got.append((method, props, body))

    def wait(self, conn, n, timeout=5.0):
        return pump(conn, lambda: len(self.got) >= n, timeout)

    def seen(self):
        return [delivery(*g) for g in self.got]


# ---------------------------------------------------------------- connection level

@scenario
def server_capabilities(ctx):
    conn = ctx.connect()
    props = conn._impl.server_properties
    # Ferry's own capabilities are x-* names (x-retry-delays), as its own arguments are: the
    # rest must be RabbitMQ's set exactly
    caps = {k: v for k, v in props.get("capabilities", {}).items() if not k.startswith("x-")}
    ctx.log("capabilities", dict(sorted(caps.items())))
    ctx.log("has product and version", isinstance(props.get("product"), (str, bytes)),
            isinstance(props.get("version"), (str, bytes)))


@scenario
def server_named_queue(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    ok = ch.queue_declare("", exclusive=True)
    ctx.log("declare-ok", summarise(ok))
    q = ok.method.queue
    ctx.log("name shape", bool(re.fullmatch(r"amq\.gen-[A-Za-z0-9_\-]{22}", q)))
    Consumer(ctx, ch, q, "c")
    ctx.log("redeclare with consumer", summarise(ch.queue_declare(q, passive=True)))
    ok2 = ch.queue_declare("", exclusive=True)
    ctx.log("second server-named queue is new", ok2.method.queue != q)


# ---------------------------------------------------------------- routing

@scenario
def default_exchange_routing(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, ok = ctx.queue(ch, "q")
    ctx.log("declare-ok", summarise(ok))
    publish(ch, "", q, b"to-queue")
    attempt(ctx, "publish to amq.default", lambda: publish(ch, "amq.default", q, b"via-amq.default"))
    ch = ctx.channel(conn)
    attempt(ctx, "publish unroutable mandatory",
            lambda: publish(ch, "", ctx.n("missing"), b"lost", mandatory=True))
    attempt(ctx, "publish unroutable not mandatory", lambda: publish(ch, "", ctx.n("missing"), b"lost"))
    get_all(ctx, ch, q, "gets")
    attempt(ctx, "bind to default exchange", lambda: ch.queue_bind(q, "", "x"))
    ch = ctx.channel(conn)
    attempt(ctx, "declare default exchange passively", lambda: ch.exchange_declare("", passive=True))
    ch = ctx.channel(conn)
    attempt(ctx, "delete amq.direct", lambda: ch.exchange_delete("amq.direct"))


@scenario
def direct_exchange_routing(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    e = ctx.exchange(ch, "direct", "direct")
    q1, _ = ctx.queue(ch, "q1")
    q2, _ = ctx.queue(ch, "q2")
    q3, _ = ctx.queue(ch, "q3")
    ch.queue_bind(q1, e, "a")
    ch.queue_bind(q2, e, "a")
    ch.queue_bind(q2, e, "b")
    ch.queue_bind(q2, e, "b")  # a duplicate binding is a no-op
    ch.queue_bind(q3, e, "")
    for key in ("a", "b", "", "c", "A"):
        attempt(ctx, f"publish {key!r}", lambda: publish(ch, e, key, key.encode() or b"<empty>", mandatory=True))
    for q in (q1, q2, q3):
        ctx.log("queue", q, bodies_in(ch, q))
    ch.queue_unbind(q2, e, "a")
    attempt(ctx, "unbind a binding that does not exist", lambda: ch.queue_unbind(q2, e, "zzz"))
    publish(ch, e, "a", b"after-unbind")
    for q in (q1, q2):
        ctx.log("queue", q, bodies_in(ch, q))


@scenario
def fanout_exchange_routing(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    e = ctx.exchange(ch, "fanout", "fanout")
    attempt(ctx, "publish with no bindings", lambda: publish(ch, e, "k", b"nobody", mandatory=True))
    q1, _ = ctx.queue(ch, "q1")
    q2, _ = ctx.queue(ch, "q2")
    ch.queue_bind(q1, e, "ignored")
    ch.queue_bind(q2, e, "")
    publish(ch, e, "anything", b"m1")
    publish(ch, e, "", b"m2")
    ch.queue_unbind(q1, e, "ignored")
    publish(ch, e, "x", b"m3")
    for q in (q1, q2):
        ctx.log("queue", q, bodies_in(ch, q))


TOPIC_PATTERNS = ["#", "*", "a", "a.*", "a.#", "#.a", "*.a", "a.*.c", "a.#.c", "#.c", "a.*.*",
                  "*.*", "#.#", "a.#.#", "#.*", "*.#", "", "a..c", "*.*.*", "#.b.#"]
TOPIC_KEYS = ["", "a", "b", "a.b", "a.b.c", "a.x.y.c", "a.c", "c", "b.a", "a.", ".a", "a..c",
              "x.a.c", "#", "*", "a.b.c.d", "x.b.y", "b.b"]


@scenario
def topic_exchange_routing(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    e = ctx.exchange(ch, "topic", "topic")
    queues = []
    for i, pattern in enumerate(TOPIC_PATTERNS):
        q, _ = ctx.queue(ch, f"t{i}")
        ch.queue_bind(q, e, pattern)
        queues.append((pattern, q))
    for key in TOPIC_KEYS:
        attempt(ctx, f"publish {key!r}", lambda: publish(ch, e, key, key.encode() or b"<empty>", mandatory=True))
    for pattern, q in queues:
        ctx.log("pattern", pattern, sorted(bodies_in(ch, q)))


@scenario
def topic_binding_changes(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    e = ctx.exchange(ch, "topic", "topic")
    q, _ = ctx.queue(ch, "q")
    ch.queue_bind(q, e, "a.*")
    ch.queue_bind(q, e, "*.b")
    publish(ch, e, "a.b", b"matched-twice-delivered-once")
    ch.queue_unbind(q, e, "a.*")
    publish(ch, e, "a.c", b"a.c-after-unbind")
    publish(ch, e, "x.b", b"x.b")
    ctx.log("queue", bodies_in(ch, q))


HEADERS_BINDINGS = [
    ("all-a1-b2", {"x-match": "all", "a": 1, "b": 2}),
    ("any-a1-b2", {"x-match": "any", "a": 1, "b": 2}),
    ("default-a1", {"a": 1}),
    ("all-empty", {"x-match": "all"}),
    ("any-empty", {"x-match": "any"}),
    ("all-a-string", {"x-match": "all", "a": "1"}),
    ("all-with-x-foo", {"x-match": "all-with-x", "x-foo": "bar"}),
    ("any-with-x-foo", {"x-match": "any-with-x", "x-foo": "bar", "a": 9}),
    ("all-x-foo", {"x-match": "all", "x-foo": "bar"}),
    ("any-bool", {"x-match": "any", "flag": True}),
]
HEADERS_MESSAGES = [
    ("a1-b2", {"a": 1, "b": 2}),
    ("a1", {"a": 1}),
    ("a-string-1", {"a": "1"}),
    ("b2-c3", {"b": 2, "c": 3}),
    ("none", None),
    ("empty", {}),
    ("x-foo-a1-b2", {"x-foo": "bar", "a": 1, "b": 2}),
    ("x-foo", {"x-foo": "bar"}),
    ("flag-true", {"flag": True}),
    ("a1-long", {"a": 2 ** 40}),
]


@scenario
def headers_exchange_routing(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    e = ctx.exchange(ch, "headers", "headers")
    queues = []
    for label, args in HEADERS_BINDINGS:
        q, _ = ctx.queue(ch, label)
        ch.queue_bind(q, e, "", arguments=args)
        queues.append((label, q))
    for label, headers in HEADERS_MESSAGES:
        attempt(ctx, f"publish {label}", lambda: publish(
            ch, e, "ignored", label.encode(), pika.BasicProperties(headers=headers), mandatory=True))
    for label, q in queues:
        ctx.log("binding", label, sorted(bodies_in(ch, q)))
    ch2 = ctx.channel(conn)
    attempt(ctx, "bind with bad x-match", lambda: ch2.queue_bind(queues[0][1], e, "", arguments={"x-match": "some"}))


@scenario
def exchange_to_exchange_and_alternate_exchange(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    src = ctx.exchange(ch, "src", "topic")
    dst = ctx.exchange(ch, "dst", "fanout")
    ae = ctx.exchange(ch, "ae", "fanout")
    withae = ctx.exchange(ch, "with-ae", "direct", arguments={"alternate-exchange": ae})
    qd, _ = ctx.queue(ch, "via-e2e")
    qa, _ = ctx.queue(ch, "alternate")
    qn, _ = ctx.queue(ch, "normal")
    ch.exchange_bind(dst, src, "a.#")
    ch.queue_bind(qd, dst, "")
    ch.queue_bind(qa, ae, "")
    ch.queue_bind(qn, withae, "known")
    for key in ("a.b", "b.a"):
        attempt(ctx, f"publish src {key}", lambda: publish(ch, src, key, key.encode(), mandatory=True))
    for key in ("known", "unknown"):
        attempt(ctx, f"publish with-ae {key}", lambda: publish(ch, withae, key, key.encode(), mandatory=True))
    for q in (qd, qa, qn):
        ctx.log("queue", q, bodies_in(ch, q))
    internal = ctx.exchange(ch, "internal", "fanout", internal=True)
    attempt(ctx, "publish to internal exchange", lambda: publish(ch, internal, "", b"x"))
    ch = ctx.channel(conn)
    ch.exchange_unbind(dst, src, "a.#")
    attempt(ctx, "publish src after unbind", lambda: publish(ch, src, "a.b", b"gone", mandatory=True))
    attempt(ctx, "e2e bind from missing source", lambda: ch.exchange_bind(dst, ctx.n("missing"), "x"))


@scenario
def mandatory_returns(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    e = ctx.exchange(ch, "direct", "direct")
    props = pika.BasicProperties(content_type="text/plain", headers={"h": "v"}, message_id="m1")
    attempt(ctx, "mandatory to unbound key", lambda: publish(ch, e, "nowhere", b"ret", props, mandatory=True))
    attempt(ctx, "not mandatory to unbound key", lambda: publish(ch, e, "nowhere", b"drop"))
    # Without confirms: basic.return arrives asynchronously, before anything published later.
    plain = ctx.channel(conn, confirm=False)
    got = []
    plain.add_on_return_callback(lambda c, m, p, b: got.append(
        {"reply_code": m.reply_code, "reply_text": m.reply_text, "exchange": m.exchange,
         "routing_key": m.routing_key, "body": b}))
    q, _ = ctx.queue(plain, "q")
    ch.queue_bind(q, e, "known")
    publish(plain, e, "nowhere", b"r1", mandatory=True)
    publish(plain, e, "known", b"routed", mandatory=True)
    publish(plain, e, "nowhere", b"r2", mandatory=True)
    pump(conn, lambda: len(got) >= 2)
    settle(conn)
    ctx.log("returns without confirms", got)
    ctx.log("routed", bodies_in(ch, q))
    attempt(ctx, "publish to missing exchange",
            lambda: publish(ch, ctx.n("no-such-exchange"), "k", b"x", mandatory=True))


# ---------------------------------------------------------------- get, counts, purge, delete

@scenario
def basic_get_counts(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, ok = ctx.queue(ch, "q")
    ctx.log("declare-ok", summarise(ok))
    for i in range(3):
        publish(ch, "", q, f"m{i}".encode())
    ctx.log("count after 3", count(ch, q))
    get_all(ctx, ch, q, "gets (no-ack)")
    ctx.log("get on empty", ch.basic_get(q, auto_ack=True)[0] is None)
    for i in range(2):
        publish(ch, "", q, f"n{i}".encode())
    m, _, _ = ch.basic_get(q, auto_ack=False)
    ctx.log("get with ack", m.message_count, m.delivery_tag)
    ctx.log("count with one unacked", count(ch, q))
    c = Consumer(ctx, ch, q, "c")
    c.wait(conn, 1)
    ctx.log("count with consumer", count(ch, q), ch.queue_declare(q, passive=True).method.consumer_count)
    ctx.log("consumer got", c.seen())


@scenario
def purge_and_delete_counts(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "q")
    for i in range(4):
        publish(ch, "", q, f"m{i}".encode())
    m, _, _ = ch.basic_get(q, auto_ack=False)  # one unacked: purge leaves it alone
    attempt(ctx, "purge", lambda: ch.queue_purge(q))
    ch.basic_reject(m.delivery_tag, requeue=True)
    ctx.log("count after requeue of the unacked one", count(ch, q))
    attempt(ctx, "purge again", lambda: ch.queue_purge(q))
    for i in range(2):
        publish(ch, "", q, f"n{i}".encode())
    attempt(ctx, "delete if-empty on non-empty", lambda: ch.queue_delete(q, if_empty=True))
    ch = ctx.channel(conn)
    c = Consumer(ctx, ch, q, "c", auto_ack=False)
    c.wait(conn, 2)
    other = ctx.channel(conn)
    attempt(ctx, "delete if-unused with consumer", lambda: other.queue_delete(q, if_unused=True))
    ch.basic_cancel(c.tag)
    other = ctx.channel(conn)
    attempt(ctx, "delete with 2 unacked", lambda: other.queue_delete(q))
    attempt(ctx, "delete missing queue", lambda: other.queue_delete(ctx.n("missing")))
    attempt(ctx, "purge missing queue", lambda: other.queue_purge(ctx.n("missing")))
    other = ctx.channel(conn)
    e = ctx.exchange(other, "e", "direct")
    q2, _ = ctx.queue(other, "q2")
    other.queue_bind(q2, e, "k")
    attempt(ctx, "exchange delete if-unused with binding", lambda: other.exchange_delete(e, if_unused=True))
    other = ctx.channel(conn)
    attempt(ctx, "exchange delete", lambda: other.exchange_delete(e))
    attempt(ctx, "exchange delete missing", lambda: other.exchange_delete(ctx.n("missing")))
    attempt(ctx, "queue bound to deleted exchange still exists", lambda: other.queue_declare(q2, passive=True))


# ---------------------------------------------------------------- acks, requeue, redelivery

@scenario
def requeue_order_and_redelivered_flags(ctx):
    conn = ctx.connect()
    pub = ctx.channel(conn)
    q, _ = ctx.queue(pub, "q")
    for i in range(6):
        publish(pub, "", q, f"m{i}".encode())
    a = ctx.channel(conn, confirm=False)
    tags = [a.basic_get(q, auto_ack=False)[0].delivery_tag for _ in range(6)]
    ctx.log("tags", tags)
    a.basic_reject(tags[2], requeue=True)
    a.basic_nack(tags[0], multiple=False, requeue=True)
    a.basic_ack(tags[1])
    ctx.log("count after reject+nack", count(a, q))
    get_all(ctx, a, q, "after reject m2, nack m0 (kept unacked)", auto_ack=False)
    a.close()  # m3, m4, m5 and the re-got m0, m2 go back
    b = ctx.channel(conn)
    get_all(ctx, b, q, "after channel close")


@scenario
def nack_and_reject_variants(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "q")
    for i in range(8):
        publish(ch, "", q, f"m{i}".encode())
    tags = [ch.basic_get(q, auto_ack=False)[0].delivery_tag for _ in range(8)]
    ch.basic_nack(tags[2], multiple=True, requeue=False)   # drops m0..m2
    ctx.log("after nack multiple no-requeue", count(ch, q))
    ch.basic_reject(tags[3], requeue=False)                # drops m3
    ch.basic_nack(tags[5], multiple=True, requeue=True)    # m4, m5 back
    ctx.log("after nack multiple requeue", count(ch, q))
    ch.basic_ack(tags[7], multiple=True)                   # acks m6, m7
    get_all(ctx, ch, q, "left")
    ch.basic_nack(0, multiple=True, requeue=True)          # nothing outstanding: a no-op
    ctx.log("still open", ch.is_open, count(ch, q))


@scenario
def basic_recover_requeues_unacked(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "q")
    for i in range(3):
        publish(ch, "", q, f"m{i}".encode())
    for _ in range(3):
        ch.basic_get(q, auto_ack=False)
    attempt(ctx, "recover", lambda: ch.basic_recover(requeue=True))
    get_all(ctx, ch, q, "after recover", auto_ack=False)
    attempt(ctx, "ack the re-got ones", lambda: ch.basic_ack(0, multiple=True))
    ctx.log("count", count(ch, q))


@scenario
def acknowledgement_errors(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "q")
    for i in range(3):
        publish(ch, "", q, f"m{i}".encode())

    def unknown_tag():
        ch.basic_ack(99)
        ch.queue_declare(q, passive=True)  # a round trip, so the error arrives
    attempt(ctx, "ack unknown tag", unknown_tag)

    ch = ctx.channel(conn)

    def double_ack():
        tag = ch.basic_get(q, auto_ack=False)[0].delivery_tag
        ch.basic_ack(tag)
        ch.basic_ack(tag)
        ch.queue_declare(q, passive=True)
    attempt(ctx, "double ack", double_ack)

    ch = ctx.channel(conn)

    def reject_after_auto_ack():
        tag = ch.basic_get(q, auto_ack=True)[0].delivery_tag
        ch.basic_reject(tag)
        ch.queue_declare(q, passive=True)
    attempt(ctx, "reject a no-ack delivery", reject_after_auto_ack)

    ch = ctx.channel(conn)

    def nack_unknown_multiple():
        ch.basic_nack(5, multiple=True)
        ch.queue_declare(q, passive=True)
    attempt(ctx, "nack multiple unknown tag", nack_unknown_multiple)
    ch = ctx.channel(conn)
    ctx.log("messages left", count(ch, q))


@scenario
def consumer_redelivery_after_channel_close(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "q")
    for i in range(4):
        publish(ch, "", q, f"m{i}".encode())
    a = ctx.channel(conn, confirm=False)
    ca = Consumer(ctx, a, q, "a")
    ctx.log("a complete", ca.wait(conn, 4))
    a.basic_ack(ca.got[1][0].delivery_tag)
    a.close()
    b = ctx.channel(conn, confirm=False)
    cb = Consumer(ctx, b, q, "b", auto_ack=True)
    ctx.log("b complete", cb.wait(conn, 3))
    settle(conn)
    ctx.log("a saw", ca.seen())
    ctx.log("b saw", cb.seen())


# ---------------------------------------------------------------- consumers

@scenario
def prefetch_distribution(ctx):
    conn = ctx.connect()
    pub = ctx.channel(conn)
    q, _ = ctx.queue(pub, "q")
    for i in range(8):
        publish(pub, "", q, f"m{i}".encode())
    a = ctx.channel(conn, confirm=False)
    a.basic_qos(prefetch_count=2)
    ca = Consumer(ctx, a, q, "a")
    ca.wait(conn, 2)
    settle(conn)
    ctx.log("a after attach", [d["body"] for d in ca.seen()])
    b = ctx.channel(conn, confirm=False)
    b.basic_qos(prefetch_count=3)
    cb = Consumer(ctx, b, q, "b")
    cb.wait(conn, 3)
    settle(conn)
    ctx.log("b after attach", [d["body"] for d in cb.seen()])
    ctx.log("ready left", count(pub, q))
    a.basic_ack(ca.got[0][0].delivery_tag)
    ca.wait(conn, 3)
    settle(conn)
    ctx.log("a after one ack", [d["body"] for d in ca.seen()])
    b.basic_ack(cb.got[2][0].delivery_tag, multiple=True)
    cb.wait(conn, 5)
    settle(conn)
    ctx.log("b after ack multiple", [d["body"] for d in cb.seen()])
    ctx.log("ready left", count(pub, q))


@scenario
def round_robin_between_consumers(ctx):
    conn = ctx.connect()
    pub = ctx.channel(conn)
    q, _ = ctx.queue(pub, "q")
    a = ctx.channel(conn, confirm=False)
    b = ctx.channel(conn, confirm=False)
    ca = Consumer(ctx, a, q, "a", auto_ack=True)
    cb = Consumer(ctx, b, q, "b", auto_ack=True)
    for i in range(6):
        publish(pub, "", q, f"m{i}".encode())
    pump(conn, lambda: len(ca.got) + len(cb.got) >= 6)
    settle(conn)
    ctx.log("a", [d["body"] for d in ca.seen()])
    ctx.log("b", [d["body"] for d in cb.seen()])


@scenario
def consumer_cancel_notification_on_queue_delete(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn, confirm=False)
    q, _ = ctx.queue(ch, "q")
    cancels = []
    ch.add_on_cancel_callback(lambda frame: cancels.append(frame.method.consumer_tag))
    c = Consumer(ctx, ch, q, "c", consumer_tag=ctx.n("ctag"))
    other = ctx.channel(conn)
    attempt(ctx, "delete queue with consumer", lambda: other.queue_delete(q))
    pump(conn, lambda: cancels)
    settle(conn)
    ctx.log("cancel notifications", cancels)
    ctx.log("consumer channel still open", ch.is_open)
    attempt(ctx, "declare on consumer channel", lambda: ch.queue_declare("", exclusive=True))
    attempt(ctx, "cancel the cancelled consumer", lambda: ch.basic_cancel(c.tag))


@scenario
def consumer_cancel_and_auto_delete(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, ok = ctx.queue(ch, "auto", auto_delete=True)
    c = Consumer(ctx, ch, q, "c")
    ctx.log("consumers", ch.queue_declare(q, passive=True).method.consumer_count)
    attempt(ctx, "cancel", lambda: ch.basic_cancel(c.tag))
    eventually_gone(ctx, conn, q, "auto-delete queue after last consumer")


@scenario
def exclusive_queue_and_exclusive_consumer(ctx):
    owner = ctx.connect()
    other = ctx.connect()
    och = ctx.channel(owner)
    q, _ = ctx.queue(och, "excl", exclusive=True)
    for label, op in [
        ("declare", lambda ch: ch.queue_declare(q)),
        ("declare passive", lambda ch: ch.queue_declare(q, passive=True)),
        ("consume", lambda ch: ch.basic_consume(q, lambda *a: None)),
        ("get", lambda ch: ch.basic_get(q)),
        ("purge", lambda ch: ch.queue_purge(q)),
        ("delete", lambda ch: ch.queue_delete(q)),
        ("bind", lambda ch: ch.queue_bind(q, "amq.fanout", "")),
    ]:
        ch = ctx.channel(other)
        attempt(ctx, f"other connection: {label}", lambda: op(ch))
    shared, _ = ctx.queue(och, "shared")
    och.basic_consume(shared, lambda *a: None, exclusive=True)
    ch = ctx.channel(other)
    attempt(ctx, "second consumer on exclusively consumed queue", lambda: ch.basic_consume(shared, lambda *a: None))
    ch = ctx.channel(owner)
    attempt(ctx, "same connection, second consumer", lambda: ch.basic_consume(shared, lambda *a: None))
    ch = ctx.channel(other)
    attempt(ctx, "exclusive consume on queue with a consumer", lambda: ch.basic_consume(shared, lambda *a: None, exclusive=True))
    owner.close()
    eventually_gone(ctx, other, q, "exclusive queue after owner closed")


# ---------------------------------------------------------------- declarations and errors

@scenario
def declare_errors(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "q", arguments={"x-max-length": 10})
    e = ctx.exchange(ch, "e", "direct")

    def on_fresh(label, op):
        nonlocal ch, conn
        attempt(ctx, label, lambda: op(ch))
        if not conn.is_open:
            conn = ctx.connect()
        if not ch.is_open:
            ch = ctx.channel(conn)

    on_fresh("passive missing queue", lambda c: c.queue_declare(ctx.n("missing"), passive=True))
    on_fresh("passive missing exchange", lambda c: c.exchange_declare(ctx.n("missing"), passive=True))
    on_fresh("redeclare queue same", lambda c: c.queue_declare(q, arguments={"x-max-length": 10}))
    on_fresh("redeclare queue durable", lambda c: c.queue_declare(q, durable=True, arguments={"x-max-length": 10}))
    on_fresh("redeclare queue auto-delete", lambda c: c.queue_declare(q, auto_delete=True, arguments={"x-max-length": 10}))
    on_fresh("redeclare queue other argument", lambda c: c.queue_declare(q, arguments={"x-max-length": 11}))
    on_fresh("redeclare queue missing argument", lambda c: c.queue_declare(q))
    on_fresh("passive declare ignores arguments", lambda c: c.queue_declare(q, passive=True, durable=True))
    on_fresh("redeclare exchange same", lambda c: c.exchange_declare(e, "direct"))
    on_fresh("redeclare exchange other type", lambda c: c.exchange_declare(e, "fanout"))
    on_fresh("redeclare exchange durable", lambda c: c.exchange_declare(e, "direct", durable=True))
    on_fresh("queue with amq. prefix", lambda c: c.queue_declare(f"amq.{ctx.prefix}"))
    on_fresh("passive queue with amq. prefix", lambda c: c.queue_declare(f"amq.{ctx.prefix}", passive=True))
    on_fresh("exchange with amq. prefix", lambda c: c.exchange_declare(f"amq.{ctx.prefix}", "direct"))
    on_fresh("redeclare amq.direct", lambda c: c.exchange_declare("amq.direct", "direct", durable=True))
    on_fresh("redeclare amq.direct passively", lambda c: c.exchange_declare("amq.direct", passive=True))
    on_fresh("bind to missing exchange", lambda c: c.queue_bind(q, ctx.n("missing"), "k"))
    on_fresh("bind missing queue", lambda c: c.queue_bind(ctx.n("missing"), e, "k"))
    on_fresh("unbind missing queue", lambda c: c.queue_unbind(ctx.n("missing"), e, "k"))
    on_fresh("consume missing queue", lambda c: c.basic_consume(ctx.n("missing"), lambda *a: None))
    on_fresh("get missing queue", lambda c: c.basic_get(ctx.n("missing")))
    on_fresh("x-max-length of wrong type", lambda c: c.queue_declare(ctx.n("bad1"), arguments={"x-max-length": "ten"}))
    on_fresh("negative x-max-length", lambda c: c.queue_declare(ctx.n("bad2"), arguments={"x-max-length": -1}))
    on_fresh("x-message-ttl of wrong type", lambda c: c.queue_declare(ctx.n("bad3"), arguments={"x-message-ttl": "soon"}))
    on_fresh("unknown x- argument is accepted", lambda c: c.queue_declare(ctx.n("odd"), arguments={"x-ferry-unknown": 1}))
    ctx.queues.add(ctx.n("odd"))
    on_fresh("qos with prefetch_size", lambda c: c.basic_qos(prefetch_size=1))
    conn = ctx.connect()
    ch = ctx.channel(conn)
    attempt(ctx, "unknown exchange type", lambda: ch.exchange_declare(ctx.n("bad"), "x-no-such-type"))
    ctx.log("connection open after unknown exchange type", conn.is_open)


@scenario
def message_properties_round_trip(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "q")
    headers = {"str": "v", "int": 42, "neg": -7, "long": 2 ** 40, "bool": True,
               "list": [1, "two", [3]], "table": {"k": {"n": 1}}, "bytes": b"\x00\x01",
               "void": None, "decimal": decimal.Decimal("1.25"),
               "when": datetime.datetime(2024, 1, 2, 3, 4, 5)}
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers=headers,
        delivery_mode=2, priority=3, correlation_id="corr", reply_to="reply", expiration="60000",
        message_id="mid", timestamp=1700000000, type="kind", user_id="guest", app_id="app")
    publish(ch, "", q, b"{}", props)
    publish(ch, "", q, b"", pika.BasicProperties())
    publish(ch, "", q, bytes(range(256)) * 4)
    get_all(ctx, ch, q, "gets")
    attempt(ctx, "user_id of another user",
            lambda: publish(ch, "", q, b"x", pika.BasicProperties(user_id="mallory")))
    ch = ctx.channel(conn)
    attempt(ctx, "invalid expiration",
            lambda: publish(ch, "", q, b"x", pika.BasicProperties(expiration="soon")))
    ch = ctx.channel(conn)
    attempt(ctx, "negative expiration",
            lambda: publish(ch, "", q, b"x", pika.BasicProperties(expiration="-5")))


@scenario
def large_message_round_trip(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "q")
    body = bytes((i * 7) % 256 for i in range(1_000_000))
    publish(ch, "", q, body)
    m, _, got = ch.basic_get(q, auto_ack=True)
    ctx.log("size", len(got), got == body, m.message_count)


# ---------------------------------------------------------------- transactions

@scenario
def tx_commit_and_rollback_visibility(ctx):
    conn = ctx.connect()
    obs = ctx.channel(conn)
    q, _ = ctx.queue(obs, "q")
    tx = ctx.channel(conn, confirm=False)
    attempt(ctx, "tx.select", lambda: tx.tx_select())
    publish(tx, "", q, b"t1")
    publish(tx, "", q, b"t2")
    ctx.log("visible before commit", count(obs, q))
    attempt(ctx, "commit", lambda: tx.tx_commit())
    ctx.log("visible after commit", count(obs, q))
    publish(tx, "", q, b"t3")
    attempt(ctx, "rollback", lambda: tx.tx_rollback())
    ctx.log("visible after rollback", count(obs, q))
    attempt(ctx, "commit with nothing pending", lambda: tx.tx_commit())
    # acks inside a transaction
    m1, _, _ = tx.basic_get(q, auto_ack=False)
    m2, _, _ = tx.basic_get(q, auto_ack=False)
    tx.basic_ack(m1.delivery_tag)
    attempt(ctx, "rollback an ack", lambda: tx.tx_rollback())
    ctx.log("ready after rolled-back ack", count(obs, q))
    tx.basic_ack(m2.delivery_tag)
    attempt(ctx, "commit an ack", lambda: tx.tx_commit())
    tx.close()
    get_all(ctx, obs, q, "left after close")


@scenario
def tx_and_confirm_mode_errors(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn, confirm=False)
    attempt(ctx, "commit without select", lambda: ch.tx_commit())
    ch = ctx.channel(conn, confirm=False)
    attempt(ctx, "rollback without select", lambda: ch.tx_rollback())
    ch = ctx.channel(conn, confirm=False)
    ch.tx_select()
    attempt(ctx, "confirm.select on tx channel", lambda: ch.confirm_delivery())
    ch = ctx.channel(conn, confirm=True)
    attempt(ctx, "tx.select on confirm channel", lambda: ch.tx_select())
    ch = ctx.channel(conn, confirm=False)
    ch.tx_select()
    attempt(ctx, "tx.select twice", lambda: ch.tx_select())


# ---------------------------------------------------------------- queue features

@scenario
def dead_lettering_with_x_death(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    dlx = ctx.exchange(ch, "dlx", "fanout")
    dlq, _ = ctx.queue(ch, "dlq")
    ch.queue_bind(dlq, dlx, "")
    q, _ = ctx.queue(ch, "work", arguments={"x-dead-letter-exchange": dlx})
    publish(ch, "", q, b"rejected", pika.BasicProperties(headers={"h": 1}))
    publish(ch, "", q, b"nacked")
    publish(ch, "", q, b"expired", pika.BasicProperties(expiration="0"))
    r = ch.basic_get(q, auto_ack=False)[0]
    ch.basic_reject(r.delivery_tag, requeue=False)
    n = ch.basic_get(q, auto_ack=False)[0]
    ch.basic_nack(n.delivery_tag, requeue=False)
    pump(conn, lambda: count(ch, dlq, settle_for=0) >= 3)
    # Three independent dead-letterings: their order in the DLQ is not a contract.
    got = []
    for _ in range(3):
        method, props, body = ch.basic_get(dlq, auto_ack=True)
        if method is None:
            break
        d = delivery(method, props, body)
        d.pop("delivery_tag")
        got.append(d)
    ctx.log("dead letters", sorted(got, key=lambda d: d["body"]))
    ctx.log("dead-letter queue left", count(ch, dlq))
    # Dead-letter twice through the same queue: x-death count goes up.
    q2, _ = ctx.queue(ch, "again", arguments={"x-dead-letter-exchange": "",
                                             "x-dead-letter-routing-key": ctx.n("again2")})
    q3, _ = ctx.queue(ch, "again2", arguments={"x-dead-letter-exchange": "",
                                              "x-dead-letter-routing-key": ctx.n("again")})
    publish(ch, "", q2, b"loop")
    for _ in range(3):
        src = q2 if count(ch, q2) else q3
        m = ch.basic_get(src, auto_ack=False)[0]
        ch.basic_reject(m.delivery_tag, requeue=False)
        pump(conn, lambda: count(ch, q2, settle_for=0) + count(ch, q3, settle_for=0) >= 1)
    get_all(ctx, ch, q3, "after three dead-letterings")


@scenario
def max_length_overflow(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    dlx = ctx.exchange(ch, "dlx", "fanout")
    dlq, _ = ctx.queue(ch, "dlq")
    ch.queue_bind(dlq, dlx, "")
    head, _ = ctx.queue(ch, "drop-head", arguments={"x-max-length": 2, "x-dead-letter-exchange": dlx})
    for i in range(4):
        publish(ch, "", head, f"h{i}".encode())
    get_all(ctx, ch, head, "drop-head kept")
    pump(conn, lambda: count(ch, dlq, settle_for=0) >= 2)
    ctx.log("dropped to dlx", [d["body"] for d in get_all(ctx, ch, dlq, "dlq")])
    rej, _ = ctx.queue(ch, "reject", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    for i in range(3):
        attempt(ctx, f"publish r{i}", lambda: publish(ch, "", rej, f"r{i}".encode()))
    get_all(ctx, ch, rej, "reject-publish kept")
    byt, _ = ctx.queue(ch, "bytes", arguments={"x-max-length-bytes": 10})
    for i in range(3):
        publish(ch, "", byt, b"12345")
    get_all(ctx, ch, byt, "max-length-bytes kept")


@scenario
def priority_queue_order(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "prio", arguments={"x-max-priority": 5})
    for body, prio in [("p1", 1), ("p5", 5), ("none", None), ("p3", 3), ("p9", 9), ("p5b", 5), ("p0", 0)]:
        publish(ch, "", q, body.encode(), pika.BasicProperties(priority=prio))
    got = get_all(ctx, ch, q, "priority order")
    ctx.log("bodies", [d["body"] for d in got])


# ---------------------------------------------------------------- issue 4: patterns

@scenario
def consistent_hash_routing_by_key_weights_and_unbind(ctx):
    """Same bindings, same messages: the same queue for every key, as the plugin's ring."""
    conn = ctx.connect()
    ch = ctx.channel(conn)
    x = ctx.exchange(ch, "chx", "x-consistent-hash")
    qs = []
    for i, w in enumerate((1, 2, 3, 1)):
        q, _ = ctx.queue(ch, f"p{i}")
        ch.queue_bind(q, x, str(w))
        qs.append(q)
    for k in range(60):
        publish(ch, x, f"key-{k}", f"key-{k}".encode())
    ctx.log("placement", {q: bodies_in(ch, q) for q in qs})
    ch.queue_unbind(qs[1], x, "2")
    for k in range(60):
        publish(ch, x, f"key-{k}", f"key-{k}".encode())
    ctx.log("placement after unbind", {q: bodies_in(ch, q) for q in qs})
    attempt(ctx, "bind with a non-integer key", lambda: ch.queue_bind(qs[0], x, "abc"))
    ch = ctx.channel(conn)
    attempt(ctx, "bind with weight 0", lambda: ch.queue_bind(qs[0], x, "0"))


@scenario
def consistent_hash_on_header_and_property(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    xh = ctx.exchange(ch, "chx-h", "x-consistent-hash", arguments={"hash-header": "entity"})
    xp = ctx.exchange(ch, "chx-p", "x-consistent-hash", arguments={"hash-property": "message_id"})
    qs = []
    for i in range(3):
        q, _ = ctx.queue(ch, f"p{i}")
        ch.queue_bind(q, xh, "1")
        ch.queue_bind(q, xp, "1")
        qs.append(q)
    for k in range(30):
        publish(ch, xh, "rk", f"h-str-{k}".encode(), pika.BasicProperties(headers={"entity": f"e{k}"}))
        publish(ch, xh, "rk", f"h-int-{k}".encode(), pika.BasicProperties(headers={"entity": k * 7919}))
        publish(ch, xp, "rk", f"p-{k}".encode(), pika.BasicProperties(message_id=f"m{k}"))
    publish(ch, xh, "rk", b"h-missing")
    publish(ch, xp, "rk", b"p-missing")
    ctx.log("placement", {q: bodies_in(ch, q) for q in qs})
    ch = ctx.channel(conn)
    attempt(ctx, "both hash-header and hash-property", lambda: ch.exchange_declare(
        ctx.n("bad"), "x-consistent-hash", arguments={"hash-header": "a", "hash-property": "message_id"}))
    ch = ctx.channel(conn)
    attempt(ctx, "unsupported hash-property", lambda: ch.exchange_declare(
        ctx.n("bad2"), "x-consistent-hash", arguments={"hash-property": "app_id"}))


@scenario
def quorum_queue_declare_rules(ctx):
    conn = ctx.connect()
    qq = {"x-queue-type": "quorum"}
    cases = [
        ("non-durable", {}, qq),
        ("exclusive", {"durable": True, "exclusive": True}, qq),
        ("auto-delete", {"durable": True, "auto_delete": True}, qq),
        ("max-priority", {"durable": True}, {**qq, "x-max-priority": 3}),
        ("queue-mode", {"durable": True}, {**qq, "x-queue-mode": "lazy"}),
        ("classic delivery-limit", {"durable": True}, {"x-delivery-limit": 3}),
        ("classic in-memory-length", {}, {"x-max-in-memory-length": 3}),
        ("bogus type", {"durable": True}, {"x-queue-type": "bogus"}),
    ]
    for label, kw, args in cases:
        ch = ctx.channel(conn)
        attempt(ctx, label, lambda: ctx.queue(ch, label.replace(" ", "-"), arguments=args, **kw))
    ch = ctx.channel(conn)
    attempt(ctx, "durable quorum", lambda: ctx.queue(ch, "good", durable=True, arguments=qq))


@scenario
def quorum_delivery_count_and_delivery_limit(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    dlq, _ = ctx.queue(ch, "dlq", durable=True)
    src, _ = ctx.queue(ch, "src", durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 2,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    publish(ch, "", src, b"poison", pika.BasicProperties(headers={"a": 1}, message_id="p1"))
    count(ch, src)
    for i in range(2):
        m, p, b = ch.basic_get(src)
        ctx.log("get", delivery(m, p, b))
        ch.basic_nack(m.delivery_tag, requeue=True)
        count(ch, src)
    other = ctx.channel(conn)
    m, p, b = other.basic_get(src)
    ctx.log("get on a channel that then closes", delivery(m, p, b))
    other.close()
    ctx.log("left in src", count(ch, src))
    ctx.log("dlq count", count(ch, dlq))
    get_all(ctx, ch, dlq, "dead letters")


@scenario
def single_active_consumer_failover(ctx):
    conn = ctx.connect()
    ch = ctx.channel(conn)
    q, _ = ctx.queue(ch, "sac", arguments={"x-single-active-consumer": True})
    cha, chb = ctx.channel(conn, confirm=False), ctx.channel(conn, confirm=False)
    a = Consumer(ctx, cha, q, "a", auto_ack=True)
    b = Consumer(ctx, chb, q, "b", auto_ack=True)
    for i in range(4):
        publish(ch, "", q, f"m{i}".encode())
    a.wait(conn, 4)
    settle(conn, 0.2)
    ctx.log("a got", [g["body"] for g in a.seen()], "b got", [g["body"] for g in b.seen()])
    cha.basic_cancel(a.tag)
    for i in range(4, 6):
        publish(ch, "", q, f"m{i}".encode())
    b.wait(conn, 2)
    settle(conn, 0.2)
    ctx.log("after cancel: b got", [g["body"] for g in b.seen()])
    ctx.log("declare-ok", summarise(ch.queue_declare(q, passive=True)))
