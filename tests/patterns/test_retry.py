"""x-retry-delays (Ferry): a message rejected without requeue comes back to the same queue
after the next delay with x-retry-count; after the last delay it is dead-lettered."""
import time

import pika.exceptions as px
import pytest

from helpers import wait_count

pytestmark = pytest.mark.ferry_only


def declare_topology(ch, name, delays):
    q, dlq = name("work"), name("dlq")
    ch.queue_declare(dlq)
    ch.queue_declare(q, arguments={"x-retry-delays": delays, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": dlq})
    return q, dlq


def get_when_ready(ch, q, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m, p, b = ch.basic_get(q)
        if m:
            return m, p, b, time.monotonic()
        time.sleep(0.005)
    return None, None, None, None


def test_rejected_message_comes_back_after_each_delay_with_x_retry_count(ch, name):
    q, dlq = declare_topology(ch, name, [200, 400])
    ch.basic_publish("", q, b"job")
    m, p, _, _ = get_when_ready(ch, q)
    assert not (p.headers or {}).get("x-retry-count")
    t0 = time.monotonic()
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b, t1 = get_when_ready(ch, q)
    assert b == b"job" and p.headers["x-retry-count"] == 1 and 0.19 <= t1 - t0 < 0.4
    ch.basic_nack(m.delivery_tag, requeue=False)
    m, p, b, t2 = get_when_ready(ch, q)
    assert p.headers["x-retry-count"] == 2 and 0.39 <= t2 - t1 < 0.65
    ch.basic_ack(m.delivery_tag)
    assert wait_count(ch, dlq, 0, timeout=0.2) == 0


def test_after_the_last_delay_the_message_is_dead_lettered_with_x_death(ch, name):
    q, dlq = declare_topology(ch, name, [50])
    ch.basic_publish("", q, b"doomed")
    for _ in range(2):
        m, _, _, _ = get_when_ready(ch, q)
        ch.basic_reject(m.delivery_tag, requeue=False)
    assert wait_count(ch, dlq, 1) == 1
    _, p, b = ch.basic_get(dlq, auto_ack=True)
    assert b == b"doomed" and p.headers["x-retry-count"] == 1
    assert p.headers["x-death"][0]["reason"] == "rejected" and p.headers["x-death"][0]["queue"] == q


def test_waiting_retries_are_not_in_the_queue_meanwhile(ch, name):
    q, _ = declare_topology(ch, name, [300])
    ch.basic_publish("", q, b"job")
    m, _, _, _ = get_when_ready(ch, q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    assert wait_count(ch, q, 1) == 1


def test_bad_x_retry_delays_is_refused(ch, name):
    with pytest.raises(px.ChannelClosedByBroker) as e:
        ch.queue_declare(name("q"), arguments={"x-retry-delays": [100, -5]})
    assert e.value.reply_code == 406 and "x-retry-delays" in e.value.reply_text
