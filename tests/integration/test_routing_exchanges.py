"""Fanout, direct and default-exchange routing, exchange-to-exchange bindings, unbinding,
and the predefined amq.* exchanges."""
import pika
import pytest

from .helpers import bodies, get_all, temp_queue, unique


def test_fanout_delivers_a_copy_to_every_bound_queue(ch, cleanup):
    x = cleanup.exchange(unique("fanout"))
    ch.exchange_declare(x, "fanout")
    qs = [temp_queue(ch) for _ in range(4)]
    for i, q in enumerate(qs):
        ch.queue_bind(q, x, f"key-{i}")  # fanout ignores binding keys
    ch.basic_publish(x, "whatever", b"event")
    assert [bodies(get_all(ch, q)) for q in qs] == [[b"event"]] * 4


def test_fanout_with_no_bindings_drops_the_message(ch, cleanup):
    x = cleanup.exchange(unique("fanout"))
    ch.exchange_declare(x, "fanout")
    q = temp_queue(ch)
    ch.basic_publish(x, q, b"nobody")
    assert get_all(ch, q) == []


def test_direct_exchange_routes_by_exact_key_through_several_bindings(ch, cleanup):
    x = cleanup.exchange(unique("direct"))
    ch.exchange_declare(x, "direct")
    errors, all_levels = temp_queue(ch), temp_queue(ch)
    ch.queue_bind(errors, x, "error")
    for key in ("info", "warning", "error"):
        ch.queue_bind(all_levels, x, key)
    for key in ("info", "error", "debug", "warning", "Error"):
        ch.basic_publish(x, key, key.encode())
    assert bodies(get_all(ch, errors)) == [b"error"]
    assert bodies(get_all(ch, all_levels)) == [b"info", b"error", b"warning"]


def test_direct_exchange_same_key_bound_to_two_queues_delivers_to_both(ch, cleanup):
    x = cleanup.exchange(unique("direct"))
    ch.exchange_declare(x, "direct")
    q1, q2 = temp_queue(ch), temp_queue(ch)
    ch.queue_bind(q1, x, "k")
    ch.queue_bind(q2, x, "k")
    ch.basic_publish(x, "k", b"m")
    assert (bodies(get_all(ch, q1)), bodies(get_all(ch, q2))) == ([b"m"], [b"m"])


def test_direct_binding_twice_with_same_key_is_idempotent(ch, cleanup):
    x = cleanup.exchange(unique("direct"))
    ch.exchange_declare(x, "direct")
    q = temp_queue(ch)
    ch.queue_bind(q, x, "k")
    ch.queue_bind(q, x, "k")
    ch.basic_publish(x, "k", b"m")
    assert bodies(get_all(ch, q)) == [b"m"]
    ch.queue_unbind(q, x, "k")
    ch.basic_publish(x, "k", b"m")
    assert get_all(ch, q) == []


def test_default_exchange_routes_by_queue_name(ch):
    q1, q2 = temp_queue(ch), temp_queue(ch)
    ch.basic_publish("", q2, b"to-q2")
    ch.basic_publish("", q1, b"to-q1")
    msgs1, msgs2 = get_all(ch, q1), get_all(ch, q2)
    assert (bodies(msgs1), bodies(msgs2)) == ([b"to-q1"], [b"to-q2"])
    assert (msgs1[0][0].exchange, msgs1[0][0].routing_key) == ("", q1)


def test_default_exchange_with_unknown_queue_name_drops_the_message(ch):
    q = temp_queue(ch)
    ch.basic_publish("", q + "-missing", b"lost")
    assert get_all(ch, q) == []


def test_exchange_to_exchange_binding_forwards_matching_messages(ch, cleanup):
    src, dst = cleanup.exchange(unique("src")), cleanup.exchange(unique("dst"))
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(dst, "direct")
    q = temp_queue(ch)
    ch.queue_bind(q, dst, "orders.eu")
    ch.exchange_bind(destination=dst, source=src, routing_key="orders.*")
    ch.basic_publish(src, "orders.eu", b"routed")  # src matches orders.*, dst matches key
    ch.basic_publish(src, "orders.us", b"dst-drops")  # src matches, dst has no binding
    ch.basic_publish(src, "billing.eu", b"src-drops")
    msgs = get_all(ch, q)
    assert bodies(msgs) == [b"routed"]
    assert (msgs[0][0].exchange, msgs[0][0].routing_key) == (src, "orders.eu")


def test_exchange_to_exchange_chain_and_direct_queue_binding_give_one_copy(ch, cleanup):
    a, b = cleanup.exchange(unique("a")), cleanup.exchange(unique("b"))
    ch.exchange_declare(a, "fanout")
    ch.exchange_declare(b, "fanout")
    q = temp_queue(ch)
    ch.exchange_bind(destination=b, source=a)
    ch.queue_bind(q, a)
    ch.queue_bind(q, b)
    ch.basic_publish(a, "", b"m")
    assert bodies(get_all(ch, q)) == [b"m"]


def test_exchange_unbind_stops_forwarding(ch, cleanup):
    src, dst = cleanup.exchange(unique("src")), cleanup.exchange(unique("dst"))
    ch.exchange_declare(src, "direct")
    ch.exchange_declare(dst, "fanout")
    q = temp_queue(ch)
    ch.queue_bind(q, dst)
    ch.exchange_bind(destination=dst, source=src, routing_key="k")
    ch.basic_publish(src, "k", b"before")
    ch.exchange_unbind(destination=dst, source=src, routing_key="k")
    ch.basic_publish(src, "k", b"after")
    assert bodies(get_all(ch, q)) == [b"before"]


def test_queue_unbind_stops_routing_only_that_binding(ch, cleanup):
    x = cleanup.exchange(unique("direct"))
    ch.exchange_declare(x, "direct")
    q = temp_queue(ch)
    ch.queue_bind(q, x, "a")
    ch.queue_bind(q, x, "b")
    ch.queue_unbind(q, x, "a")
    ch.basic_publish(x, "a", b"a")
    ch.basic_publish(x, "b", b"b")
    assert bodies(get_all(ch, q)) == [b"b"]


def test_headers_queue_unbind_needs_the_same_arguments(ch, cleanup):
    x = cleanup.exchange(unique("headers"))
    ch.exchange_declare(x, "headers")
    q = temp_queue(ch)
    args = {"x-match": "any", "k": "v"}
    ch.queue_bind(q, x, "", arguments=args)
    ch.queue_unbind(q, x, "", arguments={"x-match": "any", "k": "other"})  # not that binding
    ch.basic_publish(x, "", b"still", pika.BasicProperties(headers={"k": "v"}))
    ch.queue_unbind(q, x, "", arguments=args)
    ch.basic_publish(x, "", b"gone", pika.BasicProperties(headers={"k": "v"}))
    assert bodies(get_all(ch, q)) == [b"still"]


def test_unbinding_a_binding_that_does_not_exist_succeeds(ch):
    # RabbitMQ answers unbind-ok even when the binding, the queue or the exchange is missing.
    q = temp_queue(ch)
    ch.queue_unbind(q, "amq.direct", "never-bound")
    ch.queue_unbind(q + "-missing", "amq.direct", "k")
    ch.queue_unbind(q, unique("missing-exchange"), "k")
    ch.exchange_unbind(destination="amq.fanout", source="amq.direct", routing_key="never-bound")
    ch.exchange_unbind(destination=unique("missing"), source="amq.direct", routing_key="k")
    assert ch.is_open


@pytest.mark.parametrize("name,kind", [
    ("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
    ("amq.headers", "headers"), ("amq.match", "headers"),
])
def test_predefined_amq_exchange_exists_durable_with_its_type(ch, name, kind):
    ch.exchange_declare(name, passive=True)
    ch.exchange_declare(name, kind, durable=True)  # equivalent redeclare is allowed


@pytest.mark.parametrize("name,key,headers", [
    ("amq.direct", "rk", None), ("amq.fanout", "ignored", None), ("amq.topic", "a.b.c", None),
    ("amq.headers", "", {"h": "v"}), ("amq.match", "", {"h": "v"}),
])
def test_predefined_amq_exchange_routes_by_its_type(ch, name, key, headers):
    q = temp_queue(ch)
    bind_key = {"amq.direct": "rk", "amq.fanout": "", "amq.topic": "a.#"}.get(name, "")
    args = {"x-match": "all", "h": "v"} if headers else None
    ch.queue_bind(q, name, bind_key, arguments=args)
    ch.basic_publish(name, key, b"m", pika.BasicProperties(headers=headers))
    ch.basic_publish(name, "zzz" if name != "amq.fanout" else key, b"other",
                     pika.BasicProperties(headers={"h": "no"} if headers else None))
    expected = [b"m", b"other"] if name == "amq.fanout" else [b"m"]
    assert bodies(get_all(ch, q)) == expected
