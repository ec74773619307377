"""Limits with RabbitMQ's defaults and RabbitMQ's answers when a client goes over them:
connections per node (--max-connections), channels per connection (channel_max), frame size
(frame_max)."""
import pytest
import rawamqp as R
from rawclient import open_conn

pytestmark = pytest.mark.ferry_only


def test_connections_over_max_connections_are_refused_at_open_as_rabbitmq_does(ferryd_factory):
    d = ferryd_factory("--max-connections", "3")
    conns = [open_conn(d.host, d.port) for _ in range(3)]
    extra = R.Connection(d.host, d.port)
    extra.send_header()
    extra.read_start()
    extra.send_start_ok()
    extra.read_tune()
    extra.send_tune_ok()
    extra.send_open()
    close = extra.read_close()
    assert (close.level, close.code) == ("connection", R.NOT_ALLOWED)
    assert close.text == "NOT_ALLOWED - connection refused: node connection limit (3) is reached"
    assert (close.class_id, close.method_id) == R.CONNECTION_OPEN
    extra.close()
    conns.pop().close()  # a place is free again
    for _ in range(50):
        try:
            again = open_conn(d.host, d.port)
            break
        except AssertionError:  # the closed one may not be gone yet
            import time
            time.sleep(0.1)
    else:
        pytest.fail("no connection accepted after one of the three closed")
    again.close()
    for c in conns:
        c.close()


def test_tune_proposes_rabbitmq_defaults(broker):
    c = R.Connection(broker.host, broker.port)
    c.send_header()
    c.read_start()
    c.send_start_ok()
    t = c.read_tune().args
    assert (t["channel_max"], t["frame_max"]) == (2047, 131072)
    c.close()


def test_opening_more_channels_than_negotiated_channel_max_is_530(broker):
    c = R.Connection(broker.host, broker.port)
    c.handshake(channel_max=3)
    for ch in (1, 2, 3):
        c.open_channel(ch)
    c.send(R.method_frame(4, R.CHANNEL_OPEN, R.channel_open_args()))
    close = c.read_close()
    assert (close.level, close.code) == ("connection", R.NOT_ALLOWED)
    assert "number of channels opened (3) has reached the negotiated channel_max (3)" in close.text
    c.close()
