"""Durable definitions: exchanges, queues and bindings declared durable are still there
after a restart (clean or kill -9) with their arguments, and their bindings still route;
transient ones are gone; exclusive queues die with their connection even if durable;
deletions and unbindings are remembered too."""
import pika
import pytest
from pika import exceptions

from . import helpers
from .helpers import connect


def exists(d, kind, name):
    """True if a passive declare of the exchange or queue succeeds, False on 404."""
    conn = connect(d)
    try:
        ch = conn.channel()
        try:
            if kind == "exchange":
                ch.exchange_declare(name, passive=True)
            else:
                ch.queue_declare(name, passive=True)
            return True
        except exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, f"passive declare of {kind} {name}: {e}"
            return False
    finally:
        if conn.is_open:
            conn.close()


def routed(d, exchange, routing_key, headers=None):
    """Publish one transient message and return the sorted names of the queues it reached
    (among the test's queues), by getting it back from each of them."""
    conn = connect(d)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, routing_key, b"probe", pika.BasicProperties(headers=headers))
        got = []
        for q in QUEUES:
            m = ch.basic_get(q, auto_ack=True)
            if m[0] is not None:
                got.append(q)
        return got
    finally:
        conn.close()


QUEUES = ["q-direct", "q-topic", "q-headers", "q-fanout", "q-e2e"]


def declare_topology(d):
    conn = connect(d)
    ch = conn.channel()
    ch.exchange_declare("x-direct", "direct", durable=True)
    ch.exchange_declare("x-topic", "topic", durable=True)
    ch.exchange_declare("x-headers", "headers", durable=True)
    ch.exchange_declare("x-fanout", "fanout", durable=True, auto_delete=False)
    ch.exchange_declare("x-e2e", "direct", durable=True)
    ch.queue_declare("q-direct", durable=True, arguments={"x-max-length": 1000})
    ch.queue_declare("q-topic", durable=True, arguments={"x-message-ttl": 3600000})
    ch.queue_declare("q-headers", durable=True, arguments={"x-dead-letter-exchange": "x-fanout"})
    ch.queue_declare("q-fanout", durable=True)
    ch.queue_declare("q-e2e", durable=True)
    ch.queue_bind("q-direct", "x-direct", "k1")
    ch.queue_bind("q-topic", "x-topic", "orders.*.created")
    ch.queue_bind("q-headers", "x-headers", "", arguments={"x-match": "all", "kind": "invoice"})
    ch.queue_bind("q-fanout", "x-fanout")
    ch.exchange_bind("x-e2e", "x-direct", "k2")  # destination, source
    ch.queue_bind("q-e2e", "x-e2e", "k2")
    conn.close()


def test_durable_exchanges_queues_and_bindings_survive_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare_topology(d)
    d = restart(d)
    for x in ["x-direct", "x-topic", "x-headers", "x-fanout", "x-e2e"]:
        assert exists(d, "exchange", x), f"durable exchange {x} lost on {restart.how} restart"
    for q in QUEUES:
        assert exists(d, "queue", q), f"durable queue {q} lost on {restart.how} restart"


def test_bindings_still_route_after_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare_topology(d)
    d = restart(d)
    assert routed(d, "x-direct", "k1") == ["q-direct"]
    assert routed(d, "x-direct", "k2") == ["q-e2e"], "exchange-to-exchange binding lost"
    assert routed(d, "x-topic", "orders.eu.created") == ["q-topic"]
    assert routed(d, "x-topic", "orders.eu.deleted") == []
    assert routed(d, "x-headers", "", {"kind": "invoice"}) == ["q-headers"]
    assert routed(d, "x-headers", "", {"kind": "receipt"}) == []
    assert routed(d, "x-fanout", "anything") == ["q-fanout"]


def test_durable_definitions_keep_their_type_and_arguments_after_restart(ferryd_factory, tmp_path):
    """Re-declaring with the same type and arguments is fine; with different ones it is
    406 PRECONDITION_FAILED, as before the restart: the arguments were stored, not dropped."""
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare_topology(d)
    d.stop()
    d = helpers.start(ferryd_factory, d.data_dir)
    assert exists(d, "exchange", "x-topic") and exists(d, "queue", "q-direct"), "definitions lost on restart"
    conn = connect(d)
    ch = conn.channel()
    ch.exchange_declare("x-topic", "topic", durable=True)
    ch.queue_declare("q-direct", durable=True, arguments={"x-max-length": 1000})
    ch.queue_declare("q-topic", durable=True, arguments={"x-message-ttl": 3600000})
    ch.queue_declare("q-headers", durable=True, arguments={"x-dead-letter-exchange": "x-fanout"})
    with pytest.raises(exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare("x-topic", "direct", durable=True)
    assert e.value.reply_code == 406
    ch = conn.channel()
    with pytest.raises(exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("q-direct", durable=True, arguments={"x-max-length": 5})
    assert e.value.reply_code == 406
    ch = conn.channel()
    with pytest.raises(exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("q-topic", durable=False)
    assert e.value.reply_code == 406
    conn.close()


def test_transient_exchanges_and_queues_are_gone_after_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    ch = conn.channel()
    ch.exchange_declare("x-durable", "direct", durable=True)
    ch.exchange_declare("x-transient", "direct", durable=False)
    ch.queue_declare("q-durable", durable=True)
    ch.queue_declare("q-transient", durable=False)
    ch.queue_bind("q-durable", "x-durable", "k")
    ch.queue_bind("q-transient", "x-durable", "k")  # a durable exchange, a transient queue
    ch.queue_bind("q-durable", "x-transient", "k")  # a transient exchange, a durable queue
    conn.close()
    d = restart(d)
    assert exists(d, "exchange", "x-durable")
    assert exists(d, "queue", "q-durable")
    assert not exists(d, "exchange", "x-transient"), f"transient exchange survived a {restart.how} restart"
    assert not exists(d, "queue", "q-transient"), f"transient queue survived a {restart.how} restart"
    conn = connect(d)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("x-durable", "k", b"m")
    assert ch.basic_get("q-durable", auto_ack=True)[0] is not None
    conn.close()


def test_exclusive_durable_queue_is_gone_after_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    ch = conn.channel()
    ch.queue_declare("q-exclusive", durable=True, exclusive=True)
    ch.confirm_delivery()
    ch.basic_publish("", "q-exclusive", b"m", helpers.PERSISTENT)
    # The connection stays open across a kill -9: the queue must not outlive its owner.
    d = restart(d)
    assert not exists(d, "queue", "q-exclusive"), f"exclusive queue survived a {restart.how} restart"
    # ...and its name is free for a new, non-exclusive queue with no old messages in it.
    c2 = connect(d)
    ch2 = c2.channel()
    assert ch2.queue_declare("q-exclusive", durable=True).method.message_count == 0
    c2.close()
    try:
        conn.close()
    except Exception:
        pass


def test_exclusive_durable_queue_dies_with_its_connection(ferryd_factory, tmp_path):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    conn.channel().queue_declare("q-exclusive", durable=True, exclusive=True)
    conn.close()
    assert not exists(d, "queue", "q-exclusive")
    d.stop()
    d = helpers.start(ferryd_factory, d.data_dir)
    assert not exists(d, "queue", "q-exclusive")


def test_deleted_durable_queue_and_exchange_stay_deleted_after_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    conn = connect(d)
    ch = conn.channel()
    ch.exchange_declare("x-gone", "fanout", durable=True)
    ch.queue_declare("q-gone", durable=True)
    ch.queue_declare("q-kept", durable=True)
    ch.queue_bind("q-gone", "x-gone")
    ch.confirm_delivery()
    ch.basic_publish("", "q-gone", b"m", helpers.PERSISTENT)
    ch.queue_delete("q-gone")
    ch.exchange_delete("x-gone")
    conn.close()
    d = restart(d)
    assert not exists(d, "queue", "q-gone")
    assert not exists(d, "exchange", "x-gone")
    assert exists(d, "queue", "q-kept")
    # A queue re-declared under the old name starts empty: the old messages went with it.
    conn = connect(d)
    assert conn.channel().queue_declare("q-gone", durable=True).method.message_count == 0
    conn.close()


def test_unbinding_is_remembered_after_restart(ferryd_factory, tmp_path, restart):
    d = helpers.start(ferryd_factory, str(tmp_path / "data"))
    declare_topology(d)
    conn = connect(d)
    ch = conn.channel()
    ch.queue_unbind("q-direct", "x-direct", "k1")
    ch.exchange_unbind("x-e2e", "x-direct", "k2")
    conn.close()
    d = restart(d)
    assert routed(d, "x-direct", "k1") == []
    assert routed(d, "x-direct", "k2") == []
    assert routed(d, "x-topic", "orders.us.created") == ["q-topic"]


def test_definitions_survive_many_restarts(ferryd_factory, tmp_path):
    """The definitions log is replayed and appended to again on every start: ten restarts,
    each adding a queue and deleting the one before it, leave exactly the last queue."""
    data = str(tmp_path / "data")
    for i in range(10):
        d = helpers.start(ferryd_factory, data)
        if i:
            assert exists(d, "queue", f"q-gen{i - 1}"), f"queue of start {i - 1} lost at start {i}"
        conn = connect(d)
        ch = conn.channel()
        ch.queue_declare(f"q-gen{i}", durable=True)
        if i:
            ch.queue_delete(f"q-gen{i - 1}")
        conn.close()
        if i % 2:
            d.kill9()
        else:
            assert d.stop() == 0
    d = helpers.start(ferryd_factory, data)
    assert exists(d, "queue", "q-gen9")
    assert not any(exists(d, "queue", f"q-gen{i}") for i in range(9))
