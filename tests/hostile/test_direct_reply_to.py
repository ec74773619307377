"""Direct reply-to under hostile conditions (issue 8).

Item 5: replies to a requester that does not read its socket cannot grow ferryd without
bound. Direct reply-to is at-most-once (RabbitMQ: "fire and forget"): a reply the
requester's connection cannot take now (its output buffer is past the 4 MiB high-water
mark that also holds back consumer deliveries) is dropped, or returned to the replier
(312 NO_ROUTE) if published mandatory, as a reply to a requester that has gone is.
Item 16: a request sent with reply-to amq.rabbitmq.reply-to keeps its delivery mode,
expiration and priority (ferryd rewrites the reply-to property; nothing else may change)."""
import struct
import time

import pika
import pytest

import rawamqp as amqp
from hostile_util import proc_status

REPLY_TO = "amq.rabbitmq.reply-to"


def connect(b):
    return pika.BlockingConnection(pika.ConnectionParameters(host=b.host, port=b.port, blocked_connection_timeout=60))


def requester(conn):
    """A channel consuming from the reply-to pseudo-queue (required to send requests)."""
    ch = conn.channel()
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    return ch


def test_confirmed_persistent_request_survives_a_crash(ferryd_factory):
    d = ferryd_factory()
    conn = connect(d)
    ch = requester(conn)
    ch.queue_declare("requests", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "requests", b"request-1",
                     pika.BasicProperties(reply_to=REPLY_TO, delivery_mode=2))  # raises unless acked
    d.kill9()
    d2 = ferryd_factory(data_dir=d.data_dir)
    conn2 = connect(d2)
    method, props, body = conn2.channel().basic_get("requests", auto_ack=True)
    assert body == b"request-1", "a confirmed persistent request was lost in the crash"
    assert props.delivery_mode == 2
    assert props.reply_to.startswith(REPLY_TO + ".")
    conn2.close()


def test_request_expiration_is_honoured(conn_b):
    conn, q = conn_b
    ch = requester(conn)
    ch.basic_publish("", q, b"stale", pika.BasicProperties(reply_to=REPLY_TO, expiration="50"))
    ch.basic_publish("", q, b"fresh", pika.BasicProperties(reply_to=REPLY_TO))
    time.sleep(0.5)
    method, props, body = ch.basic_get(q, auto_ack=True)
    assert body == b"fresh", "a request past its expiration was delivered"


def test_request_priority_is_honoured(conn_b):
    conn, _ = conn_b
    ch = requester(conn)
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-priority": 10}).method.queue
    ch.basic_publish("", q, b"low", pika.BasicProperties(reply_to=REPLY_TO, priority=1))
    ch.basic_publish("", q, b"high", pika.BasicProperties(reply_to=REPLY_TO, priority=9))
    bodies = [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)]
    assert bodies == [b"high", b"low"]


MiB = 1 << 20
REPLY_TO_FLAG = 1 << 9  # the reply-to property's bit in the content header's flags
BASIC_CONSUME = (60, 20)
BASIC_CONSUME_OK = (60, 21)
BASIC_DELIVER = (60, 60)


def raw_requester(d):
    """A raw-socket requester: consumes from the reply-to pseudo-queue, sends one request
    to `requests` and from then on reads nothing (the test reads later)."""
    c = amqp.Connection(d.host, d.port, timeout=30)
    c.handshake()
    c.open_channel(1)
    c.send(amqp.method_frame(1, BASIC_CONSUME, amqp.short(0) + amqp.shortstr(REPLY_TO) + amqp.shortstr("") +
                             amqp.bits(False, True, False, False) + amqp.table({})))
    c.expect(BASIC_CONSUME_OK)
    c.send(amqp.method_frame(1, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", "requests")) +
           amqp.header_frame(1, 3, flags=REPLY_TO_FLAG, props=amqp.shortstr(REPLY_TO)) + amqp.body_frame(1, b"req"))
    return c


def test_replies_to_a_requester_that_does_not_read_are_bounded(ferryd_factory):
    # A small ASan quarantine, so that freed reply bodies are reused and RSS shows what
    # ferryd holds (the release build needs nothing).
    d = ferryd_factory(env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=8"})
    replier_conn = connect(d)
    replier = replier_conn.channel()
    replier.queue_declare("requests")
    requester = raw_requester(d)
    deadline = time.monotonic() + 20
    request = None
    while request is None and time.monotonic() < deadline:
        request = replier.basic_get("requests", auto_ack=True)[1]
    assert request is not None, "the request did not arrive"
    key = request.reply_to
    assert key.startswith(REPLY_TO + ".")
    before = proc_status(d.proc.pid)["VmRSS"] * 1024
    reply = b"r" * MiB
    peak = before
    for i in range(200):
        replier.basic_publish("", key, reply)
        if i % 10 == 9:
            replier.queue_declare("requests", passive=True)  # a round trip: ferryd handled them
            peak = max(peak, proc_status(d.proc.pid)["VmRSS"] * 1024)
    grown = peak - before
    print(f"200 x 1 MiB unread replies: ferryd RSS +{grown // 1024} KiB")
    # Bound: the 4 MiB high-water mark, one reply past it, and allocator slack.
    assert grown < 48 * MiB, f"ferryd RSS grew by {grown // MiB} MiB for 200 x 1 MiB unread replies"

    # The replier keeps working, and a mandatory reply that cannot be taken comes back.
    replier.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as returned:
        replier.basic_publish("", key, reply, mandatory=True)
    assert [m.method.reply_code for m in returned.value.messages] == [312]

    # The requester reads at last: complete replies, then its connection still works.
    frames = 0
    delivered = 0
    while True:
        try:
            f = requester.recv_frame(timeout=2)
        except TimeoutError:
            break
        frames += 1
        if f.method == BASIC_DELIVER:
            delivered += 1
    assert 1 <= delivered < 200, delivered
    requester.send(amqp.method_frame(1, amqp.QUEUE_DECLARE, amqp.queue_declare_args("requests", passive=True)))
    requester.expect(amqp.QUEUE_DECLARE_OK)
    requester.close()
    replier_conn.close()
