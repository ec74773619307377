"""Issue 8, item 4: a content header must not make ferryd hold the body size it declares.

A content header is 30 bytes that may declare a body of up to max_message_size (RabbitMQ's
default 128 MiB). ferryd grows the body as body frames arrive, so a client that declares
large bodies and never sends them costs ferryd only what it sent; a declared size above
the limit is refused with RabbitMQ's 406.
"""
import struct
import time

import pytest

import rawamqp as amqp
from hostile_util import proc_status

MiB = 1 << 20
MAX_MESSAGE_SIZE = 128 * MiB  # RabbitMQ's default max_message_size, also ferryd's
CONFIRM_SELECT = (85, 10)
CONFIRM_SELECT_OK = (85, 11)
CONNECTION_BLOCKED = (10, 60)


def publish(conn, channel, routing_key, body_size, body=None):
    conn.send(amqp.method_frame(channel, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", routing_key)))
    conn.send(amqp.header_frame(channel, body_size))
    if body is not None:
        conn.send(amqp.body_frame(channel, body))


def declare(conn, channel, name):
    conn.send(amqp.method_frame(channel, amqp.QUEUE_DECLARE, amqp.queue_declare_args(name)))
    return conn.expect(amqp.QUEUE_DECLARE_OK, timeout=30)


def wait_acks(conn, channel, upto, timeout=20.0):
    """Reads basic.ack frames until delivery tag `upto` is confirmed; fails on anything
    else (a nack, connection.blocked, a close)."""
    deadline = time.monotonic() + timeout
    while True:
        f = conn.recv_frame(max(0.1, deadline - time.monotonic()))
        assert f.method == amqp.BASIC_ACK and f.channel == channel, f
        tag, = struct.unpack(">Q", f.payload[4:12])
        if tag >= upto:
            return


def test_declared_body_sizes_are_not_allocated_before_the_body_arrives(ferryd_factory):
    d = ferryd_factory("--memory-high-watermark", str(1 << 30))
    pid = d.proc.pid
    greedy = amqp.Connection(d.host, d.port, timeout=30)
    greedy.handshake()
    for ch in range(1, 82):
        greedy.open_channel(ch)
    before = proc_status(pid)
    # 80 publishes whose header declares 128 MiB each (10 GiB in all), no body sent.
    for ch in range(1, 81):
        publish(greedy, ch, "nowhere", MAX_MESSAGE_SIZE)
    try:
        declare(greedy, 81, "")  # answered after the 80 headers were handled
        synced = True
    except TimeoutError:
        synced = False
    time.sleep(1.5)  # let a tick run (alarms are evaluated per batch and per tick)
    after = proc_status(pid)
    grown_size = (after["VmSize"] - before["VmSize"]) * 1024
    grown_rss = (after["VmRSS"] - before["VmRSS"]) * 1024
    print(f"80 headers x 128 MiB: VmSize +{grown_size // 1024} KiB, VmRSS +{grown_rss // 1024} KiB")
    assert grown_size < 256 * MiB, f"address space grew by {grown_size // MiB} MiB for 80 headers"
    assert grown_rss < 64 * MiB, f"RSS grew by {grown_rss // MiB} MiB for 80 headers"
    assert synced, "ferryd stopped reading the connection that sent the 80 headers"

    # Another publisher is not blocked: its confirms arrive, no connection.blocked.
    other = amqp.Connection(d.host, d.port, timeout=30)
    other.send_header()
    other.read_start()
    other.send(amqp.method_frame(0, amqp.CONNECTION_START_OK, amqp.start_ok_args(client_properties={
        "capabilities": {"connection.blocked": True}})))
    other.read_tune()
    other.send_tune_ok()
    other.send_open()
    other.expect(amqp.CONNECTION_OPEN_OK)
    other.open_channel(1)
    q = declare(other, 1, "").args["queue"]
    other.send(amqp.method_frame(1, CONFIRM_SELECT, amqp.bits(False)))
    other.expect(CONFIRM_SELECT_OK)
    for _ in range(3):
        publish(other, 1, q, 5, b"hello")
    wait_acks(other, 1, 3)

    # The greedy channels still work: each completes its message once the body arrives
    # (sent here for one of them, in frames, to check the body grows correctly).
    frame_max = greedy.tune.args["frame_max"]
    chunk = bytes(range(256)) * ((frame_max - 8) // 256)
    left = MAX_MESSAGE_SIZE
    while left:
        n = min(len(chunk), left)
        greedy.send(amqp.body_frame(1, chunk[:n]))
        left -= n
    greedy.send(amqp.method_frame(1, amqp.BASIC_GET, amqp.basic_get_args("nowhere")))
    close = greedy.read_close(timeout=60)  # "nowhere" does not exist: the publish completed
    assert (close.level, close.channel, close.code) == ("channel", 1, amqp.NOT_FOUND), close
    greedy.close()
    other.close()


def test_body_round_trips_through_many_frames(raw):
    """The body grown frame by frame is delivered byte for byte."""
    c = raw()
    c.open_channel(1)
    q = declare(c, 1, "").args["queue"]
    body = bytes((i * 7 + 3) & 0xFF for i in range(3 * MiB + 17))
    frame_max = c.tune.args["frame_max"]
    publish(c, 1, q, len(body))
    for i in range(0, len(body), frame_max - 8):
        c.send(amqp.body_frame(1, body[i:i + frame_max - 8]))
    c.send(amqp.method_frame(1, amqp.BASIC_GET, amqp.basic_get_args(q)))
    c.expect(amqp.BASIC_GET_OK, timeout=30)
    hdr = c.recv_frame(30)
    assert hdr.type == amqp.FRAME_HEADER
    assert struct.unpack(">Q", hdr.payload[4:12])[0] == len(body)
    got = b""
    while len(got) < len(body):
        f = c.recv_frame(30)
        assert f.type == amqp.FRAME_BODY
        got += f.payload
    assert got == body


@pytest.mark.ferry_only
def test_declared_size_above_max_message_size_is_refused_with_406(raw):
    """RabbitMQ 3.10 sends this same 406 once the whole body is in; ferryd already at the
    header (nothing of the body has to be taken in first)."""
    c = raw()
    c.open_channel(1)
    publish(c, 1, "nowhere", MAX_MESSAGE_SIZE + 1)
    close = c.read_close(timeout=10)
    assert close.level == "channel" and close.channel == 1, close
    assert close.code == amqp.PRECONDITION_FAILED, close
    assert close.text == ("PRECONDITION_FAILED - message size 134217729 is larger than configured max "
                          "size 134217728"), close
    assert (close.class_id, close.method_id) == amqp.BASIC_PUBLISH, close
