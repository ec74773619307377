"""x-consistent-hash: routing by a hash of the routing key, a header or a property, with
binding keys as weights. Which queue a key lands in is checked against RabbitMQ's plugin
by the differential test; here, the properties any client relies on."""
import collections

import pika
import pika.exceptions as px
import pytest

from helpers import get_all


def declare_topology(ch, name, weights, **xargs):
    x = name("chx")
    ch.exchange_declare(x, "x-consistent-hash", arguments=xargs or None)
    qs = []
    for i, w in enumerate(weights):
        q = name(f"p{i}")
        ch.queue_declare(q)
        ch.queue_bind(q, x, str(w))
        qs.append(q)
    return x, qs


def cleanup(ch, x, qs):
    for q in qs:
        ch.queue_delete(q)
    ch.exchange_delete(x)


def where(ch, qs):
    """queue index per body."""
    out = {}
    for i, q in enumerate(qs):
        for _, _, b in get_all(ch, q):
            out.setdefault(b.decode(), set()).add(i)
    return out


def test_every_message_with_the_same_routing_key_lands_in_the_same_queue(ch, name):
    x, qs = declare_topology(ch, name, [1, 1, 1, 1])
    ch.confirm_delivery()
    for n in range(5):
        for k in range(40):
            ch.basic_publish(x, f"entity-{k}", f"entity-{k}".encode())
    placed = {}
    for i, q in enumerate(qs):
        for _, _, b in get_all(ch, q):
            placed.setdefault(b.decode(), []).append(i)
    assert len(placed) == 40
    assert all(len(v) == 5 and len(set(v)) == 1 for v in placed.values())
    assert len({v[0] for v in placed.values()}) > 1  # spread over partitions
    cleanup(ch, x, qs)


def test_binding_weights_skew_the_distribution(ch, name):
    x, qs = declare_topology(ch, name, [1, 3])
    ch.confirm_delivery()
    for k in range(2000):
        ch.basic_publish(x, str(k), b"")
    light, heavy = (ch.queue_declare(q, passive=True).method.message_count for q in qs)
    assert light + heavy == 2000
    assert 2.0 < heavy / light < 4.5
    cleanup(ch, x, qs)


def test_hash_header_routes_by_that_header_not_the_routing_key(ch, name):
    x, qs = declare_topology(ch, name, [1, 1, 1], **{"hash-header": "entity"})
    ch.confirm_delivery()
    for k in range(30):
        for rk in ("a", "b", "c"):
            ch.basic_publish(x, rk, f"e{k}".encode(), pika.BasicProperties(headers={"entity": f"e{k}"}))
    placed = where(ch, qs)
    assert len(placed) == 30 and all(len(v) == 1 for v in placed.values())
    cleanup(ch, x, qs)


def test_hash_property_message_id_routes_by_message_id(ch, name):
    x, qs = declare_topology(ch, name, [1, 1, 1], **{"hash-property": "message_id"})
    ch.confirm_delivery()
    for k in range(30):
        for rk in ("a", "b"):
            ch.basic_publish(x, rk, f"m{k}".encode(), pika.BasicProperties(message_id=f"m{k}"))
    placed = where(ch, qs)
    assert len(placed) == 30 and all(len(v) == 1 for v in placed.values())
    cleanup(ch, x, qs)


def test_non_integer_binding_key_is_refused(ch, name):
    x = name("chx")
    ch.exchange_declare(x, "x-consistent-hash")
    q = name("q")
    ch.queue_declare(q)
    with pytest.raises(px.ChannelClosedByBroker) as e:
        ch.queue_bind(q, x, "heavy")
    assert e.value.reply_code == 406
    assert "The binding key must be an integer" in e.value.reply_text


def test_hash_header_and_hash_property_together_are_refused(ch, name):
    with pytest.raises(px.ChannelClosedByBroker) as e:
        ch.exchange_declare(name("chx"), "x-consistent-hash",
                            arguments={"hash-header": "a", "hash-property": "message_id"})
    assert e.value.reply_code == 406
    assert "mutually exclusive" in e.value.reply_text
