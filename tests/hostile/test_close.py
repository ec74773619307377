"""Closing a connection: after close-ok for a client's connection.close, ferryd keeps
reading (and dropping) what the client still sends until the client closes, so publishes in
flight never turn into a TCP reset that destroys the close-ok before the client reads it
(issue 8 item 8); and a closing connection whose peer never reads is still freed after a
timeout (item 9)."""
import os
import socket
import time

import pytest
import rawamqp as R
from rawclient import declare, open_conn, publish_bytes

pytestmark = pytest.mark.ferry_only
BASIC_CONSUME = (60, 20)


def test_client_close_with_publishes_in_flight_reads_close_ok(ferryd_factory):
    d = ferryd_factory()
    for attempt in range(3):
        c = open_conn(d.host, d.port)
        declare(c, "close-inflight")
        burst = b"".join(publish_bytes("close-inflight", b"p" * 1000) for _ in range(500))
        close = R.method_frame(0, R.CONNECTION_CLOSE, R.connection_close_args(200, "bye"))
        # Publishes, the close, and 4 MB more publishes that reach ferryd after its close-ok
        # (a client library writing from its buffer): ferryd must not answer them with a
        # reset, which a client sees as an error instead of its close completing.
        try:
            c.sock.sendall(burst + close)
            time.sleep(0.5)  # ferryd has sent close-ok by now; the client's writes go on
            for _ in range(8):
                c.sock.sendall(burst)
                time.sleep(0.05)
        except OSError as e:
            pytest.fail(f"attempt {attempt}: the connection was reset while the client was sending: {e!r}")
        try:
            f = R.Frame(0, 0, b"")
            while f.method != R.CONNECTION_CLOSE_OK:
                f = c.recv_frame(20)
        except R.Closed:
            pytest.fail(f"attempt {attempt}: the connection was reset or closed before close-ok was read")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.wait_eof(10), "ferryd did not close the socket after the client did"
        c.close()


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_closing_connection_whose_peer_never_reads_is_freed(ferryd_factory):
    d = ferryd_factory()
    c = open_conn(d.host, d.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    declare(c, "close-noread")
    body = b"n" * 100_000
    for _ in range(120):  # 12 MB queued, more than the socket buffers take
        c.send(publish_bytes("close-noread", body))
    c.send(R.method_frame(1, BASIC_CONSUME, R.short(0) + R.shortstr("close-noread") + R.shortstr("") +
                          R.bits(False, True, False, False) + R.table({})))
    time.sleep(1)  # deliveries fill ferryd's output buffer: this client never reads
    before = fd_count(d.proc.pid)
    # The client closes but reads nothing: the close-ok ferryd owes it waits behind output
    # that is never written.
    c.send(R.method_frame(0, R.CONNECTION_CLOSE, R.connection_close_args(200, "bye")))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and fd_count(d.proc.pid) >= before:
        time.sleep(0.25)
    assert fd_count(d.proc.pid) < before, "a closing connection whose peer never reads was never freed"
    c.close()
