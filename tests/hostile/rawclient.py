"""Raw AMQP client steps the hostile tests share (on top of tests/malformed/rawamqp.py):
a handshake that announces connection.blocked, publishes, and polling for frames."""
import socket
import time

import rawamqp as R

BASIC_PUBLISH = R.BASIC_PUBLISH
CONNECTION_BLOCKED = (10, 60)
CONNECTION_UNBLOCKED = (10, 61)
QUEUE_PURGE = (50, 30)
QUEUE_PURGE_OK = (50, 31)


def open_conn(host, port, heartbeat=0, blocked_cap=True, timeout=10.0):
    """A raw connection through connection.open-ok with channel 1 open."""
    c = R.Connection(host, port, timeout=timeout)
    c.send_header()
    c.read_start()
    caps = {"authentication_failure_close": True, "connection.blocked": blocked_cap}
    c.send_start_ok(client_properties={"product": "ferry-hostile-tests", "capabilities": caps})
    c.read_tune()
    c.send_tune_ok(heartbeat=heartbeat)
    c.send_open()
    c.expect(R.CONNECTION_OPEN_OK, timeout)
    c.open_channel(1)
    return c


def publish_bytes(queue, body, channel=1, exchange=""):
    """One basic.publish with its header and body frames (body fits one frame)."""
    return (R.method_frame(channel, R.BASIC_PUBLISH, R.basic_publish_args(exchange, queue)) +
            R.header_frame(channel, len(body)) +
            (R.body_frame(channel, body) if body else b""))


def expect(c, method, timeout=10.0):
    """Like Connection.expect, but skips connection.blocked/unblocked notifications, which
    any connection that announced the capability may get at any time."""
    deadline = time.monotonic() + timeout
    while True:
        f = c.recv_frame(max(0.0, deadline - time.monotonic()))
        if f.method in (CONNECTION_BLOCKED, CONNECTION_UNBLOCKED):
            continue
        if f.method != method:
            raise AssertionError(f"expected {method}, got {f!r}")
        return f


def declare(c, name, channel=1, **kw):
    c.send(R.method_frame(channel, R.QUEUE_DECLARE, R.queue_declare_args(name, **kw)))
    return expect(c, R.QUEUE_DECLARE_OK)


def purge(c, name, channel=1):
    c.send(R.method_frame(channel, QUEUE_PURGE, R.short(0) + R.shortstr(name) + R.bits(False)))
    return expect(c, QUEUE_PURGE_OK)


def wait_method(c, method, timeout):
    """Reads frames (skipping others) until one carries method; None on timeout. Raises
    rawamqp.Closed if the server closes the socket."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            f = c.recv_frame(left)
        except TimeoutError:
            return None
        if f.method == method:
            return f


def is_open(c, timeout=0.2):
    """True unless the server has closed (FIN or RST) this connection; keeps what it read."""
    c.sock.settimeout(timeout)
    try:
        chunk = c.sock.recv(65536, socket.MSG_PEEK)
    except socket.timeout:
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False
    return bool(chunk)
