"""Dead-letter redrive (Ferry): a passive queue.declare of a dead-letter queue with
x-ferry-redrive = N moves up to N messages back to the queue named in their x-death,
properties and headers kept. (The management API and CLI will call the same function.)"""
import pika
import pytest

from helpers import get_all, wait_count

pytestmark = pytest.mark.ferry_only


def test_redrive_moves_dead_letters_back_to_their_queue_keeping_headers(ch, name):
    dlq, a, b = name("dlq"), name("a"), name("b")
    ch.queue_declare(dlq)
    for q in (a, b):
        ch.queue_declare(q, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    props = pika.BasicProperties(message_id="m1", headers={"tenant": "t1"}, content_type="text/plain")
    ch.basic_publish("", a, b"from-a", props)
    ch.basic_publish("", b, b"from-b")
    for q in (a, b):
        wait_count(ch, q, 1)
        m, _, _ = ch.basic_get(q)
        ch.basic_reject(m.delivery_tag, requeue=False)
    assert wait_count(ch, dlq, 2) == 2
    ok = ch.queue_declare(dlq, passive=True, arguments={"x-ferry-redrive": 10})
    assert ok.method.message_count == 0
    (_, p, body), = get_all(ch, a)
    assert body == b"from-a" and p.message_id == "m1" and p.content_type == "text/plain"
    assert p.headers["tenant"] == "t1" and p.headers["x-death"][0]["queue"] == a
    assert [x[2] for x in get_all(ch, b)] == [b"from-b"]


def test_redrive_moves_at_most_the_number_asked(ch, name):
    dlq, a = name("dlq"), name("a")
    ch.queue_declare(dlq)
    ch.queue_declare(a, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    for i in range(3):
        ch.basic_publish("", a, str(i).encode())
    wait_count(ch, a, 3)
    for _ in range(3):
        m, _, _ = ch.basic_get(a)
        ch.basic_reject(m.delivery_tag, requeue=False)
    wait_count(ch, dlq, 3)
    ok = ch.queue_declare(dlq, passive=True, arguments={"x-ferry-redrive": 2})
    assert ok.method.message_count == 1
    assert [x[2] for x in get_all(ch, a)] == [b"0", b"1"]
