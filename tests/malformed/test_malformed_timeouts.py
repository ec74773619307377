"""Clients that go quiet: the handshake timeout and missed heartbeats.

RabbitMQ 3.10.8 behaviour, measured: a connection that has not completed the handshake is
closed 10 s after it was accepted (handshake_timeout = 10000 ms), whatever it sent; with
heartbeat = 1 s the broker sends a heartbeat every 0.5 s and closes the socket of a silent
client about 3 s after the last thing it received, without a connection.close
(log: "missed heartbeats from client, timeout: 1s").
"""
import time

import pytest

import rawamqp as amqp
from malformed_checks import assert_broker_serves, assert_dropped_silently

# RabbitMQ's default handshake_timeout, which ferryd keeps.
HANDSHAKE_TIMEOUT = 10.0


def seconds_until_eof(conn, limit):
    """Reads (and drops) everything until the socket closes; the seconds that took."""
    t0 = time.monotonic()
    assert conn.wait_eof(limit), f"socket still open after {limit}s"
    return time.monotonic() - t0


@pytest.mark.slow
def test_incomplete_handshake_is_dropped_after_the_handshake_timeout(broker):
    # Three clients, all silent: one sent nothing, one half a protocol header, one the full
    # header (and got connection.start). All are dropped after handshake_timeout (10 s),
    # not before.
    t0 = time.monotonic()
    nothing = amqp.Connection(broker.host, broker.port)
    partial = amqp.Connection(broker.host, broker.port)
    partial.send(b"AMQP\x00")
    header = amqp.Connection(broker.host, broker.port)
    header.send_header()
    header.read_start()
    try:
        deadline = HANDSHAKE_TIMEOUT + 3.0
        for name, conn in (("nothing", nothing), ("partial header", partial), ("header", header)):
            assert conn.wait_eof(max(0.1, deadline - (time.monotonic() - t0))), \
                f"client that sent {name} still connected after {deadline}s"
            elapsed = time.monotonic() - t0
            assert elapsed >= HANDSHAKE_TIMEOUT - 1.0, f"client that sent {name} dropped after {elapsed:.1f}s"
    finally:
        for conn in (nothing, partial, header):
            conn.close()
    assert_broker_serves(broker)


@pytest.mark.ferry_only
def test_handshake_timeout_is_configurable(ferryd_factory, tmp_path):
    # ferryd's --config file takes RabbitMQ's key: handshake_timeout = <milliseconds>.
    conf = tmp_path / "ferryd.conf"
    conf.write_text("handshake_timeout = 1000\n")
    d = ferryd_factory("--config", str(conf))
    with amqp.Connection(d.host, d.port) as conn:
        conn.send_header()
        conn.read_start()
        elapsed = seconds_until_eof(conn, 4.0)
        assert 0.8 <= elapsed <= 3.0, f"dropped after {elapsed:.1f}s with handshake_timeout = 1 s"
    assert_broker_serves(d)


def test_broker_sends_heartbeats_at_the_negotiated_interval(raw):
    raw.handshake(heartbeat=1)
    t0 = time.monotonic()
    f = raw.recv_frame(1.5, skip_heartbeats=False)
    assert (f.type, f.channel, f.payload) == (amqp.FRAME_HEARTBEAT, 0, b""), f
    assert time.monotonic() - t0 <= 1.5


def test_client_that_stops_sending_heartbeats_is_disconnected(broker, raw):
    # heartbeat = 1 s, then silence. RabbitMQ closes the socket after ~3 s, no close method.
    raw.handshake(heartbeat=1)
    t0 = time.monotonic()
    assert_dropped_silently(raw, within=5.0)
    elapsed = time.monotonic() - t0
    # Two missed intervals is the spec's minimum before giving up on a peer.
    assert elapsed >= 1.5, f"disconnected after only {elapsed:.1f}s with heartbeat = 1 s"
    assert_broker_serves(broker)


def test_client_that_keeps_sending_heartbeats_stays_connected(raw):
    raw.handshake(heartbeat=1)
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        raw.send(amqp.heartbeat_frame())
        try:
            f = raw.recv_frame(0.4, skip_heartbeats=True)
            raise AssertionError(f"unexpected frame while idle: {f!r}")
        except TimeoutError:
            pass
    raw.open_channel(1)


def test_heartbeat_zero_disables_the_missed_heartbeat_check(raw):
    # With heartbeat = 0 negotiated a silent client is not dropped (and gets no heartbeats).
    raw.handshake(heartbeat=0)
    try:
        f = raw.recv_frame(3.5, skip_heartbeats=False)
        raise AssertionError(f"broker sent {f!r} on an idle connection without heartbeats")
    except TimeoutError:
        pass
    raw.open_channel(1)
