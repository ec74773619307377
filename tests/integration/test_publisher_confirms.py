"""Publisher confirms and mandatory returns: every publish on a confirm channel is acked
exactly once (tags count from 1), an unroutable mandatory message comes back with
basic.return 312 NO_ROUTE before its ack."""
import pika
import pytest
from pika import exceptions, spec

from . import helpers
from .helpers import bodies, get_all, pump, temp_queue, unique, wait_depth, wait_until


def test_confirm_select_then_publish_is_acked(ch):
    q = temp_queue(ch)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"m")  # raises NackError/UnroutableError if not acked
    assert bodies(get_all(ch, q)) == [b"m"]


def test_unroutable_mandatory_message_is_returned_then_acked(ch):
    ch.confirm_delivery()
    with pytest.raises(exceptions.UnroutableError) as ei:  # pika raises it once the ack arrives
        ch.basic_publish("amq.direct", unique("nowhere"), b"lost", pika.BasicProperties(message_id="r1"),
                         mandatory=True)
    (ret,) = ei.value.messages
    assert (ret.method.reply_code, ret.method.reply_text, ret.method.exchange) == (312, "NO_ROUTE", "amq.direct")
    assert (ret.body, ret.properties.message_id) == (b"lost", "r1")
    assert ch.is_open


def test_unroutable_non_mandatory_message_is_simply_acked(ch):
    ch.confirm_delivery()
    ch.basic_publish("amq.direct", unique("nowhere"), b"dropped")
    assert ch.is_open


def test_mandatory_return_carries_reply_code_312_no_route_and_the_message(conn, ch):
    returned = []
    ch.add_on_return_callback(lambda _c, m, p, b: returned.append((m, p, b)))
    q = unique("nosuch")
    ch.basic_publish("", q, b"body", pika.BasicProperties(correlation_id="c-1", headers={"h": 1}), mandatory=True)
    assert wait_until(lambda: returned, conn)
    m, p, b = returned[0]
    assert isinstance(m, spec.Basic.Return)
    assert (m.reply_code, m.reply_text, m.exchange, m.routing_key) == (312, "NO_ROUTE", "", q)
    assert (b, p.correlation_id, p.headers) == (b"body", "c-1", {"h": 1})


def test_routable_mandatory_message_is_not_returned(conn, ch):
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    q = temp_queue(ch)
    ch.basic_publish("", q, b"ok", mandatory=True)
    pump(conn, 0.2)
    assert returned == []
    assert bodies(get_all(ch, q)) == [b"ok"]


def test_confirm_select_is_idempotent(ch):
    ch.confirm_delivery()
    ch._impl.confirm_delivery(lambda _frame: None)  # second confirm.select on the same channel
    ch.basic_qos(prefetch_count=0)
    assert ch.is_open


def _publish_pipelined_with_confirms(broker, queue, n, timeout=15.0):
    """Publish n messages back to back on a SelectConnection confirm channel and collect every
    basic.ack / basic.nack (tag, multiple) until all n tags are covered or the deadline."""
    state = {"acks": [], "nacks": [], "covered": set(), "dups": [], "timed_out": False, "error": None}

    def on_confirm(frame):
        m = frame.method
        tags = range(1, m.delivery_tag + 1) if m.multiple else [m.delivery_tag]
        tags = [t for t in tags if not (m.multiple and t in state["covered"])]
        for t in tags:
            if t in state["covered"]:
                state["dups"].append(t)
            state["covered"].add(t)
        (state["acks"] if isinstance(m, spec.Basic.Ack) else state["nacks"]).append((m.delivery_tag, m.multiple))
        if len(state["covered"]) >= n:
            conn.close()

    def on_select_ok(_frame):
        for i in range(n):
            state["channel"].basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2))

    def on_channel(channel):
        state["channel"] = channel
        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=on_select_ok)

    def on_timeout():
        state["timed_out"] = True
        conn.close()

    def on_open_error(_conn, err):
        state["error"] = err
        conn.ioloop.stop()

    conn = pika.SelectConnection(helpers.params(broker), on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                                 on_open_error_callback=on_open_error,
                                 on_close_callback=lambda _c, _r: conn.ioloop.stop())
    timer = conn.ioloop.call_later(timeout, on_timeout)
    conn.ioloop.start()
    conn.ioloop.remove_timeout(timer)
    assert state["error"] is None, state["error"]
    return state


def test_many_pipelined_messages_are_all_confirmed_exactly_once(broker, connect, cleanup):
    n = 2000
    q = cleanup.queue(unique("confirms"))
    c = connect()
    ch = c.channel()
    ch.queue_declare(q, durable=True)
    state = _publish_pipelined_with_confirms(broker, q, n)
    assert not state["timed_out"], f"only {len(state['covered'])} of {n} confirmed"
    assert state["nacks"] == []
    assert state["dups"] == []
    assert state["covered"] == set(range(1, n + 1))
    assert wait_depth(c, ch, q, n) == n


def test_confirm_tags_count_from_one_per_channel(conn):
    acks = {}
    chans = [conn.channel(), conn.channel()]
    q = temp_queue(chans[0])
    for i, c in enumerate(chans):
        acks[i] = []
        c._impl.confirm_delivery(lambda frame, i=i: acks[i].append(frame.method.delivery_tag))
        c.basic_qos(prefetch_count=0)  # wait for confirm.select-ok
    for _ in range(3):
        chans[0].basic_publish("", q, b"a")
    chans[1].basic_publish("", q, b"b")
    assert wait_until(lambda: acks[0] and max(acks[0]) == 3 and acks[1] == [1], conn)
    assert acks[1] == [1]


def test_publishes_before_confirm_select_are_not_counted(conn, ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"before")
    tags = []
    ch._impl.confirm_delivery(lambda frame: tags.append(frame.method.delivery_tag))
    ch.basic_qos(prefetch_count=0)
    ch.basic_publish("", q, b"after")
    assert wait_until(lambda: tags, conn)
    pump(conn, 0.1)
    assert tags == [1]
