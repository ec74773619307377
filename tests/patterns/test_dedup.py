"""x-deduplication-window (Ferry): a message-id seen within the window is dropped, and the
publisher still gets its confirm."""
import time

import pika
import pytest

from helpers import wait_count

pytestmark = pytest.mark.ferry_only


def test_duplicate_message_id_within_the_window_is_dropped_and_still_confirmed(ch, name):
    q = name("q")
    ch.queue_declare(q, arguments={"x-deduplication-window": 5000})
    ch.confirm_delivery()
    for _ in range(3):  # each publish is confirmed (pika raises on a nack)
        ch.basic_publish("", q, b"order-1", pika.BasicProperties(message_id="order-1"))
    ch.basic_publish("", q, b"order-2", pika.BasicProperties(message_id="order-2"))
    assert wait_count(ch, q, 2) == 2


def test_the_same_message_id_after_the_window_is_accepted(ch, name):
    q = name("q")
    ch.queue_declare(q, arguments={"x-deduplication-window": 200})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"a", pika.BasicProperties(message_id="id"))
    ch.basic_publish("", q, b"a", pika.BasicProperties(message_id="id"))
    time.sleep(0.3)
    ch.basic_publish("", q, b"a", pika.BasicProperties(message_id="id"))
    assert wait_count(ch, q, 2) == 2


def test_messages_without_message_id_are_never_duplicates(ch, name):
    q = name("q")
    ch.queue_declare(q, arguments={"x-deduplication-window": 5000})
    ch.confirm_delivery()
    for _ in range(3):
        ch.basic_publish("", q, b"same body")
    assert wait_count(ch, q, 3) == 3
