"""Shared helpers for the pika integration tests.

Every wait here is bounded: a broker that never answers fails the test, it never hangs it.
The tests assert what RabbitMQ does (that is the specification ferryd follows), so reply
codes *and* reply texts are compared exactly.
"""
import contextlib
import time
import uuid

import pika
import pytest
from pika import exceptions

TIMEOUT = 5.0  # seconds: the longest any single expected event may take


def params(broker, **kw):
    """ConnectionParameters for the broker under test; keyword arguments override defaults."""
    kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
    kw.setdefault("heartbeat", 30)
    kw.setdefault("blocked_connection_timeout", 10)
    kw.setdefault("socket_timeout", 5)
    kw.setdefault("stack_timeout", 10)
    kw.setdefault("connection_attempts", 1)
    kw.setdefault("virtual_host", "/")
    return pika.ConnectionParameters(host=broker.host, port=broker.port, **kw)


def connect(broker, **kw):
    """A BlockingConnection to the broker (heartbeat on, every wait bounded)."""
    return pika.BlockingConnection(params(broker, **kw))


def unique(prefix):
    """A name no other test (or earlier run) uses: the broker is shared by the session."""
    return f"it-{prefix}-{uuid.uuid4().hex[:12]}"


def temp_queue(ch, **arguments):
    """Declare a server-named exclusive queue (gone when the connection closes)."""
    return ch.queue_declare("", exclusive=True, arguments=arguments or None).method.queue


def roundtrip(ch):
    """One synchronous round trip on the channel without side effects.

    Asynchronous errors (a publish to a missing exchange, a bad ack) close the channel
    some time after the frame was sent; a round trip makes pika raise them here."""
    ch.exchange_declare("amq.direct", passive=True)


def pump(conn, seconds):
    """Process events on conn for `seconds` (process_data_events may return early)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        conn.process_data_events(time_limit=left)


def wait_until(cond, conns, timeout=TIMEOUT):
    """Process events on every connection in `conns` until cond() is true or the deadline
    passes; returns cond()'s last value."""
    if not isinstance(conns, (list, tuple)):
        conns = [conns]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return cond()
        for c in conns:
            c.process_data_events(time_limit=0.01 if len(conns) > 1 else 0.05)
    return True


def consume_n(conn, ch, queue, n, timeout=TIMEOUT, auto_ack=True, **kw):
    """Consume until n messages arrived (or the deadline), cancel, return [(method, props, body)].
    With auto_ack=False the messages stay unacked on `ch`."""
    got = []
    tag = ch.basic_consume(queue, lambda _c, m, p, b: got.append((m, p, b)), auto_ack=auto_ack, **kw)
    wait_until(lambda: len(got) >= n, conn, timeout)
    ch.basic_cancel(tag)
    return got


def get_all(ch, queue, limit=10000):
    """basic.get (auto-ack) until get-empty; returns [(method, props, body)]."""
    out = []
    while len(out) < limit:
        m, p, b = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return out
        out.append((m, p, b))
    raise AssertionError(f"queue {queue} still not empty after {limit} gets")


def bodies(messages):
    return [b for _m, _p, b in messages]


def depth(ch, queue):
    """Ready messages in the queue (passive queue.declare)."""
    return ch.queue_declare(queue, passive=True).method.message_count


def wait_depth(conn, ch, queue, n, timeout=TIMEOUT):
    """Wait until the queue holds exactly n ready messages; returns the last depth seen."""
    seen = [None]

    def ok():
        seen[0] = depth(ch, queue)
        return seen[0] == n

    wait_until(ok, conn, timeout)
    return seen[0]


def send_method(ch, method, content=None):
    """Send one well-formed method (and content) that pika's public API will not send,
    e.g. basic.publish with immediate=true or a second channel.open. Uses pika's own
    frame encoder, so the frames are valid AMQP."""
    ch._impl._send_method(method, content)


def rpc(conn, ch, method, replies, timeout=TIMEOUT):
    """Send a synchronous method through pika's channel RPC machinery and return the reply
    method (one of `replies`, e.g. [pika.spec.Basic.ConsumeOk])."""
    got = []
    ch._impl._rpc(method, lambda frame: got.append(frame.method), replies)
    assert wait_until(lambda: got, conn, timeout), f"no reply to {method}"
    return got[0]


def assert_channel_still_usable(conn):
    """After a channel-level error the connection stays open and serves new channels."""
    assert conn.is_open, "a channel error must not close the connection"
    c = conn.channel()
    roundtrip(c)
    c.close()


@contextlib.contextmanager
def channel_error(conn, code, text):
    """Expect the broker to close the channel with (code, text); the connection survives."""
    with pytest.raises(exceptions.ChannelClosedByBroker) as ei:
        yield ei
    assert (ei.value.reply_code, ei.value.reply_text) == (code, text)
    assert_channel_still_usable(conn)


@contextlib.contextmanager
def connection_error(conn, code, text):
    """Expect the broker to close the whole connection with (code, text)."""
    with pytest.raises(exceptions.ConnectionClosedByBroker) as ei:
        yield ei
    assert (ei.value.reply_code, ei.value.reply_text) == (code, text)
    assert conn.is_closed
