"""Assertions shared by the malformed-input tests: what the broker answered, and that it
still serves a well-behaved client afterwards."""
import time
import uuid

import rawamqp as amqp

# RabbitMQ waits 3 s (SILENT_CLOSE_DELAY) before closing the socket after a fatal frame error
# or a handshake error; a broker may close sooner, never later than this.
CLOSE_WITHIN = 6.0


def assert_connection_close(conn, code, text=None, text_prefix=None, class_id=0, method_id=0,
                            timeout=5.0):
    """The broker answered with connection.close (on channel 0) carrying exactly this reply;
    after our close-ok it closes the socket."""
    try:
        close = conn.read_close(timeout)
    except amqp.Closed:
        raise AssertionError(f"broker closed the socket without connection.close (expected {code})")
    except TimeoutError:
        raise AssertionError(f"no connection.close within {timeout}s (expected {code})")
    assert close.level == "connection", f"expected connection.close {code}, got {close!r}"
    assert close.channel == 0, close
    assert close.code == code, close
    if text is not None:
        assert close.text == text, close
    if text_prefix is not None:
        assert close.text.startswith(text_prefix), close
    assert (close.class_id, close.method_id) == (class_id, method_id), close
    assert conn.wait_eof(CLOSE_WITHIN), "broker kept the socket open after connection.close/close-ok"
    return close


def assert_dropped_silently(conn, within=CLOSE_WITHIN):
    """The broker closed the socket without sending anything but heartbeats first: what the
    spec asks for errors before the connection is open, and what RabbitMQ does."""
    deadline = time.monotonic() + within
    try:
        while True:
            f = conn.recv_frame(max(0.0, deadline - time.monotonic()))
            raise AssertionError(f"expected the socket to close without a reply, got {f!r}")
    except amqp.Closed:
        return
    except TimeoutError:
        raise AssertionError(f"broker did not close the socket within {within}s")


def assert_connection_dropped(conn, allowed_close, timeout=CLOSE_WITHIN):
    """For inputs where RabbitMQ's answer is a crash artefact (its connection process dies
    and the socket just closes): the connection must end, either like RabbitMQ's (socket
    closed, no reply) or with the clearer connection.close given as
    allowed_close = (code, class_id, method_id)."""
    try:
        close = conn.read_close(timeout)
    except amqp.Closed:
        return None
    except TimeoutError:
        raise AssertionError(f"broker neither answered nor closed the connection within {timeout}s")
    assert close.level == "connection", f"expected the connection to end, got {close!r}"
    assert (close.code, close.class_id, close.method_id) == allowed_close, close
    assert conn.wait_eof(CLOSE_WITHIN), "broker kept the socket open after connection.close/close-ok"
    return close


def declare_queue(conn, channel=1, name="", **kw):
    conn.send(amqp.method_frame(channel, amqp.QUEUE_DECLARE, amqp.queue_declare_args(name, **kw)))
    return conn.expect(amqp.QUEUE_DECLARE_OK).args


def publish(conn, channel, queue, body, frame_bodies=None):
    """basic.publish to the default exchange; frame_bodies splits the body into frames."""
    parts = frame_bodies if frame_bodies is not None else [body]
    data = (amqp.method_frame(channel, amqp.BASIC_PUBLISH, amqp.basic_publish_args("", queue))
            + amqp.header_frame(channel, len(body)))
    for p in parts:
        data += amqp.body_frame(channel, p)
    conn.send(data)


def get_message(conn, channel, queue):
    """basic.get (no-ack); returns (get-ok args, body) or None for get-empty."""
    conn.send(amqp.method_frame(channel, amqp.BASIC_GET, amqp.basic_get_args(queue)))
    f = conn.recv_frame()
    if f.method == amqp.BASIC_GET_EMPTY:
        return None
    assert f.method == amqp.BASIC_GET_OK, f
    header = conn.recv_frame()
    assert header.type == amqp.FRAME_HEADER and header.channel == channel, header
    size = int.from_bytes(header.payload[4:12], "big")
    body = b""
    while len(body) < size:
        part = conn.recv_frame()
        assert part.type == amqp.FRAME_BODY and part.channel == channel, part
        body += part.payload
    return f.args, body


def close_connection(conn):
    conn.send(amqp.method_frame(0, amqp.CONNECTION_CLOSE, amqp.connection_close_args()))
    conn.expect(amqp.CONNECTION_CLOSE_OK)


def assert_broker_serves(broker):
    """A second, well-behaved client can connect, declare a queue, publish and get back."""
    with amqp.Connection(broker.host, broker.port) as conn:
        conn.handshake()
        conn.open_channel(1)
        queue = declare_queue(conn, exclusive=True)["queue"]
        body = f"still serving {uuid.uuid4()}".encode()
        publish(conn, 1, queue, body)
        got = get_message(conn, 1, queue)
        assert got is not None, "message published by the well-behaved client was not routed"
        assert got[1] == body
        close_connection(conn)


def unique(prefix="ferry.malformed"):
    return f"{prefix}.{uuid.uuid4().hex[:12]}"
