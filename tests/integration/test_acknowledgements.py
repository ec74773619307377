"""basic.get, ack, nack, reject, recover and what happens to unacknowledged messages when
their channel or connection goes away: a message leaves a queue only on acknowledgement,
and a requeued message goes back to its original place, marked redelivered."""
import pika

from .helpers import channel_error, connection_error, consume_n, get_all, temp_queue, unique, wait_until


def _publish(ch, q, n):
    for i in range(1, n + 1):
        ch.basic_publish("", q, f"m{i}".encode())


def _state(messages):
    return [(b.decode(), m.redelivered) for m, _p, b in messages]


def test_basic_get_reports_remaining_message_count(ch):
    q = temp_queue(ch)
    _publish(ch, q, 3)
    counts = []
    for _ in range(3):
        m, _p, _b = ch.basic_get(q, auto_ack=True)
        counts.append(m.message_count)
    assert counts == [2, 1, 0]


def test_basic_get_on_empty_queue_answers_get_empty(ch):
    q = temp_queue(ch)
    assert ch.basic_get(q) == (None, None, None)
    assert ch.is_open


def test_basic_get_ok_carries_exchange_routing_key_and_delivery_tags(ch):
    q = temp_queue(ch)
    ch.queue_bind(q, "amq.direct", "rk-" + q)
    ch.basic_publish("amq.direct", "rk-" + q, b"a")
    ch.basic_publish("", q, b"b")
    m1, _p, _b = ch.basic_get(q)
    m2, _p, _b = ch.basic_get(q)
    assert (m1.exchange, m1.routing_key, m1.redelivered, m1.delivery_tag) == ("amq.direct", "rk-" + q, False, 1)
    assert (m2.exchange, m2.routing_key, m2.delivery_tag) == ("", q, 2)


def test_acked_message_is_gone_for_good(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 1)
    m, _p, _b = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.close()
    assert get_all(conn.channel(), q) == []


def test_nack_without_requeue_drops_message(ch):
    q = temp_queue(ch)
    _publish(ch, q, 2)
    m, _p, _b = ch.basic_get(q)
    ch.basic_nack(m.delivery_tag, requeue=False)
    assert _state(get_all(ch, q)) == [("m2", False)]


def test_nack_with_requeue_puts_message_back_redelivered(ch):
    q = temp_queue(ch)
    _publish(ch, q, 2)
    m, _p, _b = ch.basic_get(q)
    ch.basic_nack(m.delivery_tag, requeue=True)
    assert _state(get_all(ch, q)) == [("m1", True), ("m2", False)]


def test_reject_without_requeue_drops_message(ch):
    q = temp_queue(ch)
    _publish(ch, q, 2)
    m, _p, _b = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert _state(get_all(ch, q)) == [("m2", False)]


def test_reject_with_requeue_puts_message_back_redelivered(ch):
    q = temp_queue(ch)
    _publish(ch, q, 1)
    m, _p, _b = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=True)
    assert _state(get_all(ch, q)) == [("m1", True)]


def test_requeued_messages_keep_their_original_place(ch):
    q = temp_queue(ch)
    _publish(ch, q, 5)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[2], requeue=True)  # m3 first, then m1: order follows the queue, not the nacks
    ch.basic_nack(tags[0], requeue=True)
    ch.basic_ack(tags[1])
    assert _state(get_all(ch, q)) == [("m1", True), ("m3", True), ("m4", False), ("m5", False)]


def test_requeued_message_goes_back_to_a_consumer_redelivered(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 1)
    first = consume_n(conn, ch, q, 1, auto_ack=False)
    ch.basic_nack(first[0][0].delivery_tag, requeue=True)
    again = consume_n(conn, ch, q, 1, auto_ack=False)
    assert _state(first) == [("m1", False)]
    assert _state(again) == [("m1", True)]
    assert again[0][0].delivery_tag > first[0][0].delivery_tag
    ch.basic_ack(again[0][0].delivery_tag)


def test_multiple_ack_acknowledges_every_tag_up_to_and_including(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 5)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(5)]
    ch.basic_ack(tags[2], multiple=True)
    ch.close()  # m4 and m5 were not acked: they come back
    assert _state(get_all(conn.channel(), q)) == [("m4", True), ("m5", True)]


def test_multiple_nack_with_requeue_returns_every_tag_up_to_and_including(ch):
    q = temp_queue(ch)
    _publish(ch, q, 5)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    ch.basic_nack(tags[2], multiple=True, requeue=True)
    ch.basic_ack(tags[3])
    assert _state(get_all(ch, q)) == [("m1", True), ("m2", True), ("m3", True), ("m5", False)]


def test_multiple_nack_without_requeue_drops_every_tag_up_to_and_including(ch):
    q = temp_queue(ch)
    _publish(ch, q, 4)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[1], multiple=True, requeue=False)
    ch.basic_nack(tags[2], requeue=True)
    assert _state(get_all(ch, q)) == [("m3", True), ("m4", False)]


def test_ack_with_delivery_tag_zero_and_multiple_acks_everything(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 3)
    for _ in range(3):
        ch.basic_get(q)
    ch.basic_ack(0, multiple=True)
    ch.close()
    assert get_all(conn.channel(), q) == []


def test_ack_with_unknown_delivery_tag_closes_channel_406(conn, ch):
    with channel_error(conn, 406, "PRECONDITION_FAILED - unknown delivery tag 99"):
        ch.basic_ack(99)
        ch.basic_qos(prefetch_count=0)


def test_double_ack_closes_channel_406(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 1)
    m, _p, _b = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    with channel_error(conn, 406, f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}"):
        ch.basic_ack(m.delivery_tag)
        ch.basic_qos(prefetch_count=0)


def test_ack_of_message_delivered_no_ack_closes_channel_406(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 1)
    m, _p, _b = ch.basic_get(q, auto_ack=True)
    with channel_error(conn, 406, f"PRECONDITION_FAILED - unknown delivery tag {m.delivery_tag}"):
        ch.basic_ack(m.delivery_tag)
        ch.basic_qos(prefetch_count=0)


def test_nack_and_reject_with_unknown_delivery_tag_close_channel_406(conn):
    for send in (lambda c: c.basic_nack(7), lambda c: c.basic_reject(7)):
        c = conn.channel()
        with channel_error(conn, 406, "PRECONDITION_FAILED - unknown delivery tag 7"):
            send(c)
            c.basic_qos(prefetch_count=0)


def test_delivery_tags_are_per_channel(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 2)
    other = conn.channel()
    assert ch.basic_get(q)[0].delivery_tag == 1
    assert other.basic_get(q)[0].delivery_tag == 1


def test_unacked_messages_are_requeued_in_order_when_channel_closes(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 4)
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=3)
    got = consume_n(conn, consumer, q, 3, auto_ack=False)
    assert _state(got) == [("m1", False), ("m2", False), ("m3", False)]
    consumer.basic_ack(got[1][0].delivery_tag)
    consumer.close()
    assert _state(get_all(ch, q)) == [("m1", True), ("m3", True), ("m4", False)]


def test_unacked_messages_are_requeued_when_connection_closes(connect, cleanup):
    q = cleanup.queue(unique("q"))
    owner = connect()
    och = owner.channel()
    och.queue_declare(q)
    _publish(och, q, 3)
    worker = connect()
    got = consume_n(worker, worker.channel(), q, 3, auto_ack=False)
    assert len(got) == 3
    worker.close()
    assert _state(get_all(och, q)) == [("m1", True), ("m2", True), ("m3", True)]


def test_unacked_messages_of_basic_get_are_requeued_when_channel_closes(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 2)
    getter = conn.channel()
    getter.basic_get(q)
    getter.close()
    assert _state(get_all(ch, q)) == [("m1", True), ("m2", False)]


def test_basic_recover_requeue_redelivers_unacked_messages(conn, ch):
    q = temp_queue(ch)
    _publish(ch, q, 2)
    got = []
    ch.basic_consume(q, lambda _c, m, _p, b: got.append((m, b)))
    assert wait_until(lambda: len(got) == 2, conn)
    ch.basic_recover(requeue=True)
    assert wait_until(lambda: len(got) == 4, conn)
    assert [(b, m.redelivered) for m, b in got] == [(b"m1", False), (b"m2", False), (b"m1", True), (b"m2", True)]
    ch.basic_ack(got[3][0].delivery_tag, multiple=True)


def test_basic_recover_requeues_unacked_basic_get_messages(ch):
    q = temp_queue(ch)
    _publish(ch, q, 2)
    ch.basic_get(q)
    ch.basic_recover(requeue=True)
    assert _state(get_all(ch, q)) == [("m1", True), ("m2", False)]


def test_basic_recover_without_requeue_closes_connection_540(conn, ch):
    with connection_error(conn, 540, "NOT_IMPLEMENTED - requeue=false"):
        ch.basic_recover(requeue=False)


def test_redelivered_message_keeps_body_and_properties(ch):
    q = temp_queue(ch)
    props = pika.BasicProperties(message_id="id-1", headers={"k": "v"}, content_type="text/plain")
    ch.basic_publish("", q, b"payload", props)
    m, _p, _b = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=True)
    m2, p2, b2 = ch.basic_get(q, auto_ack=True)
    assert (m2.redelivered, b2, p2.message_id, p2.headers, p2.content_type) == (
        True, b"payload", "id-1", {"k": "v"}, "text/plain")
