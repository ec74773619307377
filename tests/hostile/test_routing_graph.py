"""Exchange graphs of any depth (issue 8, item 3). Routing followed each
exchange-to-exchange binding and each alternate exchange by recursion, and deleting an
auto-delete exchange recursed into the auto-delete exchanges it emptied: a client could
overflow ferryd's stack with 20,000 declares. RabbitMQ routes e2e graphs with a work list
and a set of exchanges already seen (rabbit_exchange:route1): any depth, each queue gets a
message at most once, cycles terminate. Topologies are built with pipelined nowait methods
(pipeline.py) so that 20,000 exchanges take one write."""
import pika
import pytest
from pika import exceptions

import pipeline as p
from hostile_lib import still_serves

DEPTH = 20000


def name(prefix, i):
    return f"{prefix}-{i:05d}"


def build(c, frames, chunk=4000):
    for i in range(0, len(frames), chunk):
        c.send(b"".join(frames[i:i + chunk]))
    p.sync(c)


def assert_exchange_gone(connect, x):
    ch = connect().channel()
    with pytest.raises(exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(x, passive=True)
    assert e.value.reply_code == 404


def test_publish_through_a_chain_of_20000_fanout_exchanges(ferryd):
    c = p.open_conn(ferryd)
    frames = [p.exchange_declare(name("chain", i)) for i in range(DEPTH)]
    frames += [p.exchange_bind(name("chain", i + 1), name("chain", i)) for i in range(DEPTH - 1)]
    frames += [p.queue_declare("end"), p.queue_bind("end", name("chain", DEPTH - 1))]
    build(c, frames)
    c.send(p.publish(name("chain", 0), "", b"deep"))
    assert p.get(c, "end") == b"deep"
    assert p.get(c, "end") is None  # exactly once
    c.close()
    assert still_serves(ferryd)


def test_cycles_and_diamonds_deliver_once_per_queue_and_terminate(ferryd, connect):
    ch = connect().channel()
    for x in ("cy-a", "cy-b", "cy-c", "cy-d"):
        ch.exchange_declare(x, "fanout")
        ch.queue_declare(f"q-{x}")
        ch.queue_bind(f"q-{x}", x)
    # a -> b -> c -> a (a cycle), a -> d and c -> d (a diamond), d -> d (a self-loop)
    for src, dst in (("cy-a", "cy-b"), ("cy-b", "cy-c"), ("cy-c", "cy-a"), ("cy-a", "cy-d"),
                     ("cy-c", "cy-d"), ("cy-d", "cy-d")):
        ch.exchange_bind(dst, src)
    for start in ("cy-a", "cy-b", "cy-c", "cy-d"):
        ch.basic_publish(start, "", start.encode())
    counts = {x: ch.queue_declare(f"q-{x}", passive=True).method.message_count
              for x in ("cy-a", "cy-b", "cy-c", "cy-d")}
    # From a, b or c the whole cycle and d are reached; from d only d.
    assert counts == {"cy-a": 3, "cy-b": 3, "cy-c": 3, "cy-d": 4}
    assert still_serves(ferryd)


def test_publish_through_20000_alternate_exchanges(ferryd):
    c = p.open_conn(ferryd)
    frames = [p.exchange_declare(name("ae", i), "direct", arguments={"alternate-exchange": name("ae", i + 1)})
              for i in range(DEPTH)]
    frames += [p.queue_declare("unroutable"), p.queue_bind("unroutable", name("ae", DEPTH - 1), "nothing-else")]
    build(c, frames)
    c.send(p.publish(name("ae", 0), "nothing-else", b"via 19999 alternates"))
    assert p.get(c, "unroutable") == b"via 19999 alternates"
    c.close()
    assert still_serves(ferryd)


def auto_delete_chain(c, prefix, end_frames):
    frames = [p.exchange_declare(name(prefix, i), auto_delete=True) for i in range(DEPTH)]
    frames += [p.exchange_bind(name(prefix, i + 1), name(prefix, i)) for i in range(DEPTH - 1)]
    build(c, frames + end_frames)


def test_queue_delete_cascades_through_20000_auto_delete_exchanges(ferryd, connect):
    c = p.open_conn(ferryd)
    auto_delete_chain(c, "ad", [p.queue_declare("ad-end"), p.queue_bind("ad-end", name("ad", DEPTH - 1))])
    c.send(p.publish(name("ad", 0), "", b"x"))
    assert p.get(c, "ad-end") == b"x"
    c.send(p.queue_delete("ad-end"))  # the last binding of the last exchange goes: all of them go
    p.sync(c)
    c.close()
    assert_exchange_gone(connect, name("ad", 0))
    assert_exchange_gone(connect, name("ad", DEPTH // 2))
    assert still_serves(ferryd)


def test_exchange_unbind_cascades_through_20000_auto_delete_exchanges(ferryd, connect):
    c = p.open_conn(ferryd)
    auto_delete_chain(c, "adu", [p.exchange_declare("adu-end"), p.exchange_bind("adu-end", name("adu", DEPTH - 1))])
    c.send(p.exchange_unbind("adu-end", name("adu", DEPTH - 1)))
    p.sync(c)
    c.close()
    assert_exchange_gone(connect, name("adu", 0))
    ch = connect().channel()
    ch.exchange_declare("adu-end", passive=True)  # not auto-delete: it stays
    assert still_serves(ferryd)


def test_alternate_exchange_only_when_no_binding_matched(ferryd, connect):
    """As RabbitMQ (rabbit_exchange:process_alternate, checked against RabbitMQ 3.x): a
    binding to an exchange that routes nowhere still counts as a match, so the message does
    not go to the alternate exchange; a key no binding matches does."""
    ch = connect().channel()
    ch.exchange_declare("ae", "fanout")
    ch.queue_declare("ae-q")
    ch.queue_bind("ae-q", "ae")
    ch.exchange_declare("dead-end", "fanout")
    ch.exchange_declare("with-ae", "direct", arguments={"alternate-exchange": "ae"})
    ch.exchange_bind("dead-end", "with-ae", "k")
    ch.basic_publish("with-ae", "k", b"matched-e2e")
    ch.basic_publish("with-ae", "other", b"unmatched")
    got = []
    while (r := ch.basic_get("ae-q", auto_ack=True))[0]:
        got.append(r[2])
    assert got == [b"unmatched"]
