"""basic.consume / basic.cancel: consumer tags, cancellation by the client and by the
broker (consumer_cancel_notify), exclusive consumers, no-ack consumers, priorities."""
import re

import pika
from pika import spec

from .helpers import (bodies, channel_error, connection_error, get_all, pump, rpc, send_method, temp_queue,
                      unique, wait_depth, wait_until)


def test_server_generates_amq_ctag_consumer_tag_when_none_given(conn, ch):
    # pika always invents its own tag, so ask with an empty tag directly.
    q = temp_queue(ch)
    raw1, raw2 = conn.channel(), conn.channel()  # raw RPCs get channels of their own
    ok = rpc(conn, raw1, spec.Basic.Consume(queue=q, consumer_tag="", no_ack=True), [spec.Basic.ConsumeOk])
    assert re.fullmatch(r"amq\.ctag-[A-Za-z0-9_-]{22}", ok.consumer_tag), ok.consumer_tag
    ok2 = rpc(conn, raw2, spec.Basic.Consume(queue=q, consumer_tag="", no_ack=True), [spec.Basic.ConsumeOk])
    assert ok2.consumer_tag != ok.consumer_tag
    assert ch.queue_declare(q, passive=True).method.consumer_count == 2


def test_client_chosen_consumer_tag_is_used_in_deliveries(conn, ch):
    q = temp_queue(ch)
    got = []
    tag = ch.basic_consume(q, lambda _c, m, _p, b: got.append(m), auto_ack=True, consumer_tag="my-tag")
    assert tag == "my-tag"
    ch.basic_publish("", q, b"m")
    assert wait_until(lambda: got, conn)
    assert (got[0].consumer_tag, got[0].exchange, got[0].routing_key, got[0].redelivered) == ("my-tag", "", q, False)


def test_reusing_a_consumer_tag_on_the_channel_closes_connection_530(conn, ch):
    # pika refuses a duplicate tag locally, so the second basic.consume is sent directly.
    q = temp_queue(ch)
    ch.basic_consume(q, lambda *a: None, consumer_tag="dup")
    with connection_error(conn, 530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"):
        send_method(ch, spec.Basic.Consume(queue=q, consumer_tag="dup"))
        pump(conn, 2)


def test_same_consumer_tag_on_two_channels_is_fine(conn, ch):
    q = temp_queue(ch)
    ch.basic_consume(q, lambda *a: None, consumer_tag="same")
    conn.channel().basic_consume(q, lambda *a: None, consumer_tag="same")
    assert ch.queue_declare(q, passive=True).method.consumer_count == 2


def test_basic_consume_on_missing_queue_fails_404(conn, ch):
    q = unique("missing")
    with channel_error(conn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'"):
        ch.basic_consume(q, lambda *a: None)


def test_basic_cancel_stops_deliveries_and_leaves_messages_queued(conn, ch):
    q = temp_queue(ch)
    got = []
    tag = ch.basic_consume(q, lambda _c, _m, _p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", q, b"before")
    assert wait_until(lambda: got, conn)
    ch.basic_cancel(tag)
    ch.basic_publish("", q, b"after")
    pump(conn, 0.2)
    assert got == [b"before"]
    assert ch.queue_declare(q, passive=True).method.consumer_count == 0
    assert bodies(get_all(ch, q)) == [b"after"]


def test_basic_cancel_answers_cancel_ok_with_the_tag(conn, ch):
    q = temp_queue(ch)
    ch.basic_consume(q, lambda *a: None, consumer_tag="to-cancel")
    ok = rpc(conn, ch, spec.Basic.Cancel(consumer_tag="to-cancel"), [spec.Basic.CancelOk])
    assert ok.consumer_tag == "to-cancel"


def test_basic_cancel_of_unknown_consumer_tag_answers_cancel_ok(conn, ch):
    ok = rpc(conn, ch, spec.Basic.Cancel(consumer_tag="never-consumed"), [spec.Basic.CancelOk])
    assert ok.consumer_tag == "never-consumed"
    assert ch.is_open


def test_cancelled_consumer_unacked_messages_stay_unacked_until_channel_closes(conn, ch):
    q = temp_queue(ch)
    ch.basic_publish("", q, b"m")
    c = conn.channel()
    got = []
    tag = c.basic_consume(q, lambda _c, m, _p, _b: got.append(m))
    assert wait_until(lambda: got, conn)
    c.basic_cancel(tag)
    assert get_all(ch, q) == []  # still held by the channel
    c.basic_ack(got[0].delivery_tag)  # and can still be acked after the cancel
    c.close()
    assert get_all(ch, q) == []


def test_deleting_the_queue_sends_consumer_cancel_notification(conn, ch):
    q = temp_queue(ch)
    consumer = conn.channel()
    cancels = []
    consumer.add_on_cancel_callback(lambda frame: cancels.append(frame.method))
    tag = consumer.basic_consume(q, lambda *a: None)
    ch.queue_delete(q)
    assert wait_until(lambda: cancels, conn)
    assert isinstance(cancels[0], spec.Basic.Cancel)
    assert cancels[0].consumer_tag == tag
    assert consumer.is_open  # a notification, not a channel error
    consumer.basic_qos(prefetch_count=1)


def test_server_advertises_consumer_cancel_notify_capability(conn):
    caps = conn._impl.server_capabilities
    assert caps.get("consumer_cancel_notify") is True
    assert caps.get("basic.nack") is True
    assert caps.get("publisher_confirms") is True
    assert caps.get("exchange_exchange_bindings") is True
    assert caps.get("per_consumer_qos") is True
    assert caps.get("direct_reply_to") is True
    assert caps.get("authentication_failure_close") is True


def test_second_consumer_on_queue_with_exclusive_consumer_is_refused_403(conn, ch):
    q = temp_queue(ch)
    ch.basic_consume(q, lambda *a: None, exclusive=True)
    other = conn.channel()
    with channel_error(conn, 403, f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"):
        other.basic_consume(q, lambda *a: None)
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1


def test_exclusive_consume_on_queue_with_consumers_is_refused_403(conn, ch):
    q = temp_queue(ch)
    ch.basic_consume(q, lambda *a: None)
    other = conn.channel()
    with channel_error(conn, 403, f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"):
        other.basic_consume(q, lambda *a: None, exclusive=True)


def test_exclusive_consumer_gone_lets_others_consume(conn, ch):
    q = temp_queue(ch)
    tag = ch.basic_consume(q, lambda *a: None, exclusive=True)
    ch.basic_cancel(tag)
    conn.channel().basic_consume(q, lambda *a: None)
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1


def test_no_ack_consumer_messages_are_not_requeued_on_close(conn, ch):
    q = temp_queue(ch)
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    c = conn.channel()
    got = []
    c.basic_consume(q, lambda _c, _m, _p, b: got.append(b), auto_ack=True)
    assert wait_until(lambda: len(got) == 3, conn)
    c.close()
    assert wait_depth(conn, ch, q, 0) == 0
    assert get_all(ch, q) == []


def test_consumer_with_higher_x_priority_gets_messages_first(conn, ch):
    q = temp_queue(ch)
    low, high = [], []
    c_low, c_high = conn.channel(), conn.channel()
    c_low.basic_consume(q, lambda _c, _m, _p, b: low.append(b), auto_ack=True, arguments={"x-priority": 1})
    c_high.basic_consume(q, lambda _c, _m, _p, b: high.append(b), auto_ack=True, arguments={"x-priority": 10})
    for i in range(6):
        ch.basic_publish("", q, str(i).encode())
    assert wait_until(lambda: len(low) + len(high) == 6, conn)
    assert (len(high), low) == (6, [])


def test_deliveries_to_one_consumer_keep_publish_order(conn, ch):
    q = temp_queue(ch)
    props = pika.BasicProperties(delivery_mode=1)
    for i in range(200):
        ch.basic_publish("", q, str(i).encode(), props)
    got = []
    ch.basic_consume(q, lambda _c, _m, _p, b: got.append(b), auto_ack=True)
    assert wait_until(lambda: len(got) == 200, conn)
    assert got == [str(i).encode() for i in range(200)]
