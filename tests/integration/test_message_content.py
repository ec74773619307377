"""Message content passes through unchanged: bodies of every size (empty, one frame, many
frames, 10 MiB) and every basic property, including header tables of every field type pika
can encode."""
import datetime
import decimal

import pika
import pika.compat
import pytest

from .helpers import consume_n, get_all, temp_queue

FRAME_MAX = 131072
BODY_PER_FRAME = FRAME_MAX - 8  # frame header (7) + frame end (1)


def _pattern(size):
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


@pytest.mark.parametrize("size", [0, 1, BODY_PER_FRAME - 1, BODY_PER_FRAME, BODY_PER_FRAME + 1,
                                  3 * BODY_PER_FRAME, 1 << 20, 10 << 20],
                         ids=lambda s: f"{s}B")
def test_body_of_any_size_round_trips_through_basic_get(ch, size):
    q = temp_queue(ch)
    body = _pattern(size)
    ch.basic_publish("", q, body)
    (m, _p, got), = get_all(ch, q)
    assert len(got) == size
    assert got == body


@pytest.mark.parametrize("size", [0, 1 << 20, 10 << 20], ids=lambda s: f"{s}B")
def test_body_of_any_size_round_trips_through_a_consumer(conn, ch, size):
    q = temp_queue(ch)
    body = _pattern(size)[::-1]
    ch.basic_publish("", q, body)
    ch.basic_publish("", q, b"next")  # the frames after a big body are parsed right too
    got = consume_n(conn, ch, q, 2, timeout=15)
    assert [b for _m, _p, b in got] == [body, b"next"]


def test_empty_body_keeps_its_properties(ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"", pika.BasicProperties(content_type="text/plain", message_id="empty"))
    (m, p, b), = get_all(ch, q)
    assert (b, p.content_type, p.message_id) == (b"", "text/plain", "empty")


def test_message_without_properties_arrives_without_properties(ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"bare")
    (_m, p, _b), = get_all(ch, q)
    assert vars(p) == vars(pika.BasicProperties())


HEADERS = {
    "longstr": "text",
    "unicode": "héllo ✓ 日本",
    "empty-string": "",
    "int": 42,
    "negative": -7,
    "int32-min": -(2 ** 31),
    "long": 2 ** 40,
    # (a negative 64-bit value cannot be tested: pika decodes 'l' as unsigned)
    "true": True,
    "false": False,
    "void": None,
    "decimal": decimal.Decimal("3.14"),
    "decimal-int": decimal.Decimal("100"),
    "timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5),
    "bytes": b"\x00\x01\xfe\xff",
    "table": {"nested": {"deeper": {"deepest": [1, "two", {"three": 3}]}}},
    "array": [1, "s", True, None, [2, [3]], {"k": "v"}, b"\x00", decimal.Decimal("1.5")],
    "empty-array": [],
    "empty-table": {},
    "x-custom": "x- headers are ordinary headers for a direct publish",
}


def test_all_basic_properties_round_trip(ch):
    q = temp_queue(ch)
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="gzip", headers=HEADERS, delivery_mode=2,
        priority=7, correlation_id="corr-1", reply_to="reply-queue", expiration="60000",
        message_id="msg-1", timestamp=1700000000, type="order.created", user_id="guest", app_id="app-1",
        cluster_id="cluster-1")
    ch.basic_publish("", q, b"{}", props)
    (_m, p, b), = get_all(ch, q)
    assert b == b"{}"
    for name in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
                 "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"):
        assert getattr(p, name) == getattr(props, name), name
    assert p.headers == HEADERS


def _decoded_type(value):
    """The Python type pika decodes `value` to when its field type came back unchanged:
    pika sends ints outside int32 as 'l' and decodes 'l' to its own int subclass."""
    if type(value) is int and not -(2 ** 31) <= value < 2 ** 31:
        return pika.compat.long
    return type(value)


@pytest.mark.parametrize("name,value", sorted(HEADERS.items()))
def test_header_field_value_round_trips_with_its_type(ch, name, value):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m", pika.BasicProperties(headers={name: value}))
    (_m, p, _b), = get_all(ch, q)
    got = p.headers[name]
    assert got == value
    assert type(got) is _decoded_type(value)


def test_properties_survive_routing_through_exchanges_and_consumers(conn, ch):
    q = temp_queue(ch)
    ch.queue_bind(q, "amq.topic", "a.#")
    props = pika.BasicProperties(headers={"t": {"a": [1, 2]}}, priority=3, message_id="m", timestamp=1)
    ch.basic_publish("amq.topic", "a.b", b"routed", props)
    (_m, p, b), = consume_n(conn, ch, q, 1)
    assert (b, p.headers, p.priority, p.message_id, p.timestamp) == (b"routed", {"t": {"a": [1, 2]}}, 3, "m", 1)


def test_persistent_and_transient_delivery_modes_are_kept(ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"p", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", q, b"t", pika.BasicProperties(delivery_mode=1))
    assert [p.delivery_mode for _m, p, _b in get_all(ch, q)] == [2, 1]
