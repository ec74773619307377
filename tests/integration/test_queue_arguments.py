"""Queue x-arguments: x-message-ttl, x-expires, x-max-priority (and x-max-length) declare
fine, do what RabbitMQ does, and bad values are refused with RabbitMQ's exact texts."""
import pika
import pytest

from .helpers import bodies, channel_error, get_all, pump, temp_queue, unique


def test_queue_with_ttl_expires_and_max_priority_arguments_declares_fine(ch, cleanup):
    q = cleanup.queue(unique("args"))
    args = {"x-message-ttl": 60000, "x-expires": 600000, "x-max-priority": 10, "x-max-length": 100}
    ok = ch.queue_declare(q, arguments=args).method
    assert ok.queue == q
    assert ch.queue_declare(q, arguments=args).method.queue == q  # equivalent redeclare


def test_message_ttl_expires_messages_left_in_the_queue(conn, ch):
    q = temp_queue(ch, **{"x-message-ttl": 100})
    ch.basic_publish("", q, b"short-lived")
    pump(conn, 0.4)
    assert get_all(ch, q) == []


def test_message_ttl_leaves_fresh_messages(ch):
    q = temp_queue(ch, **{"x-message-ttl": 60000})
    ch.basic_publish("", q, b"fresh")
    assert bodies(get_all(ch, q)) == [b"fresh"]


def test_message_ttl_zero_drops_messages_no_consumer_can_take_now(ch):
    q = temp_queue(ch, **{"x-message-ttl": 0})
    ch.basic_publish("", q, b"m")
    assert get_all(ch, q) == []


def test_per_message_expiration_expires_the_message(conn, ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", q, b"long", pika.BasicProperties(expiration="600000"))
    pump(conn, 0.4)
    assert bodies(get_all(ch, q)) == [b"long"]


def test_queue_expires_is_deleted_after_being_unused(conn, ch):
    q = unique("expires")
    ch.queue_declare(q, arguments={"x-expires": 300})
    pump(conn, 1.0)  # no declare in between: a passive declare would renew the lease
    with channel_error(conn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        ch.queue_declare(q, passive=True)


def test_queue_expires_lease_is_renewed_by_declares(conn, ch, cleanup):
    q = cleanup.queue(unique("expires"))
    ch.queue_declare(q, arguments={"x-expires": 600})
    for _ in range(6):  # 1.2 s in all, never 600 ms without a declare
        pump(conn, 0.2)
        ch.queue_declare(q, passive=True)
    assert ch.queue_declare(q, passive=True).method.queue == q


def test_queue_expires_is_not_deleted_while_it_has_a_consumer(conn, ch, cleanup):
    q = cleanup.queue(unique("expires"))
    ch.queue_declare(q, arguments={"x-expires": 200})
    ch.basic_consume(q, lambda *a: None)
    pump(conn, 0.6)
    assert conn.channel().queue_declare(q, passive=True).method.consumer_count == 1


def test_max_priority_queue_delivers_higher_priority_first(ch):
    q = temp_queue(ch, **{"x-max-priority": 10})
    for pr in (1, 5, 3, None, 20, 10, 0):
        ch.basic_publish("", q, str(pr).encode(), pika.BasicProperties(priority=pr))
    # Above the maximum counts as the maximum; no priority counts as 0; FIFO within a priority.
    assert bodies(get_all(ch, q)) == [b"20", b"10", b"5", b"3", b"1", b"None", b"0"]


def test_queue_without_max_priority_ignores_message_priority(ch):
    q = temp_queue(ch)
    for pr in (1, 9, 5):
        ch.basic_publish("", q, str(pr).encode(), pika.BasicProperties(priority=pr))
    assert bodies(get_all(ch, q)) == [b"1", b"9", b"5"]


def test_max_length_drops_the_oldest_messages(ch):
    q = temp_queue(ch, **{"x-max-length": 2})
    for i in range(4):
        ch.basic_publish("", q, str(i).encode())
    assert bodies(get_all(ch, q)) == [b"2", b"3"]


@pytest.mark.parametrize("arg,value,reason", [
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-message-ttl", "abc", '"expected integer, got longstr"'),
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", -5, "{value_negative,-5}"),
    ("x-max-priority", -1, "{value_negative,-1}"),
    ("x-max-priority", 256, "{max_value_exceeded,256}"),
])
def test_invalid_queue_argument_is_refused_406(conn, ch, arg, value, reason):
    q = unique("badarg")
    with channel_error(conn, 406, f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '/': {reason}"):
        ch.queue_declare(q, exclusive=True, arguments={arg: value})


def test_max_priority_255_is_the_largest_accepted(ch):
    assert temp_queue(ch, **{"x-max-priority": 255})
