"""Poison messages: quorum queues count returns in x-delivery-count and dead-letter a
message returned more than x-delivery-limit times (reason delivery_limit), counting
returns caused by a consumer's channel closing as well as nacks."""
import time

import pytest

from helpers import wait_count


def declare(ch, name, limit=None):
    src, dlq = name("src"), name("dlq")
    ch.queue_declare(dlq, durable=True)
    args = {"x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
    if limit is not None:
        args["x-delivery-limit"] = limit
    ch.queue_declare(src, durable=True, arguments=args)
    return src, dlq


def test_quorum_delivery_carries_x_delivery_count_of_previous_returns(ch, name):
    src, dlq = declare(ch, name, limit=5)
    ch.basic_publish("", src, b"m", )
    wait_count(ch, src, 1)
    m, p, _ = ch.basic_get(src)
    assert p.headers["x-delivery-count"] == 0 and not m.redelivered
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, p, _ = ch.basic_get(src)
    assert p.headers["x-delivery-count"] == 1 and m.redelivered
    ch.basic_ack(m.delivery_tag)
    ch.queue_delete(src), ch.queue_delete(dlq)


def test_message_returned_past_delivery_limit_is_dead_lettered_with_reason_delivery_limit(ch, name):
    src, dlq = declare(ch, name, limit=2)
    ch.basic_publish("", src, b"poison")
    wait_count(ch, src, 1)
    for expected in (0, 1, 2):
        m, p, _ = ch.basic_get(src)
        assert p.headers["x-delivery-count"] == expected
        ch.basic_nack(m.delivery_tag, requeue=True)
    assert wait_count(ch, src, 0) == 0
    assert wait_count(ch, dlq, 1) == 1
    m, p, body = ch.basic_get(dlq, auto_ack=True)
    assert body == b"poison"
    death = p.headers["x-death"][0]
    assert death["reason"] == "delivery_limit" and death["queue"] == src and death["count"] == 1
    assert p.headers["x-first-death-reason"] == "delivery_limit"
    ch.queue_delete(src), ch.queue_delete(dlq)


def test_consumer_channel_closing_counts_towards_delivery_limit(conn, ch, name):
    src, dlq = declare(ch, name, limit=1)
    ch.basic_publish("", src, b"crashy")
    wait_count(ch, src, 1)
    for _ in range(2):  # two consumers "crash" holding the message
        c2 = conn.channel()
        m, p, _ = c2.basic_get(src)
        assert m is not None
        c2.close()
    assert wait_count(ch, dlq, 1) == 1
    _, p, _ = ch.basic_get(dlq, auto_ack=True)
    assert p.headers["x-death"][0]["reason"] == "delivery_limit"
    ch.queue_delete(src), ch.queue_delete(dlq)


@pytest.mark.ferry_only  # RabbitMQ 4's default; the RabbitMQ 3.10 used for checks has none
def test_quorum_queue_default_delivery_limit_is_20(ch, name):
    src, dlq = declare(ch, name)
    ch.basic_publish("", src, b"m")
    wait_count(ch, src, 1)
    for i in range(21):
        m, p, _ = ch.basic_get(src)
        assert m is not None and p.headers["x-delivery-count"] == i
        ch.basic_nack(m.delivery_tag, requeue=True)
    time.sleep(0.05)
    assert wait_count(ch, dlq, 1) == 1
    ch.queue_delete(src), ch.queue_delete(dlq)
