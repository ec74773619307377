"""Headers exchange routing: x-match all (the default) and any, x- keys ignored for
matching, a void binding value matching any value, values compared regardless of field type."""
import pika
import pytest

from .helpers import channel_error, get_all, temp_queue, unique

CASES = [
    # (binding arguments, message headers, routed?)
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x", "extra": 2}, True),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1}, False),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "y"}, False),
    ({"a": 1, "b": "x"}, {"a": 1}, False),  # no x-match means all
    ({"a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
    ({"x-match": "any", "a": 1, "b": "x"}, {"a": 1}, True),
    ({"x-match": "any", "a": 1, "b": "x"}, {"b": "x", "c": 3}, True),
    ({"x-match": "any", "a": 1, "b": "x"}, {"a": 2, "c": 1}, False),
    ({"x-match": "any", "a": 1, "b": "x"}, None, False),
    ({"x-match": "all"}, {}, True),
    ({"x-match": "all"}, None, True),
    ({"x-match": "any"}, {"a": 1}, False),
    ({"x-match": "all", "a": 1}, {"a": "1"}, False),  # 1 and "1" are different values
    ({"x-match": "all", "a": None}, {"a": 5}, True),  # void binding value: key present
    ({"x-match": "all", "a": None}, {"b": 5}, False),
    ({"x-match": "all", "a": "s"}, {"a": b"s"}, True),  # longstr vs byte array: same value
    ({"x-match": "all", "a": True}, {"a": True}, True),
    ({"x-match": "all", "a": True}, {"a": False}, False),
    ({"x-match": "all", "x-foo": "bar"}, {}, True),  # x- keys take no part in matching
    ({"x-match": "any", "x-foo": "bar"}, {"x-foo": "bar"}, False),
]


@pytest.mark.parametrize("args,headers,routed", CASES, ids=[f"{a}~{h}" for a, h, _ in CASES])
def test_headers_binding_matches_message_headers(ch, cleanup, args, headers, routed):
    x = cleanup.exchange(unique("headers"))
    ch.exchange_declare(x, "headers")
    q = temp_queue(ch)
    ch.queue_bind(q, x, "", arguments=args)
    ch.basic_publish(x, "ignored", b"m", pika.BasicProperties(headers=headers))
    assert len(get_all(ch, q)) == (1 if routed else 0)


def test_headers_exchange_ignores_the_routing_key(ch, cleanup):
    x = cleanup.exchange(unique("headers"))
    ch.exchange_declare(x, "headers")
    q = temp_queue(ch)
    ch.queue_bind(q, x, "some-key", arguments={"x-match": "any", "kind": "order"})
    ch.basic_publish(x, "another-key", b"m", pika.BasicProperties(headers={"kind": "order"}))
    assert len(get_all(ch, q)) == 1


def test_headers_x_match_any_and_all_route_side_by_side(ch, cleanup):
    x = cleanup.exchange(unique("headers"))
    ch.exchange_declare(x, "headers")
    q_all, q_any = temp_queue(ch), temp_queue(ch)
    ch.queue_bind(q_all, x, "", arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(q_any, x, "", arguments={"x-match": "any", "format": "pdf", "type": "log"})
    ch.basic_publish(x, "", b"1", pika.BasicProperties(headers={"format": "pdf", "type": "report"}))
    ch.basic_publish(x, "", b"2", pika.BasicProperties(headers={"format": "zip", "type": "log"}))
    ch.basic_publish(x, "", b"3", pika.BasicProperties(headers={"format": "zip", "type": "report"}))
    assert [b for _m, _p, b in get_all(ch, q_all)] == [b"1"]
    assert [b for _m, _p, b in get_all(ch, q_any)] == [b"1", b"2"]


def test_headers_binding_with_invalid_x_match_is_refused_406(conn, ch, cleanup):
    x = cleanup.exchange(unique("headers"))
    ch.exchange_declare(x, "headers")
    q = temp_queue(ch)
    with channel_error(conn, 406, "PRECONDITION_FAILED - Invalid x-match field value <<\"bogus\">>; "
                                  "expected all, any, all-with-x, or any-with-x"):
        ch.queue_bind(q, x, "", arguments={"x-match": "bogus"})
