"""Messages the broker holds for later — a delayed exchange's pending messages and
x-retry-delays back-offs — are persistent messages too: once confirmed (or rejected into a
retry) they survive kill -9 and fall due after the restart."""
import time

import pika

from . import helpers
from .helpers import connect


def _get_until(d, queue, deadline):
    """basic.get (auto-ack) until a message arrives or the deadline passes."""
    conn = connect(d)
    try:
        ch = conn.channel()
        while time.monotonic() < deadline:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method:
                return props, body
            time.sleep(0.05)
        return None, None
    finally:
        conn.close()


def _depth(d, queue):
    conn = connect(d)
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def test_a_confirmed_delayed_message_survives_kill9_and_falls_due_after_restart(ferryd_factory, tmp_path):
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data)
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_declare("due", durable=True)
    ch.queue_bind("due", "later", "k")
    ch.basic_publish("later", "k", b"held", pika.BasicProperties(delivery_mode=2, headers={"x-delay": 1500}))
    published = time.monotonic()
    conn.close()
    d.kill9()
    d = helpers.start(ferryd_factory, data)
    assert _depth(d, "due") == 0, "the delayed message was routed before it fell due"
    props, body = _get_until(d, "due", published + 10)
    assert body == b"held", "the confirmed delayed message was lost across kill -9"
    assert time.monotonic() - published >= 1.4, "it fell due early"
    assert props.headers["x-delay"] == -1500
    assert "recovered 1 delayed messages" in helpers.log_since_start(d)


def test_a_transient_delayed_message_is_not_kept_across_restart(ferryd_factory, tmp_path):
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data)
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("later", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_declare("due", durable=True)
    ch.queue_bind("due", "later", "k")
    ch.basic_publish("later", "k", b"transient", pika.BasicProperties(delivery_mode=1, headers={"x-delay": 300}))
    conn.close()
    d.kill9()
    d = helpers.start(ferryd_factory, data)
    time.sleep(0.8)
    assert _depth(d, "due") == 0


def test_a_message_waiting_for_its_retry_survives_kill9_with_its_retry_count(ferryd_factory, tmp_path):
    data = str(tmp_path / "data")
    d = helpers.start(ferryd_factory, data)
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("work", durable=True, arguments={"x-retry-delays": [1000]})
    ch.basic_publish("", "work", b"job", pika.BasicProperties(delivery_mode=2))
    method, _p, _b = ch.basic_get("work")
    ch.basic_nack(method.delivery_tag, requeue=False)
    rejected = time.monotonic()
    time.sleep(0.3)  # the nack and the retry's record reach the log (group commit)
    conn.close()
    d.kill9()
    d = helpers.start(ferryd_factory, data)
    assert _depth(d, "work") == 0, "the rejected message came back before its retry delay (or twice)"
    props, body = _get_until(d, "work", rejected + 10)
    assert body == b"job", "the message waiting for its retry was lost across kill -9"
    assert props.headers["x-retry-count"] == 1
    assert _depth(d, "work") == 0, "the message came back twice"
