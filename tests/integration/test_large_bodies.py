"""Large bodies reach consumers byte for byte (issue 14, row 13). ferryd writes bodies of
16 KiB and more from the shared message itself (writev of the framing and slices of the
body) instead of copying them into each connection's output buffer; smaller bodies, small
frame_max connections and TLS still copy. These tests deliver bodies around every boundary
of that path (the 16 KiB threshold, the 131,064-byte body frame, several frames) through
basic.consume, basic.get, fanout and basic.return, each body different so a slice of the
wrong message or at the wrong offset cannot pass; the same tests run against RabbitMQ."""
import os

import pika

from .helpers import consume_n, get_all, temp_queue, unique, wait_until

BODY_PER_FRAME = 131072 - 8
SIZES = [16383, 16384, 16385, BODY_PER_FRAME - 1, BODY_PER_FRAME, BODY_PER_FRAME + 1,
         3 * BODY_PER_FRAME + 5, (1 << 20) + 7]


def bodies(sizes):
    return [os.urandom(s) for s in sizes]


def test_large_bodies_interleaved_with_small_ones_arrive_in_order_and_intact(conn, ch):
    q = temp_queue(ch)
    sent = []
    for b in bodies(SIZES):
        sent += [b, b"small-%d" % len(sent)]
    for b in sent:
        ch.basic_publish("", q, b)
    got = consume_n(conn, ch, q, len(sent), timeout=15)
    assert [len(b) for _m, _p, b in got] == [len(b) for b in sent]
    assert [b for _m, _p, b in got] == sent


def test_a_large_body_fanned_out_reaches_every_queue_intact(conn, ch, cleanup):
    x = cleanup.exchange(unique("fan-large"))
    ch.exchange_declare(x, "fanout", auto_delete=False)
    qs = [temp_queue(ch) for _ in range(4)]
    for q in qs:
        ch.queue_bind(q, x)
    sent = bodies([200_001, 1 << 20, 65536])
    for b in sent:
        ch.basic_publish(x, "", b)
    for q in qs[:3]:
        assert [b for _m, _p, b in consume_n(conn, ch, q, 3, timeout=15)] == sent
    assert [b for _m, _p, b in get_all(ch, qs[3])] == sent


def test_a_large_unroutable_mandatory_message_is_returned_intact(conn, ch):
    returned = []
    ch.add_on_return_callback(lambda _ch, _m, _p, body: returned.append(body))
    body = os.urandom(300_000)
    ch.basic_publish("", unique("nowhere"), body, mandatory=True)
    assert wait_until(lambda: returned, conn, timeout=10)
    assert returned == [body]


def test_large_bodies_to_a_small_frame_max_client_arrive_intact(connect):
    conn = connect(frame_max=4096)
    ch = conn.channel()
    q = temp_queue(ch)
    sent = bodies([16384, 100_000])
    for b in sent:
        ch.basic_publish("", q, b)
    assert [b for _m, _p, b in consume_n(conn, ch, q, 2, timeout=15)] == sent


def test_a_large_body_requeued_and_delivered_again_is_intact(conn, ch):
    q = temp_queue(ch)
    body = os.urandom(500_000)
    ch.basic_publish("", q, body)
    (m, _p, first), = consume_n(conn, ch, q, 1, auto_ack=False, timeout=10)
    assert first == body
    ch.basic_nack(m.delivery_tag, requeue=True)
    (m2, _p, again), = consume_n(conn, ch, q, 1, timeout=10)
    assert again == body and m2.redelivered
