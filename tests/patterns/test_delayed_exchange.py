"""x-delayed-message: messages with x-delay wait that long, then are routed by the
x-delayed-type, as the rabbitmq-delayed-message-exchange plugin documents."""
import time

import pika
import pika.exceptions as px
import pytest

from helpers import drain

pytestmark = pytest.mark.ferry_only  # the plugin is not installed in the RabbitMQ used for checks


def declare_topology(ch, name, kind="direct"):
    x, q = name("dx"), name("q")
    ch.exchange_declare(x, "x-delayed-message", arguments={"x-delayed-type": kind})
    ch.queue_declare(q)
    ch.queue_bind(q, x, "k" if kind != "topic" else "k.*")
    return x, q


def test_message_with_x_delay_arrives_after_the_delay(conn, ch, name):
    x, q = declare_topology(ch, name)
    t0 = time.time()
    ch.basic_publish(x, "k", b"later", pika.BasicProperties(headers={"x-delay": 500}))
    got = drain(conn, ch, q, 1, timeout=3)
    assert len(got) == 1
    assert 0.5 <= got[0][3] - t0 < 0.8


def test_shorter_delay_published_later_arrives_first(conn, ch, name):
    x, q = declare_topology(ch, name)
    ch.basic_publish(x, "k", b"slow", pika.BasicProperties(headers={"x-delay": 600}))
    ch.basic_publish(x, "k", b"fast", pika.BasicProperties(headers={"x-delay": 200}))
    got = drain(conn, ch, q, 2, timeout=3)
    assert [g[2] for g in got] == [b"fast", b"slow"]


def test_message_without_x_delay_is_routed_at_once(conn, ch, name):
    x, q = declare_topology(ch, name)
    t0 = time.time()
    ch.basic_publish(x, "k", b"now")
    got = drain(conn, ch, q, 1, timeout=2)
    assert got and got[0][3] - t0 < 0.2


def test_delivered_message_carries_the_delay_negated(conn, ch, name):
    x, q = declare_topology(ch, name)
    ch.basic_publish(x, "k", b"m", pika.BasicProperties(headers={"x-delay": 100, "a": "b"}))
    got = drain(conn, ch, q, 1, timeout=2)
    assert got[0][1].headers == {"x-delay": -100, "a": "b"}


def test_delayed_messages_are_routed_by_the_delayed_type(conn, ch, name):
    x, q = declare_topology(ch, name, kind="topic")
    ch.basic_publish(x, "k.yes", b"match", pika.BasicProperties(headers={"x-delay": 100}))
    ch.basic_publish(x, "other", b"no-match", pika.BasicProperties(headers={"x-delay": 100}))
    got = drain(conn, ch, q, 2, timeout=1)
    assert [g[2] for g in got] == [b"match"]


def test_x_delayed_type_is_required(ch, name):
    with pytest.raises(px.ChannelClosedByBroker) as e:
        ch.exchange_declare(name("dx"), "x-delayed-message")
    assert e.value.reply_code == 406 and "x-delayed-type" in e.value.reply_text


def test_mandatory_delayed_publish_is_returned_as_the_plugin_does(conn, ch, name):
    x, q = declare_topology(ch, name)
    ch.confirm_delivery()
    with pytest.raises(px.UnroutableError):
        ch.basic_publish(x, "k", b"m", pika.BasicProperties(headers={"x-delay": 100}), mandatory=True)
    assert len(drain(conn, ch, q, 1, timeout=1)) == 1  # and it is still delivered when due


def test_pending_messages_of_a_deleted_exchange_are_dropped(conn, ch, name):
    x, q = declare_topology(ch, name)
    ch.basic_publish(x, "k", b"m", pika.BasicProperties(headers={"x-delay": 200}))
    ch.exchange_delete(x)
    assert drain(conn, ch, q, 1, timeout=0.6) == []
